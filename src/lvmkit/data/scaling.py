"""Feature scaling fitted on the training split: ``data.scale``.

A scaler is fitted once, on the training split only, and then applied unchanged to validation,
test and any new data (``lvmkit anomaly --data``); its statistics are stored in the run
(``RUN/scaling.json``), so outputs can be mapped back to the data's own units
(``lvmkit sample --units data``). Values of other data outside the training range are counted
and reported, never clipped here: only a likelihood that needs [0, 1] (Bernoulli) clips its
targets, and the trainer logs how many values that touches.

- ``minmax``: (x - min_j) / (max_j - min_j) per feature j (the tabular default);
- ``standard``: (x - mean_j) / std_j per feature (z-scores; the partner of a Gaussian likelihood);
- ``global``: one range for every feature (the image default; 8-bit data uses 0..255);
- ``none``: the values as given;
- ``series-standard`` (registered by :mod:`lvmkit.data.series`): packed time series, each value
  channel z-scored over the observed entries of the training series; times and mask codes as given.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from lvmkit.core.errors import DataError
from lvmkit.core.registry import Registry


class Scaler:
    """An affine map x -> (x - shift) / span, per feature or global, fitted on training data.

    ``shift`` and ``span`` broadcast against one example (shape ``()``, the example shape, or
    the last axis' length). ``bounded`` says whether the training data map into [0, 1] (so other
    data can be counted as out of range). ``codes`` (optional, per index of the last axis) names
    the index holding each entry's presence code, -1 for none: an entry whose code is 0 (absent)
    is left as it is by both maps, so packed series keep 0 where a value is absent.
    """

    def __init__(self, name: str, shift: np.ndarray, span: np.ndarray, bounded: bool,
                 codes: Optional[list[int]] = None) -> None:
        self.name = name
        self.shift = np.asarray(shift, dtype=np.float64)
        self.span = np.asarray(span, dtype=np.float64)
        self.bounded = bounded
        self.codes = None if codes is None else [int(c) for c in codes]

    def _keep_absent(self, x: np.ndarray, mapped: np.ndarray) -> np.ndarray:
        if self.codes is None:
            return mapped
        for j, c in enumerate(self.codes):
            if c >= 0:
                mapped[..., j] = np.where(x[..., c] == 0, x[..., j], mapped[..., j])
        return mapped

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return self._keep_absent(x, ((x.astype(np.float64) - self.shift) / self.span)).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Scaled values back to the data's own units."""
        x = np.asarray(x, dtype=np.float64)
        return self._keep_absent(x, x * self.span + self.shift).astype(np.float32)

    def out_of_range(self, scaled: np.ndarray) -> int:
        """How many scaled values fall outside [0, 1] (0 for an unbounded scaling)."""
        if not self.bounded:
            return 0
        return int(np.count_nonzero((scaled < 0.0) | (scaled > 1.0)))

    def state(self) -> dict[str, Any]:
        out = {"name": self.name, "shift": self.shift.tolist(), "span": self.span.tolist(), "bounded": self.bounded}
        if self.codes is not None:
            out["codes"] = list(self.codes)
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Scaler":
        try:
            return cls(state["name"], np.asarray(state["shift"]), np.asarray(state["span"]), bool(state["bounded"]),
                       state.get("codes"))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"The stored scaling statistics are unreadable ({err}); retrain the run or restore RUN/scaling.json.") from None


def _safe(span: np.ndarray) -> np.ndarray:
    # A constant feature has no range: leave it shifted to 0 rather than divide by zero.
    return np.where(span > 0, span, 1.0)


SCALERS: Registry[Callable[[np.ndarray], Scaler]] = Registry("data scaling")


@SCALERS.register("minmax")
def minmax(x: np.ndarray) -> Scaler:
    lo, hi = x.min(0).astype(np.float64), x.max(0).astype(np.float64)
    return Scaler("minmax", lo, _safe(hi - lo), bounded=True)


@SCALERS.register("standard")
def standard(x: np.ndarray) -> Scaler:
    xd = x.astype(np.float64)
    return Scaler("standard", xd.mean(0), _safe(xd.std(0)), bounded=False)


@SCALERS.register("global")
def global_range(x: np.ndarray) -> Scaler:
    if x.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = float(np.min(x)), float(np.max(x))
        if 0.0 <= lo and hi <= 1.0:
            lo, hi = 0.0, 1.0  # already in range: leave untouched
    return Scaler("global", np.float64(lo), _safe(np.float64(hi - lo)), bounded=True)


@SCALERS.register("none")
def identity(x: np.ndarray) -> Scaler:
    return Scaler("none", np.float64(0.0), np.float64(1.0), bounded=False)


def default_scale(example_ndim: int) -> str:
    """``data.scale`` when unset: one range for images (pixels share units), per feature for tables."""
    return "global" if example_ndim >= 2 else "minmax"


def fit_scaler(name: Optional[str], train_x: np.ndarray) -> Scaler:
    """The scaler ``name`` (None: the default for the data's shape) fitted on the training split."""
    return SCALERS.get(name or default_scale(train_x.ndim - 1))(train_x)
