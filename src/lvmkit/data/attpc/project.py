"""Fixed-size representations of an AT-TPC event: projections to images and a point set.

The thesis (Solli 2019, section 4.4) views each event as its x-y projection, a 128 x 128
image over the +-275 mm pad plane whose pixel intensity is the charge. Its code
(ATTPC/VAE-event-classification, ``src/make_clean_images.py``) takes ``log1p`` of the charge
and divides by the largest ``log1p(charge)`` over all events of a run, so brightness stays
comparable between events (carbon recoils are brighter than protons). Here ``scale`` is that
divisor: a float fixes it (what :func:`lvmkit.attpc.convert` does, after measuring it over
the inputs), ``None`` uses the event's own maximum (each image then peaks at 1).

Pixel convention: ``image[i, j]`` covers the i-th bin of the second coordinate (y for
``"xy"``, z for ``"xz"`` and ``"yz"``) and the j-th bin of the first, both counted from
the low edge, so ``imshow(image, origin="lower")`` draws it the physicist's way up. A pixel
hit by several points keeps the largest value (as drawing the points one over another does),
which keeps every pixel in [0, 1].
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from lvmkit.core.errors import DataError
from lvmkit.data.attpc.spyral import PAD_PLANE_RADIUS_MM

# Drift length of the AT-TPC active volume (about 1 m); z of a calibrated point cloud is
# measured from the beam window (Spyral ``calibrate_z_position``).
DRIFT_LENGTH_MM = 1000.0
PLANES = {"xy": (0, 1), "xz": (0, 2), "yz": (1, 2)}


def _extent(axis: int) -> tuple[float, float]:
    return (0.0, DRIFT_LENGTH_MM) if axis == 2 else (-PAD_PLANE_RADIUS_MM, PAD_PLANE_RADIUS_MM)


def _bin(coord: np.ndarray, axis: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _extent(axis)
    inside = (coord >= lo) & (coord <= hi)
    index = np.floor((coord - lo) / (hi - lo) * bins).clip(0, bins - 1).astype(np.intp)
    return index, inside


def _check_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 4:
        raise DataError(f"Points have shape {points.shape}; expected (N, 4) with columns x, y, z, charge.")
    if not np.isfinite(points[:, :4]).all():
        raise DataError("Points hold NaN or infinite values; drop those points (read_spyral skips such events).")
    return points


#: ``intensity`` -> the map of a (non-negative) charge before it is divided by the scale: the
#: thesis's ``log1p``, or ``linear``, which keeps brightness ratios (carbon recoils deposit far
#: more charge per pad than protons; log1p squeezes that difference).
INTENSITIES = {"log1p": np.log1p, "linear": lambda q: q}


def charge_value(charge: np.ndarray, intensity: str = "log1p") -> np.ndarray:
    """The intensity map of ``max(charge, 0)`` (float64), before scaling."""
    if intensity not in INTENSITIES:
        raise DataError(f"Unknown intensity {intensity!r}; choose one of: {', '.join(INTENSITIES)}.")
    return INTENSITIES[intensity](np.maximum(np.asarray(charge, dtype=np.float64), 0.0))


def scale_charge(charge: np.ndarray, scale: Optional[float], intensity: str = "log1p") -> np.ndarray:
    """``intensity(max(charge, 0)) / scale`` clipped to [0, 1]; ``scale=None``: the largest value."""
    q = charge_value(charge, intensity)
    s = q.max(initial=0.0) if scale is None else float(scale)
    if s <= 0:
        return np.zeros_like(q)
    return np.clip(q / s, 0.0, 1.0)


def log_charge(charge: np.ndarray, scale: Optional[float]) -> np.ndarray:
    """``log1p(max(charge, 0)) / scale`` clipped to [0, 1]; ``scale=None``: the maximum of ``log1p``."""
    return scale_charge(charge, scale, "log1p")


def align_azimuth(points: np.ndarray) -> np.ndarray:
    """Rotate an event about the beam axis (x = y = 0) so that its charge-weighted mean
    position in x-y lies on the +x axis; z, charge and further columns are kept.

    The detector is symmetric under such rotations (the field is along the beam), so the
    azimuth of an event says nothing about its class; aligning removes it from the images
    and leaves the models' codes to track length, curvature and brightness. An event whose
    weighted mean sits on the axis is returned unchanged.
    """
    points = _check_points(points)
    out = np.array(points, dtype=np.float64, copy=True)
    if len(out) == 0:
        return out
    w = np.maximum(out[:, 3], 0.0)
    if w.sum() <= 0:
        w = np.ones(len(out))
    mx, my = np.average(out[:, 0], weights=w), np.average(out[:, 1], weights=w)
    if np.hypot(mx, my) < 1e-6:  # mm: no direction to align to
        return out
    phi = np.arctan2(my, mx)
    c, s = np.cos(phi), np.sin(phi)
    x, y = out[:, 0].copy(), out[:, 1].copy()
    out[:, 0], out[:, 1] = c * x + s * y, -s * x + c * y
    return out


def project(points: np.ndarray, plane: str = "xy", bins: int = 128, scale: Optional[float] = None,
            intensity: str = "log1p") -> np.ndarray:
    """Project an event onto a plane as a (bins, bins) float32 image in [0, 1].

    Args:
        points: (N, 4) array with columns x, y, z (mm) and charge, as in
            :class:`~lvmkit.attpc.SpyralEvent`.
        plane: ``"xy"`` (over +-275 mm on both axes), ``"xz"`` or ``"yz"`` (z over 0-1000 mm).
        bins: pixels per side.
        scale: divisor of ``intensity(charge)``; None for the event's own maximum.
        intensity: ``"log1p"`` (the thesis) or ``"linear"``, see :data:`INTENSITIES`.

    Points outside the plane's extent are left out; the upper edge belongs to the last bin.
    """
    if plane not in PLANES:
        raise DataError(f"Unknown projection {plane!r}; choose one of: {', '.join(PLANES)}.")
    if bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins}.")
    points = _check_points(points)
    image = np.zeros((bins, bins), dtype=np.float32)
    if len(points) == 0:
        return image
    value = scale_charge(points[:, 3], scale, intensity).astype(np.float32)
    axis_j, axis_i = PLANES[plane]
    j, in_j = _bin(points[:, axis_j], axis_j, bins)
    i, in_i = _bin(points[:, axis_i], axis_i, bins)
    keep = in_i & in_j
    i, j = i[keep], j[keep]
    np.maximum.at(image, (i, j), value[keep])
    return image


def point_set(points: np.ndarray, n_max: int = 1024, scale: Optional[float] = None,
              intensity: str = "log1p") -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size point set: the ``n_max`` highest-charge points, zero-padded.

    Coordinates are scaled to the detector: x / 275 mm and y / 275 mm in [-1, 1], z / 1000 mm
    in [0, 1]; the fourth feature is the charge scaled as in :func:`project`.

    Returns:
        ``(features, mask)``: float32 (n_max, 4) sorted by decreasing charge, and bool
        (n_max,) marking the real points.
    """
    if n_max < 1:
        raise DataError(f"n_max must be a positive integer, got {n_max}.")
    points = _check_points(points)
    order = np.argsort(-points[:, 3], kind="stable")[:n_max]
    kept = points[order]
    features = np.zeros((n_max, 4), dtype=np.float32)
    features[: len(kept), 0] = kept[:, 0] / PAD_PLANE_RADIUS_MM
    features[: len(kept), 1] = kept[:, 1] / PAD_PLANE_RADIUS_MM
    features[: len(kept), 2] = kept[:, 2] / DRIFT_LENGTH_MM
    # The event's own maximum comes from all its points, not only the kept ones.
    s = charge_value(points[:, 3], intensity).max(initial=0.0) if scale is None else scale
    features[: len(kept), 3] = scale_charge(kept[:, 3], s, intensity)
    mask = np.zeros(n_max, dtype=bool)
    mask[: len(kept)] = True
    return features, mask
