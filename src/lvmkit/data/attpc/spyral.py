"""Reading AT-TPC events from Spyral point-cloud HDF5 files, real or simulated.

Layout (the Spyral analysis, ``spyral/phases/pointcloud_phase.py`` and
``spyral/core/point_cloud.py``, and attpc-engine 0.9's ``SpyralWriter`` in
``attpc_engine/detector/writer.py`` write the same thing)::

    /cloud                          group; attrs min_event, max_event (ints, inclusive range)
    /cloud/cloud_<event>            float64 (N, 8) dataset, one row per point:
                                    x, y (mm, pad centre), z (mm, from the drift time),
                                    amplitude (ADC, <= 4095), integral (ADC), pad id,
                                    time (GET time bucket), pad scale
        attrs                       ic_amplitude, ic_integral, ic_centroid, ic_multiplicity
                                    (-1 when no ion-chamber data), and from attpc-engine also
                                    orig_run, orig_event
    /cloud/labels_<event>           attpc-engine only: int (N,) index of the nucleus that made
                                    each point (2 ejectile, 3 residual; lvmkit uses -1 for noise)

Event numbers in ``[min_event, max_event]`` may be missing (Spyral and attpc-engine skip
events with no signal); the reader counts them and moves on. Files written by
:func:`lvmkit.attpc.simulate` add one integer attribute ``label`` to each ``cloud_<event>``
dataset (0 proton, 1 carbon, 2 other; :data:`CLASS_NAMES`) and ``class_names`` to
``/cloud``; Spyral itself ignores attributes it does not know, and files without labels
read the same, with ``label = None``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from lvmkit.core.errors import DataError

CLASS_NAMES = ("proton", "carbon", "other")
LABEL_ATTR = "label"
CLOUD_GROUP = "cloud"
COLUMNS = ("x", "y", "z", "amplitude", "integral", "pad", "time", "scale")
CHARGE_COLUMNS = {"amplitude": 3, "integral": 4}
# Radius of the AT-TPC Micromegas pad plane (10,240 pads; Bradt et al., NIM A 875 (2017) 65).
# The pad centres of attpc-engine's bundled geometry reach 274.2 mm.
PAD_PLANE_RADIUS_MM = 275.0
# Why an event is skipped. "missing" and "too_few_points" are not errors: they never stop
# a strict read.
BAD_REASONS = ("malformed", "empty", "non_finite", "outside_pad_plane")

_CLOUD_NAME = re.compile(r"cloud_(-?\d+)$")


@dataclass
class SpyralEvent:
    """One event: ``points`` is float64 (N, 4) with columns x, y, z (mm) and charge."""

    event_id: int
    points: np.ndarray
    label: Optional[int] = None


class SpyralReader:
    """Iterate over the good events of one Spyral point-cloud file; see :func:`read_spyral`.

    ``skipped`` counts events by reason as an iteration goes (a :class:`collections.Counter`
    over ``"missing"``, ``"too_few_points"`` and :data:`BAD_REASONS`); ``n_read`` counts the
    events yielded.
    """

    def __init__(self, path: Path | str, min_points: int = 1, strict: bool = False,
                 charge: str = "amplitude") -> None:
        if charge not in CHARGE_COLUMNS:
            raise DataError(f"Unknown charge column {charge!r}; choose one of: {', '.join(CHARGE_COLUMNS)}.")
        if min_points < 1:
            raise DataError(f"min_points must be at least 1, got {min_points}; pass e.g. min_points=50.")
        self.path = Path(path)
        self.min_points = int(min_points)
        self.strict = strict
        self.charge = charge
        self.skipped: Counter = Counter()
        self.n_read = 0
        self._check_file()

    def _check_file(self) -> None:
        import h5py

        p = self.path
        if not p.is_file():
            raise DataError(f"Spyral point-cloud file {str(p)!r} does not exist; check the path.")
        if not h5py.is_hdf5(p):
            raise DataError(f"{str(p)!r} is not an HDF5 file; give a Spyral point-cloud file (run_NNNN.h5 "
                            "from Spyral's PointcloudPhase or attpc-engine's SpyralWriter).")
        with h5py.File(p, "r") as f:
            group = f.get(CLOUD_GROUP)
            if not isinstance(group, h5py.Group):
                raise DataError(f"{str(p)!r} has no '{CLOUD_GROUP}' group (it has {sorted(f.keys())}), so it is "
                                "not a Spyral point-cloud file; give the output of Spyral's PointcloudPhase "
                                "or of attpc-engine's SpyralWriter.")

    def _event_ids(self, group) -> Sequence[int]:
        # Spyral's phases iterate range(min_event, max_event + 1); a file whose writer was not
        # closed has no range attributes, so fall back on the dataset names.
        try:
            lo, hi = int(group.attrs["min_event"]), int(group.attrs["max_event"])
        except (KeyError, TypeError, ValueError):
            return sorted(int(m.group(1)) for m in map(_CLOUD_NAME.match, group.keys()) if m)
        return range(lo, hi + 1)

    def _bad(self, reason: str, event_id: int, detail: str) -> None:
        if self.strict:
            raise DataError(f"Event {event_id} of {str(self.path)!r} {detail}; fix or drop the event, or read "
                            "without strict (convert without --strict) to skip and count such events.")
        self.skipped[reason] += 1

    def __iter__(self) -> Iterator[SpyralEvent]:
        import h5py

        column = CHARGE_COLUMNS[self.charge]
        self.skipped, self.n_read = Counter(), 0  # a second pass counts afresh
        with h5py.File(self.path, "r") as f:
            group = f[CLOUD_GROUP]
            for event_id in self._event_ids(group):
                ds = group.get(f"cloud_{event_id}")
                if not isinstance(ds, h5py.Dataset):
                    self.skipped["missing"] += 1
                    continue
                if ds.ndim != 2 or ds.shape[1] <= column or not np.issubdtype(ds.dtype, np.number):
                    self._bad("malformed", event_id, f"has shape {ds.shape} and dtype {ds.dtype}; expected a "
                              f"numeric (N, 8) point cloud with the {self.charge} in column {column}")
                    continue
                if ds.shape[0] == 0:
                    self._bad("empty", event_id, "has no points")
                    continue
                raw = ds[()]
                points = np.asarray(raw[:, [0, 1, 2, column]], dtype=np.float64)
                finite = np.isfinite(points).all(axis=1)
                if not finite.all():
                    self._bad("non_finite", event_id, f"has {int((~finite).sum())} points with NaN or infinite "
                              "x, y, z or charge")
                    continue
                r = np.hypot(points[:, 0], points[:, 1])
                if (r > PAD_PLANE_RADIUS_MM).any():
                    self._bad("outside_pad_plane", event_id, f"has {int((r > PAD_PLANE_RADIUS_MM).sum())} points "
                              f"outside the {PAD_PLANE_RADIUS_MM:g} mm pad plane (largest radius {r.max():.1f} mm)")
                    continue
                if len(points) < self.min_points:
                    self.skipped["too_few_points"] += 1
                    continue
                label = ds.attrs.get(LABEL_ATTR)
                self.n_read += 1
                yield SpyralEvent(event_id, points, None if label is None else int(label))


def read_spyral(path: Path | str, min_points: int = 1, strict: bool = False,
                charge: str = "amplitude") -> SpyralReader:
    """Open a Spyral point-cloud file for reading, event by event.

    Args:
        path: an HDF5 file with a ``cloud`` group (layout in this module's docstring).
        min_points: events with fewer points are skipped and counted as ``too_few_points``
            (the thesis kept events with at least 50 points).
        strict: raise :class:`~lvmkit.errors.DataError` on the first bad event (malformed,
            empty, NaN/infinite values, a point outside the pad plane) instead of skipping it.
        charge: the charge column, ``"amplitude"`` (peak height in ADC) or ``"integral"``.

    Returns:
        A :class:`SpyralReader`: iterate it for :class:`SpyralEvent` objects; its
        ``skipped`` counter says how many events were passed over and why.

    Raises:
        DataError: the file is missing, is not HDF5, or has no ``cloud`` group; with
            ``strict``, on the first bad event.
    """
    return SpyralReader(path, min_points=min_points, strict=strict, charge=charge)
