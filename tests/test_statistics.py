"""Monte Carlo error estimates against an AR(1) process, whose variance of the mean and
integrated autocorrelation time are known in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lvmkit import DataError
from lvmkit.core.statistics import autocorrelation, autocorrelation_time, blocking, jackknife


def ar1(phi: float, chains: int, n: int, seed: int) -> np.ndarray:
    """x_t = phi x_{t-1} + sqrt(1 - phi^2) eps_t from the stationary N(0, 1): (chains, n)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((chains, n)) * math.sqrt(1 - phi**2)
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + eps[:, t]
    return x


def var_of_mean(phi: float, n: int) -> float:
    """Exact variance of the mean of n consecutive stationary AR(1) points of unit variance."""
    return ((1 + phi) / (1 - phi) - 2 * phi * (1 - phi**n) / (n * (1 - phi) ** 2)) / n


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_blocking_error_and_tau_match_ar1(phi):
    chains, n = 4, 2**16
    x = ar1(phi, chains, n, seed=1)
    exact = math.sqrt(var_of_mean(phi, n) / chains)  # independent chains: the variance divides by their number
    b = blocking(x)
    assert b.error == pytest.approx(exact, rel=0.1)
    assert b.level > 0 and 2**b.level > (1 + phi) / (1 - phi)  # blocks longer than the correlation time
    naive = x.std() / math.sqrt(x.size)
    assert b.errors[0] == pytest.approx(naive, rel=1e-3) and b.error > 1.5 * naive
    tau = autocorrelation_time(x)
    assert tau.converged
    assert tau.tau == pytest.approx((1 + phi) / (1 - phi), rel=0.08)
    assert abs(tau.tau - (1 + phi) / (1 - phi)) < 3 * tau.error
    assert tau.window >= 5 * tau.tau


def test_blocking_error_is_the_spread_of_replicate_means():
    phi, n = 0.8, 2**13
    x = ar1(phi, 400, n, seed=2)
    spread = x.mean(1).std(ddof=1)  # 400 independent replicates of one chain's mean
    errs = np.array([blocking(row).error for row in x[:40]])
    assert spread == pytest.approx(math.sqrt(var_of_mean(phi, n)), rel=0.1)
    assert float(np.median(errs)) == pytest.approx(spread, rel=0.15)


def test_independent_data_keep_the_naive_error():
    x = np.random.default_rng(3).standard_normal(2**14)
    b = blocking(x)
    assert b.error == pytest.approx(1 / math.sqrt(len(x)), rel=0.15)
    assert autocorrelation_time(x).tau == pytest.approx(1.0, abs=0.1)
    assert autocorrelation(x, 3)[0] == 1.0


def test_constant_series_has_no_error():
    b = blocking(np.ones((3, 100)))
    assert b.mean == 1.0 and b.error == 0.0
    assert autocorrelation_time(np.ones(100)).tau == pytest.approx(1.0)


def test_jackknife_error_of_a_variance():
    # the variance m2 - m1^2 of n iid N(0, s^2) points has standard error s^2 sqrt(2 / n)
    n, s = 20000, 2.0
    x = s * np.random.default_rng(4).standard_normal((50, n // 50))
    value, err = jackknife(lambda m1, m2: m2 - m1**2, [x, x**2])
    assert value == pytest.approx(x.var(), rel=1e-12)
    assert err == pytest.approx(s**2 * math.sqrt(2 / n), rel=0.3)
    one_chain_value, one_chain_err = jackknife(lambda m1, m2: m2 - m1**2, [x.ravel(), x.ravel() ** 2])
    assert one_chain_value == pytest.approx(value) and one_chain_err == pytest.approx(err, rel=0.4)


def test_jackknife_sees_correlations_through_long_bins():
    phi, n = 0.9, 2**15
    x = ar1(phi, 1, n, seed=5)
    _, err = jackknife(lambda m: m, [x])
    assert err == pytest.approx(math.sqrt(var_of_mean(phi, n)), rel=0.35)


def test_bad_series_are_one_sentence_errors():
    with pytest.raises(DataError, match=r"must be \(time,\) or \(chains, time\), got shape \(2, 2, 2\)"):
        blocking(np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="at least 2 points in time"):
        autocorrelation_time([1.0])
    with pytest.raises(DataError, match="NaN or infinite"):
        blocking([1.0, float("nan"), 2.0])
    with pytest.raises(DataError, match="needs series of one shape"):
        jackknife(lambda a, b: a, [np.ones(64), np.ones(32)])
