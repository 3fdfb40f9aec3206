"""Thermodynamics of 2-D Ising configurations, with errors: one estimator for every source.

The model (J = 1, field h, L x L periodic lattice, N = L^2 spins s = +-1):

    E = -sum_<ij> s_i s_j - h sum_i s_i,     bonds to the right and downwards neighbour of each site

(so each site has four bonds; on L = 2 the two neighbours along an axis are one site, joined by
two bonds, as the periodic sum counts them). Per spin, e = E / N and m = sum_i s_i / N. From the
distribution of (e, m) at temperature T (beta = 1 / T):

    energy per spin          <e>
    magnetization            <|m|>
    specific heat per spin   C   = N beta^2 (<e^2> - <e>^2)
    susceptibility per spin  chi = N beta (<m^2> - <|m|>^2)      (the finite-lattice convention
                             with |m|, since <m> = 0 on a finite lattice at h = 0; Landau & Binder)
    Binder cumulant          U   = 1 - <m^4> / (3 <m^2>^2)

:func:`thermodynamics` estimates them from series of e and m (a simulator's chains, an RBM's
Gibbs chains, any model's samples); :func:`measure` first computes the series from spins.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lvmkit.core.errors import DataError
from lvmkit.core.statistics import autocorrelation_time, blocking, jackknife

#: Onsager's critical temperature of the square lattice, 2 / ln(1 + sqrt 2)
T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))

#: the names of :func:`thermodynamics`'s quantities, in table order
QUANTITIES = ("energy", "abs_magnetization", "specific_heat", "susceptibility", "binder")


def energy_magnetization(spins, field: float = 0.0):
    """Energy and magnetization per spin, e and m, of configurations (..., L, L) of +-1.

    A torch tensor gives float tensors on its device (the simulator's chains); anything else
    gives float64 NumPy arrays of the leading shape.
    """
    if isinstance(spins, torch.Tensor):
        s = spins if spins.is_floating_point() else spins.float()
        bonds = (s * (torch.roll(s, 1, -1) + torch.roll(s, 1, -2))).sum((-2, -1))
        total = s.sum((-2, -1))
        n = s.shape[-1] * s.shape[-2]
        return (-bonds - field * total) / n, total / n
    s = np.asarray(spins, dtype=np.float64)
    bonds = (s * (np.roll(s, 1, -1) + np.roll(s, 1, -2))).sum((-2, -1))
    total = s.sum((-2, -1))
    n = s.shape[-1] * s.shape[-2]
    return (-bonds - field * total) / n, total / n


def _jackknife_bins(shape: tuple[int, ...], tau: float) -> int:
    """Bins for the jackknife: groups of whole chains when there are 32 or more, else stretches
    of each chain at least ten autocorrelation times long (and at least two per chain)."""
    chains, n = shape if len(shape) == 2 else (1, shape[0])
    if chains >= 32:
        return 32
    per_chain = max(2, min(math.ceil(32 / chains), int(n // max(1, math.ceil(10 * tau)))))
    return chains * per_chain


def thermodynamics(e, m, temperature: float, n_sites: int) -> dict:
    """Energy, |M|, specific heat, susceptibility and Binder cumulant with errors, from series of
    the energy and magnetization per spin, (time,) or (chains, time) (module docstring).

    Errors: of <e> and <|m|> by blocking (:func:`lvmkit.core.statistics.blocking`); of C, chi and
    U by the jackknife over whole chains (32 or more chains) or over stretches of each chain ten
    integrated autocorrelation times long. Independent samples are a series too (one chain, or
    one point per chain).

    Returns:
        A dict with each quantity of :data:`QUANTITIES` and ``<name>_error``, the integrated
        autocorrelation times ``tau_energy`` and ``tau_abs_magnetization`` (in steps of the series;
        1 for independent samples), ``samples`` and ``temperature``.

    Raises:
        DataError: a non-positive temperature, series of different shapes, or too few points.
    """
    if not temperature > 0:
        raise DataError(f"The temperature must be positive, got {temperature}; pass T > 0 (in units of J / k_B).")
    e = np.asarray(e, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    if e.shape != m.shape:
        raise DataError(f"Energy and magnetization series must have one shape, got {e.shape} and {m.shape}.")
    if e.ndim == 2 and e.shape[1] == 1:  # one point per chain: independent samples
        e, m = e[:, 0], m[:, 0]
    a = np.abs(m)
    beta = 1.0 / temperature
    b_e, b_m = blocking(e), blocking(a)
    tau_e, tau_m = autocorrelation_time(e), autocorrelation_time(a)
    bins = _jackknife_bins(e.shape, max(tau_e.tau, tau_m.tau))
    c, c_err = jackknife(lambda e1, e2: n_sites * beta**2 * (e2 - e1**2), [e, e**2], bins)
    chi, chi_err = jackknife(lambda a1, a2: n_sites * beta * (a2 - a1**2), [a, m**2], bins)
    u, u_err = jackknife(lambda m2, m4: 1.0 - m4 / (3.0 * m2**2) if m2 > 0 else float("nan"), [m**2, m**4], bins)
    return {
        "temperature": float(temperature),
        "energy": b_e.mean, "energy_error": b_e.error,
        "abs_magnetization": b_m.mean, "abs_magnetization_error": b_m.error,
        "specific_heat": c, "specific_heat_error": c_err,
        "susceptibility": chi, "susceptibility_error": chi_err,
        "binder": u, "binder_error": u_err,
        "tau_energy": tau_e.tau, "tau_abs_magnetization": tau_m.tau,
        "samples": int(e.size),
    }


def check_spins(spins, origin: str = "the configurations") -> np.ndarray:
    """``spins`` as an int8 array of +-1 with at least two trailing lattice axes; one-sentence
    DataError otherwise."""
    s = np.asarray(spins)
    if s.ndim < 2:
        raise DataError(f"Spins in {origin} have shape {s.shape}; expected (..., L, L) lattices.")
    bad = (s != 1) & (s != -1)
    if bad.any():
        raise DataError(f"Spins in {origin} must be +-1, but they hold values such as {s[bad].flat[0].item()!r}; "
                        "write them with 'lvmkit simulate ising' (binary {0, 1} samples map to 2 x - 1).")
    return s.astype(np.int8)


def measure(spins, temperature: float, field: float = 0.0) -> dict:
    """:func:`thermodynamics` of configurations (time, L, L) or (chains, time, L, L) of +-1."""
    s = check_spins(spins)
    if s.ndim not in (3, 4):
        raise DataError(f"Spins have shape {s.shape}; expected (time, L, L) or (chains, time, L, L).")
    e, m = energy_magnetization(s, field)
    return thermodynamics(e, m, temperature, s.shape[-1] * s.shape[-2])


__all__ = ["QUANTITIES", "T_C", "check_spins", "energy_magnetization", "measure", "thermodynamics"]
