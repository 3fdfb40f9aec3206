"""Feature scaling fitted on the training split: ``data.scale``.

A scaler is fitted once, on the training split only, and then applied unchanged to validation,
test and any new data (``lvmkit anomaly --data``); its statistics are stored in the run
(``RUN/scaling.json``), so outputs can be mapped back to the data's own units
(``lvmkit sample --units data``). Values of other data outside the training range are counted
and reported, never clipped here: only a likelihood that needs [0, 1] (Bernoulli) clips its
targets, and the trainer logs how many values that touches. The built-in scalings are fitted from
running statistics (:class:`RunningStats`), so a streamed training split (``data.stream``) is
fitted chunk by chunk by the same code.

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

from lvmkit.core.errors import ConfigError, DataError
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


class RunningStats:
    """Per-feature statistics of data seen whole or in chunks (streamed data, :mod:`lvmkit.data.stream`):
    count, min and max (``ranges``), mean and the sum of squared deviations ``m2`` (``moments``;
    chunks merged with Chan, Golub & LeVeque 1979, eq. 2.1). One update with the whole array gives
    what NumPy's ``min``/``max``/``mean``/``std`` give; chunked updates give the same ranges exactly
    and the same moments to rounding."""

    def __init__(self, ranges: bool = True, moments: bool = False) -> None:
        self.ranges, self.moments = ranges, moments
        self.n = 0
        self.dtype: Optional[np.dtype] = None
        self.lo = self.hi = self.mean = self.m2 = None

    def update(self, x: np.ndarray) -> "RunningStats":
        """Add a chunk of examples (n, *example_shape)."""
        x = np.asarray(x)
        if len(x) == 0:
            return self
        self.dtype = x.dtype if self.dtype is None else np.result_type(self.dtype, x.dtype)
        if self.ranges:
            lo, hi = x.min(0), x.max(0)
            self.lo = lo if self.n == 0 else np.minimum(self.lo, lo)
            self.hi = hi if self.n == 0 else np.maximum(self.hi, hi)
        if self.moments:
            xd = x.astype(np.float64)
            mean = xd.mean(0)
            m2 = ((xd - mean) ** 2).sum(0)
            if self.n == 0:
                self.mean, self.m2 = mean, m2
            else:
                total = self.n + len(x)
                delta = mean - self.mean
                self.mean = self.mean + delta * (len(x) / total)
                self.m2 = self.m2 + m2 + delta**2 * (self.n * len(x) / total)
        self.n += len(x)
        return self

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n)


class Scaling:
    """A registered scaling fitted from :class:`RunningStats`, so the training split in memory and
    a stream of its chunks are fitted by the same code: ``scaling(x)`` fits at once;
    ``s = scaling.stats()``, ``s.update(chunk)`` per chunk, then ``scaling.finish(s)``."""

    def __init__(self, finish: Callable[[RunningStats], Scaler], ranges: bool = True, moments: bool = False) -> None:
        self.finish, self.ranges, self.moments = finish, ranges, moments

    def stats(self) -> RunningStats:
        return RunningStats(self.ranges, self.moments)

    def __call__(self, x: np.ndarray) -> Scaler:
        return self.finish(self.stats().update(x))


# A scaling is a callable train_x -> Scaler; the built-in ones are Scaling objects, which can also
# be fitted chunk by chunk. A plain function (series-standard) works in memory only.
SCALERS: Registry[Callable[[np.ndarray], Scaler]] = Registry("data scaling")


def _scaling(name: str, ranges: bool = True, moments: bool = False):
    def wrap(finish: Callable[[RunningStats], Scaler]) -> Scaling:
        return SCALERS.register(name)(Scaling(finish, ranges, moments))

    return wrap


@_scaling("minmax")
def minmax(s: RunningStats) -> Scaler:
    lo, hi = s.lo.astype(np.float64), s.hi.astype(np.float64)
    return Scaler("minmax", lo, _safe(hi - lo), bounded=True)


@_scaling("standard", ranges=False, moments=True)
def standard(s: RunningStats) -> Scaler:
    return Scaler("standard", s.mean, _safe(s.std), bounded=False)


@_scaling("global")
def global_range(s: RunningStats) -> Scaler:
    if s.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = float(np.min(s.lo)), float(np.max(s.hi))
        if 0.0 <= lo and hi <= 1.0:
            lo, hi = 0.0, 1.0  # already in range: leave untouched
    return Scaler("global", np.float64(lo), _safe(np.float64(hi - lo)), bounded=True)


@_scaling("none", ranges=False)
def identity(s: RunningStats) -> Scaler:
    return Scaler("none", np.float64(0.0), np.float64(1.0), bounded=False)


def default_scale(example_ndim: int) -> str:
    """``data.scale`` when unset: one range for images (pixels share units), per feature for tables."""
    return "global" if example_ndim >= 2 else "minmax"


def fit_scaler(name: Optional[str], train_x: np.ndarray) -> Scaler:
    """The scaler ``name`` (None: the default for the data's shape) fitted on the training split."""
    return SCALERS.get(name or default_scale(train_x.ndim - 1))(train_x)


def streaming_scaling(name: Optional[str], example_ndim: int) -> Scaling:
    """The scaling ``name`` (None: the default for the data's shape) in its chunk-by-chunk form;
    a scaling without one is a :class:`ConfigError`."""
    name = name or default_scale(example_ndim)
    scaling = SCALERS.get(name)
    if not isinstance(scaling, Scaling):
        raise ConfigError(f"data.scale = {name!r} is fitted on the whole training split and cannot be fitted on a "
                          f"stream of chunks; choose one of {', '.join(n for n in SCALERS if isinstance(SCALERS.get(n), Scaling))} "
                          "or set data.stream = false.")
    return scaling
