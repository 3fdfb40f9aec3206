"""``data.name = "ising"``: configurations written by ``lvmkit simulate ising``.

Spins +-1 become {0, 1} floats (binary models read them as they are; data.scale is fixed to
"none"); the label of a configuration is the index of its temperature among the file's sorted
temperatures (class names "T=2.269"), and ``Dataset.info["temperatures"]`` lists them, so
probes and clusterers see the temperatures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lvmkit.core.config import DataConfig
from lvmkit.core.errors import DataError
from lvmkit.data import SOURCES, RawData
from lvmkit.data.ising.observables import check_spins


def read_ising(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(spins (n, L, L) int8 of +-1, temperature (n,)) of a file written by ``lvmkit simulate
    ising``; one-sentence DataErrors for a missing, unreadable or malformed file."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise DataError(f"Ising file {str(p)!r} does not exist; make it with 'lvmkit simulate ising --out DIR'.")
    try:
        with h5py.File(p, "r") as f:
            if "spins" not in f or "temperature" not in f:
                raise DataError(f"{str(p)!r} is not an Ising file (it has {sorted(f.keys())}, not spins and temperature); "
                                "write it with 'lvmkit simulate ising'.")
            spins, temps = f["spins"][()], f["temperature"][()]
    except OSError as err:
        raise DataError(f"{str(p)!r} is not a readable HDF5 file ({err}); check data.path.") from None
    if spins.ndim != 3 or spins.shape[1] != spins.shape[2]:
        raise DataError(f"Spins in {str(p)!r} have shape {spins.shape}; expected (n, L, L) square lattices.")
    if temps.shape != (len(spins),):
        raise DataError(f"{str(p)!r} has {temps.shape} temperatures for {len(spins)} configurations; expected one each.")
    return check_spins(spins, repr(str(p))), temps.astype(np.float64)


@SOURCES.register("ising")
def ising_source(cfg: DataConfig) -> RawData:
    if not cfg.path:
        raise DataError("data.name = 'ising' needs data.path, a file written by 'lvmkit simulate ising'; set it with --set data.path=FILE.h5.")
    spins, temps = read_ising(cfg.path)
    values = np.unique(temps)
    y = np.searchsorted(values, temps)
    x = ((spins.astype(np.float32) + 1.0) / 2.0)  # (n, L, L) in {0, 1}
    return RawData(x, y, origin=str(cfg.path), class_names=[f"T={t:.4g}" for t in values],
                   info={"temperatures": [float(t) for t in values], "display": "lattices"}, scale="none")


def write_ising(path: str | Path, spins, temperature) -> Path:
    """Write configurations (n, L, L) of +-1 and their temperatures (n,) as a file the source
    reads (atomically: a temporary file renamed over ``path``)."""
    import os

    import h5py

    s = check_spins(spins, "the configurations to write")
    t = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (len(s),))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("spins", data=s, compression="gzip", compression_opts=4)
            f.create_dataset("temperature", data=t)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
