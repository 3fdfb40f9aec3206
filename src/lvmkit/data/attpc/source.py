"""``data.name = "attpc"``: the HDF5 sets written by :func:`lvmkit.attpc.convert`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lvmkit.core.config import DataConfig
from lvmkit.data import SOURCES, RawData, stream
from lvmkit.data.stream import DiskArray
from lvmkit.core.errors import DataError


@SOURCES.register("attpc")
def attpc_source(cfg: DataConfig) -> RawData:
    """Images (N, C, 128, 128) and labels of a converted set; unknown labels (-1) make the set
    unlabelled, since probes and cluster metrics need every label."""
    import h5py

    if not cfg.path:
        raise DataError("data.name = 'attpc' needs data.path, a file written by 'lvmkit convert attpc'; set it with --set data.path=FILE.h5.")
    p = Path(cfg.path)
    if not p.is_file():
        raise DataError(f"AT-TPC set {str(p)!r} does not exist; make it with 'lvmkit simulate attpc' and 'lvmkit convert attpc'.")
    try:
        with h5py.File(p, "r") as f:
            if "x" not in f or f.attrs.get("projection") is None:
                raise DataError(f"{str(p)!r} is not an AT-TPC set written by 'lvmkit convert attpc' (no x or projection); convert the Spyral files first.")
            if f.attrs["projection"] == "points":
                raise DataError(f"{str(p)!r} holds point sets, which no image model reads; convert with --projection xy.")
            x = DiskArray.hdf5(p, "x") if stream.wanted(cfg, f["x"].shape) else f["x"][()]
            y = f["y"][()] if "y" in f else None
            names = [str(n) for n in f.attrs.get("class_names", [])] or None
    except OSError as err:
        raise DataError(f"{str(p)!r} is not a readable HDF5 file ({err}); check data.path.") from None
    if y is not None and (y < 0).any():
        y = None
    return RawData(x, y, origin=str(p), class_names=names, info={"display": "events"})
