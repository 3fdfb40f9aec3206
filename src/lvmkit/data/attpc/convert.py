"""Stream Spyral point-cloud files into one compressed HDF5 training set.

Output layout (``data.name = "attpc"`` reads it)::

    x          float32 (N, C, bins, bins) images in [0, 1], one channel per plane; or uint8
               with attr x_scale = 1/255; or, for projection "points", float32 (N, n_max, 4)
    mask       bool (N, n_max), only for projection "points"
    y          int64 (N,) labels, -1 where unknown; absent when no event has a label
    event_id   int64 (N,) event number inside its source file
    source     int32 (N,) index into the attribute ``sources``
    attrs      class_names, projection, planes, bins, charge, intensity, align, charge_scale, min_points,
               sources, n_events, skipped_<reason> for every reason counted

Events are read, projected and written ``chunk`` at a time into resizable, chunked, gzip
datasets, so memory does not grow with the number of events. With ``scale="global"`` a first
pass over the inputs measures the largest ``log1p(charge)`` (the thesis's normalisation,
see :mod:`lvmkit.attpc.project`; with ``intensity="linear"`` the largest charge); the second
pass writes.
"""
from __future__ import annotations

import csv
import os
import time
from collections import Counter
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from lvmkit.core.errors import DataError
from lvmkit.data.attpc.project import DRIFT_LENGTH_MM, PLANES, align_azimuth, charge_value, point_set, project
from lvmkit.data.attpc.spyral import CLASS_NAMES, PAD_PLANE_RADIUS_MM, SpyralReader

# Letters of the thesis's hand labels (runs 0130 and 0210: p proton, c carbon, j junk).
_LABEL_NAMES = {**{n: i for i, n in enumerate(CLASS_NAMES)}, "p": 0, "c": 1, "j": 2, "junk": 2}
_EVENT_COLUMNS = ("event", "event_id", "evt_id")
_GZIP_LEVEL = 4
_CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB


