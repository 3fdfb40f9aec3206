"""Errors of Monte Carlo averages: blocking, the integrated autocorrelation time, the jackknife.

Every series is ``(time,)`` or ``(chains, time)``: independent chains of one stationary
process, time along the last axis. Chains are pooled (one mean, one variance, autocovariances
averaged over chains), so many short chains and one long chain are treated alike.

- :func:`blocking`: Flyvbjerg & Petersen (J. Chem. Phys. 91, 461, 1989): pairwise averages
  of neighbours leave the variance of the mean unchanged and shrink the correlations, so the
  naive estimate var / n rises with the level and settles on a plateau. The level is chosen
  automatically by Jonsson's test (Phys. Rev. E 98, 043304, 2018): the first level from which
  the summed, standardised lag-1 autocorrelations of all coarser levels are consistent with
  zero at 99% (a chi-square test), i.e. where the plateau begins.
- :func:`autocorrelation_time`: tau_int = 1 + 2 sum_{t=1}^{W} rho(t), so that
  var(mean) = tau_int var(x) / n; the window W is Sokal's (Monte Carlo Methods in Statistical
  Mechanics, 1996, sec. 3): the smallest W with W >= c tau_int(W), c = 5; error by the
  Madras-Sokal formula var(tau) = 2 (2 W + 1) tau^2 / n.
- :func:`jackknife`: a function of several means (a specific heat, a Binder cumulant) with
  its error, over bins of whole chains or of contiguous stretches of time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lvmkit.core.errors import DataError


def _series(x, what: str = "series", min_length: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise DataError(f"A {what} must be (time,) or (chains, time), got shape {a.shape}; reshape it.")
    if a.shape[1] < min_length:
        raise DataError(f"A {what} needs at least {min_length} points in time, got shape {a.shape}; run the chains longer.")
    if not np.all(np.isfinite(a)):
        raise DataError(f"The {what} holds NaN or infinite values; check the chains that produced it.")
    return a


@dataclass(frozen=True)
class Blocking:
    """The result of :func:`blocking`: the mean, its error at the chosen ``level`` (block length
    2^level), and per level the error estimate and that estimate's own error (the plateau)."""

    mean: float
    error: float
    level: int
    errors: np.ndarray
    errors_error: np.ndarray

    @property
    def block_length(self) -> int:
        return 2 ** self.level


def blocking(x) -> Blocking:
    """Flyvbjerg-Petersen blocking error of the mean of ``x`` (time,) or (chains, time), with
    the level chosen by Jonsson's automatic test (module docstring).

    Returns:
        :class:`Blocking`. At level k, each chain of length n_k (halved each level, an odd last
        point dropped) gives the estimate var_k / (N_k - 1) of the variance of the mean, N_k the
        points of all chains; its relative error is sqrt(2 / (N_k - 1)).

    Raises:
        DataError: a series of the wrong shape, shorter than 2, or not finite.
    """
    from scipy.stats import chi2

    a = _series(x, "series to block")
    mu = float(a.mean())
    var, lag1, sizes = [], [], []
    while a.shape[1] >= 2:
        d = a - mu
        n = d.size
        var.append(float((d**2).sum() / n))
        lag1.append(float((d[:, :-1] * d[:, 1:]).sum() / n))
        sizes.append(n)
        t = a.shape[1] // 2 * 2
        a = 0.5 * (a[:, 0:t:2] + a[:, 1:t:2])
    var_, lag1_, n_ = np.array(var), np.array(lag1), np.array(sizes, dtype=np.float64)
    errors = np.sqrt(var_ / np.maximum(n_ - 1, 1))
    errors_error = errors / np.sqrt(2 * np.maximum(n_ - 1, 1))
    if np.all(var_ == 0):  # a constant series: no error at any level
        return Blocking(mu, 0.0, 0, errors, errors_error)
    # Jonsson's M_k = sum_{j >= k} n_j (gamma_j / s_j)^2 ~ chi2(levels - k) once correlations are gone
    r2 = np.where(var_ > 0, (lag1_ / np.where(var_ > 0, var_, 1.0)) ** 2, 0.0)
    m = np.cumsum((n_ * r2)[::-1])[::-1]
    levels = len(var_)
    level = levels - 1
    for k in range(levels):
        if m[k] < chi2.ppf(0.99, levels - k):
            level = k
            break
    return Blocking(mu, float(errors[level]), level, errors, errors_error)


@dataclass(frozen=True)
class AutocorrelationTime:
    """The result of :func:`autocorrelation_time`: tau_int (in steps of the series), its error,
    Sokal's window, whether the window condition was met within the series, and rho(t)."""

    tau: float
    error: float
    window: int
    converged: bool
    rho: np.ndarray


