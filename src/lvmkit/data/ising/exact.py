"""Exact thermodynamics of small lattices by enumerating all 2^(L^2) configurations (L <= 4).

The energies and magnetizations of every state come from the same
:func:`~lvmkit.data.ising.observables.energy_magnetization` the estimators use, so the exact
values and the simulator's share one definition of the model (bonds, field, L = 2's double
bonds). Averages use log-sum-exp weights, so they stay finite at any positive temperature.
"""
from __future__ import annotations

import numpy as np

from lvmkit.core.errors import ConfigError
from lvmkit.data.ising.observables import energy_magnetization

#: the largest lattice side enumerated (2^16 states)
MAX_SIZE = 4


def enumerate_states(size: int) -> np.ndarray:
    """All 2^(size^2) configurations, (2^N, size, size) int8 of +-1; state k has spin i equal
    to +1 where bit i of k is set (row-major sites)."""
    if not 1 <= size <= MAX_SIZE:
        raise ConfigError(f"Exact enumeration covers lattices up to {MAX_SIZE} x {MAX_SIZE} (2^16 states), got size {size}; "
                          "simulate larger lattices instead.")
    n = size * size
    k = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (k >> np.arange(n, dtype=np.int64)) & 1
    return (2 * bits - 1).astype(np.int8).reshape(-1, size, size)


def state_index(spins) -> np.ndarray:
    """The index of :func:`enumerate_states` of configurations (..., L, L) of +-1."""
    s = np.asarray(spins)
    n = s.shape[-1] * s.shape[-2]
    bits = (s.reshape(*s.shape[:-2], n) > 0).astype(np.int64)
    return (bits << np.arange(n, dtype=np.int64)).sum(-1)


def boltzmann_weights(size: int, temperature: float, field: float = 0.0) -> np.ndarray:
    """p(state) of every state of :func:`enumerate_states` at ``temperature``, (2^N,)."""
    e, _ = energy_magnetization(enumerate_states(size), field)
    log_w = -(size * size) * e / temperature
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def exact(size: int, temperatures, field: float = 0.0) -> list[dict]:
    """Exact log Z, <e>, <|m|>, C, chi and the Binder cumulant (definitions in
    :mod:`lvmkit.data.ising.observables`) at each temperature, by enumeration.

    Returns:
        One dict per temperature with ``temperature``, ``log_z`` and each quantity of
        :data:`~lvmkit.data.ising.observables.QUANTITIES`.

    Raises:
        ConfigError: ``size`` above :data:`MAX_SIZE` or a non-positive temperature.
    """
    e0, m = energy_magnetization(enumerate_states(size))  # the bond energy alone: integers times 1 / N
    n = size * size
    # the distinct (bond energy, m) pairs with their multiplicities: a few hundred instead of 2^N states
    pairs, counts = np.unique(np.round(np.stack([e0 * n, m * n], 1)).astype(np.int64), axis=0, return_counts=True)
    m_ = pairs[:, 1] / n
    e_ = pairs[:, 0] / n - field * m_
    out = []
    for t in np.atleast_1d(np.asarray(temperatures, dtype=np.float64)):
        if not t > 0:
            raise ConfigError(f"Temperatures must be positive, got {t}; pass T > 0 (in units of J / k_B).")
        beta = 1.0 / t
        log_w = np.log(counts) - beta * n * e_
        top = log_w.max()
        w = np.exp(log_w - top)
        z = w.sum()
        p = w / z

        def avg(x: np.ndarray) -> float:
            return float((p * x).sum())

        a = np.abs(m_)
        out.append({
            "temperature": float(t),
            "log_z": float(top + np.log(z)),
            "energy": avg(e_),
            "abs_magnetization": avg(a),
            "specific_heat": float(n * beta**2 * (avg(e_**2) - avg(e_) ** 2)),
            "susceptibility": float(n * beta * (avg(m_**2) - avg(a) ** 2)),
            "binder": 1.0 - avg(m_**4) / (3.0 * avg(m_**2) ** 2),
        })
    return out


__all__ = ["MAX_SIZE", "boltzmann_weights", "enumerate_states", "exact", "state_index"]