def read_labels(path: Path | str) -> dict[int, int]:
    """Read hand labels from a CSV file with a header naming an event column
    (``event``, ``event_id`` or ``evt_id``) and a ``label`` column; labels are class indices
    or names (``proton``, ``carbon``, ``other``, or the thesis's letters ``p``, ``c``, ``j``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Label file {str(p)!r} does not exist; check the path.")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        event_col = next((c for c in _EVENT_COLUMNS if c in fields), None)
        if event_col is None or "label" not in fields:
            raise DataError(f"Label file {str(p)!r} has columns {fields}; it needs 'label' and one of "
                            f"{', '.join(_EVENT_COLUMNS)}.")
        out = {}
        for line, row in enumerate(reader, start=2):
            value = row["label"].strip().lower()
            try:
                label = _LABEL_NAMES[value] if value in _LABEL_NAMES else int(value)
                out[int(row[event_col])] = label
            except ValueError:
                raise DataError(f"Line {line} of {str(p)!r} has event {row[event_col]!r} and label "
                                f"{row['label']!r}; expected an integer event number and a label in "
                                f"{', '.join(CLASS_NAMES)} or 0-{len(CLASS_NAMES) - 1}.") from None
    return out


def _planes(projection: Union[str, Sequence[str]]) -> list[str]:
    names = projection.split(",") if isinstance(projection, str) else list(projection)
    names = [n.strip() for n in names]
    valid = [*PLANES, "points"]
    bad = [n for n in names if n not in valid]
    if not names or bad or ("points" in names and len(names) > 1) or len(set(names)) != len(names):
        raise DataError(f"Invalid projection {projection!r}; give one or more distinct planes of "
                        f"{', '.join(PLANES)} separated by commas (e.g. 'xy' or 'xy,xz,yz'), or 'points'.")
    return names


def _readers(inputs: Sequence[Path], min_points: int, strict: bool, charge: str) -> list[SpyralReader]:
    return [SpyralReader(p, min_points=min_points, strict=strict, charge=charge) for p in inputs]


def _global_scale(inputs: Sequence[Path], min_points: int, strict: bool, charge: str, intensity: str) -> float:
    top = 0.0
    for reader in _readers(inputs, min_points, strict, charge):
        for event in reader:
            top = max(top, float(charge_value(event.points[:, 3], intensity).max()))
    return top


class _Sink:
    """Appends rows to resizable datasets, one buffered chunk at a time."""

    def __init__(self, f, specs: dict[str, tuple[tuple[int, ...], np.dtype]], chunk: int) -> None:
        self.f, self.chunk, self.n, self.fill = f, chunk, 0, 0
        self.buf = {name: np.zeros((chunk, *shape), dtype) for name, (shape, dtype) in specs.items()}
        for name, (shape, dtype) in specs.items():
            row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
            rows = int(max(1, min(chunk, _CHUNK_BYTES // row_bytes))) if shape else None
            f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(rows, *shape) if rows else True, compression="gzip",
                             compression_opts=_GZIP_LEVEL, shuffle=True)

    def add(self, **row) -> None:
        for name, value in row.items():
            self.buf[name][self.fill] = value
        self.fill += 1
        if self.fill == self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        for name, buf in self.buf.items():
            ds = self.f[name]
            ds.resize(self.n + self.fill, axis=0)
            ds[self.n : self.n + self.fill] = buf[: self.fill]
        self.n += self.fill
        self.fill = 0


def convert(inputs: Sequence[Path | str], out: Path | str, projection: Union[str, Sequence[str]] = "xy", *,
            bins: int = 128, n_max: int = 1024, min_points: int = 50, strict: bool = False,
            labels: Optional[Union[Mapping[int, int], Path, str]] = None, scale: Union[str, float] = "global",
            charge: str = "amplitude", intensity: str = "log1p", align: str = "none", dtype: str = "float32",
            chunk: int = 64) -> dict:
    """Convert Spyral point-cloud files into one HDF5 training set (layout in the module docstring).

    Args:
        inputs: Spyral point-cloud files (real runs or :func:`lvmkit.attpc.simulate` output).
        out: the HDF5 file to write; it appears only when the conversion succeeds.
        projection: ``"xy"`` (the thesis's view), ``"xz"``, ``"yz"``, several joined by commas
            (one image channel each), or ``"points"`` for the fixed-size point set.
        bins: image side in pixels. n_max: points kept per event for ``"points"``.
        min_points: events with fewer points are skipped (the thesis used 50).
        strict: stop at the first bad event instead of skipping and counting it.
        labels: event number -> class index, or a CSV file for :func:`read_labels`; where it
            has an event, it overrides the label stored in the file (the same event number in
            two input files gets the same label).
        scale: ``"global"`` (divide ``intensity(charge)`` by its maximum over all inputs, measured
            in a first pass), ``"event"`` (each event's own maximum) or a number (e.g. the
            ``charge_scale`` attribute of a training set, to convert test data alike).
        charge: ``"amplitude"`` or ``"integral"`` column as the charge.
        intensity: ``"log1p"`` (the thesis) or ``"linear"`` map of the charge, before scaling.
        align: ``"none"`` or ``"azimuth"``: rotate each event about the beam axis so that its
            charge-weighted mean lies on +x (:func:`~lvmkit.attpc.project.align_azimuth`).
        dtype: ``"float32"`` or ``"uint8"`` (images times 255, rounded) for images.
        chunk: events buffered in memory between writes.

    Returns:
        Statistics: ``events`` written, ``labelled``, ``per_class``, ``skipped`` by reason,
        ``charge_scale``, ``seconds`` and ``events_per_second``.

    Raises:
        DataError: an input is missing or not a Spyral point-cloud file, an argument is
            invalid, no event passes the filters, or (with ``strict``) an event is bad.
    """
    import h5py

    start = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise DataError("No input files were given; pass one or more Spyral point-cloud files.")
    planes = _planes(projection)
    if dtype not in ("float32", "uint8"):
        raise DataError(f"Unknown image dtype {dtype!r}; choose float32 or uint8.")
    if chunk < 1 or bins < 1 or n_max < 1:
        raise DataError(f"chunk, bins and n_max must be positive integers; got {chunk}, {bins} and {n_max}.")
    if isinstance(scale, str) and scale not in ("global", "event"):
        raise DataError(f"Unknown charge scale {scale!r}; choose 'global', 'event' or a positive number.")
    if not isinstance(scale, str) and not (np.isfinite(scale) and scale > 0):
        raise DataError(f"The charge scale must be a positive number, got {scale}.")
    charge_value(np.zeros(1), intensity)  # an unknown intensity fails here, before any work
    if align not in ("none", "azimuth"):
        raise DataError(f"Unknown alignment {align!r}; choose 'none' or 'azimuth'.")
    label_map = read_labels(labels) if isinstance(labels, (str, Path)) else labels
    readers = _readers(inputs, min_points, strict, charge)  # checks every file before any work
    if scale == "global":
        divisor: Optional[float] = _global_scale(inputs, min_points, strict, charge, intensity) or None
    else:
        divisor = None if scale == "event" else float(scale)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    counts: Counter = Counter()
    per_class: Counter = Counter()
    try:
        with h5py.File(partial, "w") as f:
            if planes == ["points"]:
                specs = {"x": ((n_max, 4), np.float32), "mask": ((n_max,), np.bool_)}
            else:
                specs = {"x": ((len(planes), bins, bins), np.dtype(dtype))}
            specs.update({"y": ((), np.int64), "event_id": ((), np.int64), "source": ((), np.int32)})
            sink = _Sink(f, specs, chunk)
            for index, reader in enumerate(readers):
                for event in reader:
                    label = event.label if label_map is None else label_map.get(event.event_id, event.label)
                    if label is not None and not 0 <= label < len(CLASS_NAMES):
                        raise DataError(f"Event {event.event_id} of {str(reader.path)!r} has label {label}; "
                                        f"expected 0-{len(CLASS_NAMES) - 1} ({', '.join(CLASS_NAMES)}).")
                    row = {"y": -1 if label is None else label, "event_id": event.event_id, "source": index}
                    points = align_azimuth(event.points) if align == "azimuth" else event.points
                    if planes == ["points"]:
                        row["x"], row["mask"] = point_set(points, n_max, divisor, intensity)
                    else:
                        img = np.stack([project(points, p, bins, divisor, intensity) for p in planes])
                        row["x"] = np.rint(img * 255) if dtype == "uint8" else img
                    sink.add(**row)
                    if label is not None:
                        per_class[CLASS_NAMES[label]] += 1
                counts.update(reader.skipped)
            sink.flush()
            if sink.n == 0:
                raise DataError(f"No event of the {len(inputs)} input file(s) passed the filters (skipped: "
                                f"{dict(counts) or 'none'}); lower min_points or check the inputs.")
            labelled = sum(per_class.values())
            if labelled == 0:
                del f["y"]
            f.attrs.update({
                "class_names": list(CLASS_NAMES), "projection": ",".join(planes), "bins": bins,
                "extent_mm": [PAD_PLANE_RADIUS_MM, DRIFT_LENGTH_MM], "charge": charge, "intensity": intensity, "align": align,
                "charge_scale": "event" if divisor is None else divisor, "min_points": min_points,
                "sources": [str(p) for p in inputs], "n_events": sink.n,
                **{f"skipped_{k}": v for k, v in sorted(counts.items())},
            })
            if dtype == "uint8" and planes != ["points"]:
                f["x"].attrs["x_scale"] = 1.0 / 255.0
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return {"output": str(out), "events": sink.n, "labelled": labelled, "per_class": dict(per_class),
            "skipped": dict(counts), "charge_scale": divisor, "seconds": seconds,
            "events_per_second": sink.n / seconds if seconds > 0 else float("inf")}