def autocorrelation(x, max_lag: int | None = None) -> np.ndarray:
    """The normalised autocorrelation rho(t), t = 0..max_lag, of ``x`` (time,) or (chains,
    time), pooled over chains (autocovariances averaged, one mean), by FFT."""
    a = _series(x, "series")
    n_chains, n = a.shape
    d = a - a.mean()
    size = 1 << int(math.ceil(math.log2(2 * n)))
    f = np.fft.rfft(d, size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n].sum(0) / (n_chains * np.arange(n, 0, -1))
    max_lag = n - 1 if max_lag is None else min(max_lag, n - 1)
    if acov[0] <= 0:
        out = np.zeros(max_lag + 1)
        out[0] = 1.0
        return out
    return acov[: max_lag + 1] / acov[0]


def autocorrelation_time(x, c: float = 5.0) -> AutocorrelationTime:
    """tau_int = 1 + 2 sum_{t=1}^{W} rho(t) of ``x`` (time,) or (chains, time), with Sokal's
    window: the smallest W with W >= c tau_int(W).

    For an AR(1) process x_t = phi x_{t-1} + noise, tau_int = (1 + phi) / (1 - phi), and
    var(mean) = tau_int var(x) / n for long series. A constant series has tau_int = 1.

    Returns:
        :class:`AutocorrelationTime`; ``converged`` is False when no window up to a quarter of
        the series met the condition (the series is too short for its correlations: run longer).

    Raises:
        DataError: a series of the wrong shape, shorter than 2, or not finite.
    """
    if c <= 0:
        raise DataError(f"Sokal's window constant c must be positive, got {c}; the usual value is 5.")
    a = _series(x, "series")
    n_total = a.size
    rho = autocorrelation(a)
    taus = 1.0 + 2.0 * np.cumsum(rho[1:])
    limit = max(1, a.shape[1] // 4)
    windows = np.arange(1, len(taus) + 1)
    ok = np.nonzero(windows[:limit] >= c * taus[:limit])[0]
    converged = len(ok) > 0
    w = int(windows[ok[0]]) if converged else limit
    tau = float(max(taus[w - 1], 1e-12)) if len(taus) else 1.0
    err = tau * math.sqrt(2.0 * (2 * w + 1) / n_total)
    return AutocorrelationTime(tau, err, w, converged, rho[: w + 1])


def jackknife(fn: Callable[..., float], series: Sequence, bins: int = 32) -> tuple[float, float]:
    """``fn(mean_1, mean_2, ...)`` of the means of several series of one shape (time,) or
    (chains, time), and its jackknife error over ``bins`` bins.

    With at least ``bins`` chains the bins are groups of whole chains (exactly independent);
    otherwise each chain is cut into contiguous stretches of time, which are nearly independent
    when much longer than the autocorrelation time. The estimate is fn of the full means; the
    error is sqrt((B - 1) / B * sum_b (f_b - mean f_b)^2), f_b from all bins but b.

    Raises:
        DataError: series of different shapes, or fewer points than two bins need.
    """
    arrays = [_series(s, "series") for s in series]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise DataError(f"The jackknife needs series of one shape, got {[a.shape for a in arrays]}.")
    n_chains, n = shape
    if n_chains >= bins:
        edges = np.linspace(0, n_chains, bins + 1).astype(int)
        sums = np.stack([[a[lo:hi].sum() for lo, hi in zip(edges[:-1], edges[1:])] for a in arrays])
        counts = np.diff(edges) * n
    else:
        per = int(math.ceil(bins / n_chains))
        if n < 2 * per:
            raise DataError(f"The jackknife needs at least {2 * per} points per chain for {bins} bins over {n_chains} "
                            f"chain(s), got {n}; run the chains longer.")
        edges = np.linspace(0, n, per + 1).astype(int)
        # one bin per (chain, stretch): (series, chains * stretches)
        sums = np.stack([np.concatenate([a[:, lo:hi].sum(1) for lo, hi in zip(edges[:-1], edges[1:])]) for a in arrays])
        counts = np.repeat(np.diff(edges), n_chains)
    total, n_all = sums.sum(1), counts.sum()
    full = float(fn(*(total / n_all)))
    loo = np.array([fn(*((total - sums[:, b]) / (n_all - counts[b]))) for b in range(sums.shape[1])], dtype=np.float64)
    nb = len(loo)
    err = math.sqrt((nb - 1) / nb * float(((loo - loo.mean()) ** 2).sum()))
    return full, err


__all__ = ["AutocorrelationTime", "Blocking", "autocorrelation", "autocorrelation_time", "blocking", "jackknife"]
