"""Variational Monte Carlo (family vmc): local energies against closed forms and exact
enumeration, the samplers against exact transition probabilities and distributions, the energy
gradient and stochastic reconfiguration against known answers, bad input, exact resume."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit.core.optim import Optimizers
from lvmkit.core.statistics import blocking
from lvmkit.models.mcmc.base import ChainState
from lvmkit.models.mcmc.chains import MetropolisHastings
from lvmkit.models.wavefunction import (Density, Exchange, GaussianBinaryWave, HarmonicTrap, Heisenberg, SpinFlip,
                                        SpinRBMWave, TransverseIsing, draw, energy_gradient, kinetic_energy,
                                        log_2cosh, log_psi_derivatives, make_kernel, per_sample_log_grads,
                                        sr_direction)

from conftest import run_cli


def _wave(p, d, hidden, sigma=1.0, *, jastrow=False, scale=0.3, seed=0):
    torch.manual_seed(seed)
    return GaussianBinaryWave(p, d, hidden, sigma, jastrow=jastrow, init_scale=scale)


def _zero(wave):
    with torch.no_grad():
        for p in (wave.a, wave.b, wave.w):
            p.zero_()


# -- the Gaussian-binary wave function: local energies and derivatives -------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gaussian_ansatz_local_energy_matches_its_closed_form(dims):
    """W = 0: ln psi = -sum (x - a)^2 / 2 sigma^2, so E_L = -1/2 sum [(x - a)^2 / sigma^4 - 1 / sigma^2]
    + omega^2 / 2 sum x^2 for any a, sigma, omega."""
    p, sigma, omega = 2, 0.8, 1.7
    wave = _wave(p, dims, 3, sigma)
    with torch.no_grad():
        wave.w.zero_()
    a = wave.a.detach().double()
    x = torch.randn(50, p * dims, dtype=torch.float64)
    trap = HarmonicTrap(p, dims, omega)
    expected = -0.5 * (((x - a) ** 2) / sigma**4 - 1 / sigma**2).sum(1) + 0.5 * omega**2 * (x**2).sum(1)
    torch.testing.assert_close(trap.local_energy(wave.log_psi, x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("p,dims,omega", [(1, 1, 1.0), (2, 2, 1.0), (3, 3, 0.5), (2, 1, 2.5)])
def test_local_energy_is_constant_where_the_ground_state_is_in_the_ansatz(p, dims, omega):
    """a = 0, W = 0, sigma^2 = 1/omega: psi is the trap's ground state, E_L = P D omega / 2 everywhere."""
    wave = _wave(p, dims, 4, 1 / math.sqrt(omega))
    _zero(wave)
    x = 3 * torch.randn(200, p * dims, dtype=torch.float64)
    e = HarmonicTrap(p, dims, omega).local_energy(wave.log_psi, x)
    assert float((e - p * dims * omega / 2).abs().max()) < 1e-10
    assert float(e.var()) < 1e-20


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_autograd_derivatives_match_the_rbm_closed_forms(dims):
    """The course's closed forms: d ln psi / dx_m = -(x_m - a_m)/sigma^2 + sum_j w_mj sigmoid(theta_j) / sigma^2,
    d^2 ln psi / dx_m^2 = -1/sigma^2 + sum_j w_mj^2 sigmoid(theta_j) sigmoid(-theta_j) / sigma^4."""
    sigma = 1.3
    wave = _wave(2, dims, 5, sigma, scale=0.5)
    a, b, w = (t.detach().double() for t in (wave.a, wave.b, wave.w))
    x = torch.randn(30, 2 * dims, dtype=torch.float64)
    theta = b + x @ w / sigma**2
    sig = torch.sigmoid(theta)
    grad = -(x - a) / sigma**2 + sig @ w.T / sigma**2
    lap = (-1 / sigma**2 + (sig * (1 - sig)) @ (w**2).T / sigma**4).sum(1)
    lp, g, l2 = log_psi_derivatives(wave.log_psi, x)
    torch.testing.assert_close(g, grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(l2, lap, rtol=0, atol=1e-12)


def test_autograd_laplacian_matches_finite_differences_with_the_jastrow_factor():
    wave = _wave(2, 2, 4, 1.0, jastrow=True, scale=0.4)
    x = torch.randn(10, 4, dtype=torch.float64)
    _, _, lap = log_psi_derivatives(wave.log_psi, x)
    h = 1e-4
    fd = torch.zeros(10, dtype=torch.float64)
    with torch.no_grad():
        for k in range(4):
            e = torch.zeros(4, dtype=torch.float64)
            e[k] = h
            fd += (wave.log_psi(x + e) - 2 * wave.log_psi(x) + wave.log_psi(x - e)) / h**2
    torch.testing.assert_close(lap, fd, rtol=0, atol=1e-5)


def test_sqrt_ansatz_is_half_the_log_and_gibbs_samples_its_square():
    """psi = sqrt(F): ln psi = ln F / 2, and block Gibbs draws X from |psi|^2 = F: <X^2> against quadrature."""
    torch.manual_seed(2)
    wave = GaussianBinaryWave(1, 1, 2, 1.0, square_root=True, init_scale=0.8)
    grid = torch.linspace(-9, 9, 20001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(wave.log_psi(grid), 0.5 * wave.log_f(grid))
        f = torch.exp(wave.log_f(grid))
    exact = float((grid[:, 0] ** 2 * f).sum() / f.sum())
    g = torch.Generator().manual_seed(0)
    d = draw(make_kernel("gibbs", 0.1), Density(wave), torch.zeros(2000, 1, dtype=torch.float64), burn_in=20, samples=20,
             thin=1, generator=g)
    x2 = (d.samples**2).squeeze(-1).numpy()
    err = blocking(x2).error
    assert abs(x2.mean() - exact) < 5 * err


# -- samplers ----------------------------------------------------------------------------------
def test_langevin_acceptance_is_the_greens_function_ratio():
    """The course's importance sampling: F = 2 grad ln psi, D = 1/2, G(y, x) = exp(-(y - x - D dt F(x))^2 / (4 D dt));
    A = |psi(y)|^2 G(x, y) / (|psi(x)|^2 G(y, x)) computed directly against the kernel's."""
    wave = _wave(2, 2, 3, 1.0, jastrow=True, scale=0.5)
    dt = 0.3
    kernel = make_kernel("langevin", dt)
    x = torch.randn(40, 4, dtype=torch.float64)
    y = x + 0.5 * torch.randn(40, 4, dtype=torch.float64)
    log_a, _ = kernel.log_acceptance(Density(wave), x, y)
    _, gx, _ = log_psi_derivatives(wave.log_psi, x)
    _, gy, _ = log_psi_derivatives(wave.log_psi, y)
    fx, fy = 2 * gx, 2 * gy
    with torch.no_grad():
        psi2 = lambda z: torch.exp(2 * wave.log_psi(z))  # noqa: E731
        g_yx = torch.exp(-((y - x - 0.5 * dt * fx) ** 2).sum(1) / (4 * 0.5 * dt))
        g_xy = torch.exp(-((x - y - 0.5 * dt * fy) ** 2).sum(1) / (4 * 0.5 * dt))
        direct = psi2(y) * g_xy / (psi2(x) * g_yx)
    torch.testing.assert_close(torch.exp(log_a), direct, rtol=1e-10, atol=0)


def test_langevin_with_the_acceptance_step_has_no_time_step_bias():
    """psi = exp(-x^2/2): |psi|^2 has <x^2> = 1/2. The unadjusted Langevin chain at dt = 1 has
    <x^2> = 1 / (2 (1 - dt/2)) = 1; with the Metropolis-Hastings step it is exact."""
    wave = GaussianBinaryWave(1, 1, 1, 1.0)
    _zero(wave)
    g = torch.Generator().manual_seed(1)
    d = draw(make_kernel("langevin", 1.0), Density(wave), torch.zeros(4000, 1, dtype=torch.float64), burn_in=20, samples=30,
             thin=1, generator=g)
    x2 = (d.samples**2).squeeze(-1).numpy()
    err = blocking(x2).error
    assert abs(x2.mean() - 0.5) < 5 * err and err < 0.01
    assert 0.05 < d.acceptance < 0.99


def _spin_states(length):
    return torch.tensor(list(itertools.product([1.0, -1.0], repeat=length)), dtype=torch.float64)


@pytest.mark.parametrize("move", ["flip", "exchange"])
def test_spin_moves_obey_detailed_balance_on_two_sites(move):
    """Every state of a 2-site RBM, 40000 chains one step each: the measured transition matrix
    matches the exact Metropolis one (proposal x min(1, psi'^2/psi^2)) and pi_s T_ss' = pi_s' T_s's."""
    torch.manual_seed(3)
    wave = SpinRBMWave(2, 3, init_scale=0.7)
    states = _spin_states(2)
    with torch.no_grad():
        p = torch.exp(2 * wave.log_psi(states))
    pi = p / p.sum()
    n = 40000
    kernel = make_kernel(move, 0.1)
    g = torch.Generator().manual_seed(4)
    measured = torch.zeros(4, 4, dtype=torch.float64)
    exact = torch.zeros(4, 4, dtype=torch.float64)
    for s in range(4):
        d = draw(kernel, Density(wave), states[s].repeat(n, 1), burn_in=0, samples=1, thin=1, generator=g)
        idx = ((d.last == -1).to(torch.long) * torch.tensor([2, 1])).sum(1)  # state index of the product order
        measured[s] = torch.bincount(idx, minlength=4).double() / n
        for t in range(4):
            diff = int((states[s] != states[t]).sum())
            if move == "flip" and diff == 1:
                exact[s, t] = 0.5 * min(1.0, float(p[t] / p[s]))
            if move == "exchange" and diff == 2 and float(states[s].sum()) == 0:
                exact[s, t] = min(1.0, float(p[t] / p[s]))
        exact[s, s] = 1 - exact[s].sum()
    sd = torch.sqrt(exact * (1 - exact) / n) + 1e-12
    assert float(((measured - exact).abs() / sd).max()) < 5
    flow = pi[:, None] * measured
    assert float((flow - flow.T).abs().max()) < 5 * float(torch.sqrt(pi.max() / n))
    torch.testing.assert_close(pi[:, None] * exact, (pi[:, None] * exact).T, rtol=0, atol=1e-12)


def test_exchange_moves_keep_the_magnetisation():
    torch.manual_seed(0)
    wave = SpinRBMWave(6, 6, init_scale=0.5)
    start = torch.tensor([[1.0, 1, 1, -1, -1, -1]] * 50, dtype=torch.float64)
    d = draw(Exchange(), Density(wave), start, burn_in=5, samples=5, thin=2)
    assert torch.all(d.samples.sum(-1) == 0) and 0 < d.acceptance < 1


# -- spin Hamiltonians against exact enumeration ------------------------------------------------
_X = np.array([[0.0, 1], [1, 0]])
_Y = np.array([[0.0, -1j], [1j, 0]])
_Z = np.array([[1.0, 0], [0, -1]])


def _site(op, i, length):
    out = np.array([[1.0]])
    for k in range(length):
        out = np.kron(out, op if k == i else np.eye(2))
    return out


def _tfim_matrix(length, h, j=1.0):
    return sum(-j * _site(_Z, i, length) @ _site(_Z, (i + 1) % length, length) - h * _site(_X, i, length)
               for i in range(length))


def _heisenberg_matrix(length, j=1.0):
    return sum(0.25 * j * (_site(op, i, length) @ _site(op, (i + 1) % length, length)).real
               for i in range(length) for op in (_X, _Y, _Z))


def test_tfim_energy_estimator_is_exact_over_psi_squared_on_four_sites():
    """sum_s psi(s)^2 E_L(s) / sum_s psi(s)^2 = <psi|H|psi> / <psi|psi> (Kronecker-product H) on
    all 16 states; and the chains' estimate agrees within its blocking error."""
    torch.manual_seed(5)
    wave = SpinRBMWave(4, 8, init_scale=0.5)
    ham = TransverseIsing(4, field=0.7)
    states = _spin_states(4)  # basis order of the Kronecker products: +1 = |0>
    with torch.no_grad():
        psi = torch.exp(wave.log_psi(states)).numpy()
    e_loc = ham.local_energy(wave.log_psi, states).numpy()
    exact = psi @ _tfim_matrix(4, 0.7) @ psi / (psi @ psi)
    assert abs((psi**2 * e_loc).sum() / (psi**2).sum() - exact) < 1e-10
    g = torch.Generator().manual_seed(6)
    d = draw(make_kernel("flip", 0.1), Density(wave), states[torch.randint(0, 16, (500,), generator=g)], burn_in=40,
             samples=40, thin=4, generator=g)
    series = ham.local_energy(wave.log_psi, d.samples.reshape(-1, 4)).view(500, 40).numpy()
    b = blocking(series)
    assert abs(b.mean - exact) < 5 * b.error and b.error < 0.05


def test_heisenberg_local_energy_is_exact_for_the_marshall_signed_state():
    """E_L of the positive RBM averages to <phi|H|phi> / <phi|phi>, phi(s) = (-1)^(up spins on odd sites) psi(s)."""
    torch.manual_seed(7)
    wave = SpinRBMWave(4, 4, init_scale=0.5)
    states = _spin_states(4)
    with torch.no_grad():
        psi = torch.exp(wave.log_psi(states)).numpy()
    sign = (-1.0) ** (states[:, 1::2] > 0).sum(1).numpy()
    phi = sign * psi
    exact = phi @ _heisenberg_matrix(4) @ phi / (phi @ phi)
    e_loc = Heisenberg(4).local_energy(wave.log_psi, states).numpy()
    assert abs((psi**2 * e_loc).sum() / (psi**2).sum() - exact) < 1e-10


@pytest.mark.parametrize("length,h", [(4, 0.5), (6, 1.0), (6, 2.0), (8, 1.3)])
def test_tfim_free_fermion_energy_matches_diagonalisation(length, h):
    assert abs(TransverseIsing(length, field=h).exact_energy() - np.linalg.eigvalsh(_tfim_matrix(length, h))[0]) < 1e-9


# -- gradient and stochastic reconfiguration ----------------------------------------------------
class _Gaussian(torch.nn.Module):
    """psi = exp(-alpha x^2 / 2), one parameter."""

    def __init__(self, alpha):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.tensor(alpha, dtype=torch.float64))

    def forward(self, x):
        return -0.5 * self.alpha * (x**2).sum(-1)


def test_sr_gives_the_known_natural_gradient():
    """psi_alpha = exp(-alpha x^2/2) in a trap of frequency omega: O = -x^2/2, S = var(O) = 1/(8 alpha^2),
    f = (alpha^2 - omega^2) / (8 alpha^2), so the natural gradient S^-1 f = alpha^2 - omega^2, the plain
    gradient dE/dalpha = (alpha^2 - omega^2) / (4 alpha^2), and a diagonal shift gives f / (S + shift)."""
    from scipy.stats import norm

    alpha, omega, n = 0.7, 1.2, 200000
    x = torch.tensor(norm.ppf((np.arange(n) + 0.5) / n) / math.sqrt(2 * alpha))[:, None]  # stratified |psi|^2
    wave = _Gaussian(alpha)
    o = per_sample_log_grads(wave, x)
    torch.testing.assert_close(o[:, 0], -0.5 * x[:, 0] ** 2)
    e_loc = kinetic_energy(wave, x) + 0.5 * omega**2 * x[:, 0] ** 2
    s, f = 1 / (8 * alpha**2), (alpha**2 - omega**2) / (8 * alpha**2)
    assert abs(float(sr_direction(o, e_loc, 0.0)[0]) - (alpha**2 - omega**2)) < 1e-3
    assert abs(float(sr_direction(o, e_loc, 0.5)[0]) - f / (s + 0.5)) < 1e-4
    assert abs(float(energy_gradient(o, e_loc)[0]) - (alpha**2 - omega**2) / (4 * alpha**2)) < 1e-4


def test_the_training_surrogate_has_the_energy_gradient():
    """d/dtheta 2 <(E_L - <E_L>) ln psi> = 2 (<E_L O> - <E_L><O>), O by torch.func per sample."""
    wave = _wave(2, 2, 3, 1.0, jastrow=True, scale=0.4)
    x = torch.randn(64, 4, dtype=torch.float64)
    e_loc = HarmonicTrap(2, 2, 1.0, coulomb=True).local_energy(wave.log_psi, x)
    loss = 2 * ((e_loc - e_loc.mean()) * wave.log_psi(x)).mean()
    grads = torch.autograd.grad(loss, list(wave.parameters()))
    flat = torch.cat([g.reshape(-1) for g in grads])
    # the parameters are float32 (the arithmetic float64): their gradients are rounded to float32
    torch.testing.assert_close(flat.double(), energy_gradient(per_sample_log_grads(wave, x), e_loc), rtol=1e-6, atol=1e-7)


def test_spin_rbm_log_derivatives_match_the_closed_form():
    """Carleo & Troyer: O_a = s, O_b = tanh(theta), O_W = s_i tanh(theta_j)."""
    torch.manual_seed(8)
    wave = SpinRBMWave(5, 3, init_scale=0.5)
    s = _spin_states(5)
    theta = wave.b.detach().double() + s @ wave.w.detach().double()
    expected = torch.cat([s, torch.tanh(theta), (s[:, :, None] * torch.tanh(theta)[:, None, :]).reshape(32, -1)], 1)
    torch.testing.assert_close(per_sample_log_grads(wave, s), expected)


def test_spin_rbm_closed_form_log_grads_match_torch_func():
    """SpinRBMWave.log_grads (what SR uses) equals the per-sample autograd gradients of log psi."""
    torch.manual_seed(9)
    wave = SpinRBMWave(6, 4, init_scale=0.8)
    s = _spin_states(6)
    torch.testing.assert_close(wave.log_grads(s), per_sample_log_grads(wave, s), rtol=1e-12, atol=1e-12)


def test_log_2cosh_is_the_stable_closed_form_everywhere():
    x = torch.cat([torch.linspace(-60, 60, 24001, dtype=torch.float64), torch.tensor([-1e4, 1e4, 0.0], dtype=torch.float64)])
    expected = x.abs() + torch.log1p(torch.exp(-2 * x.abs()))
    torch.testing.assert_close(log_2cosh(x), expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(log_2cosh(torch.tensor([0.3], dtype=torch.float64)), torch.log(2 * torch.cosh(torch.tensor([0.3], dtype=torch.float64))))


def test_closed_form_flip_ratios_match_direct_evaluation():
    """log psi(s') - log psi(s) from theta (single flips, bonds, uneven masks) equals log psi of
    every flipped configuration; the Hamiltonians' local energies agree with and without it."""
    torch.manual_seed(10)
    wave = SpinRBMWave(6, 5, init_scale=0.9)
    s = _spin_states(6)
    bonds = torch.zeros(6, 6, dtype=torch.float64)
    bonds[torch.arange(6), torch.arange(6)] = 1
    bonds[torch.arange(6), (torch.arange(6) + 1) % 6] = 1
    uneven = torch.tensor([[1.0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]], dtype=torch.float64)
    with torch.no_grad():
        for masks in (torch.eye(6, dtype=torch.float64), bonds, uneven):
            flipped = s[:, None, :] * (1 - 2 * masks)[None]
            direct = wave.log_psi(flipped.reshape(-1, 6)).view(len(s), -1) - wave.log_psi(s)[:, None]
            torch.testing.assert_close(wave.log_ratios(s, masks), direct, rtol=1e-12, atol=1e-12)
    for ham in (TransverseIsing(6, field=0.8), Heisenberg(6)):
        torch.testing.assert_close(ham.local_energy(wave.log_psi, s, wave.log_ratios), ham.local_energy(wave.log_psi, s),
                                   rtol=1e-12, atol=1e-12)


def _uncached_exchange_step(target, state, generator):
    """The exchange move as it was before the cache: both free energies evaluated in full."""
    x = state.x
    n, length = x.shape
    rows = torch.arange(n)
    i = torch.randint(0, length, (n,), generator=generator)
    j = (i + torch.randint(1, length, (n,), generator=generator)) % length
    prop = x.clone()
    prop[rows, i], prop[rows, j] = x[rows, j], x[rows, i]
    log_ratio = target.free_energy(x) - target.free_energy(prop)
    accept = torch.log(torch.rand(n, generator=generator, dtype=x.dtype)) < log_ratio
    return torch.where(accept[:, None], prop, x)


@pytest.mark.parametrize("move", ["flip", "exchange"])
def test_cached_spin_moves_follow_the_uncached_chains_exactly(move):
    """With the same random stream, the moves with cached hidden fields take the same steps as
    the uncached kernels (Metropolis-Hastings' binary flip; the full-evaluation exchange), and the
    cache equals theta and sum log 2cosh(theta) of the final states."""
    torch.manual_seed(11)
    wave = SpinRBMWave(8, 8, init_scale=0.6)
    density = Density(wave)
    start = torch.tensor([[1.0, -1] * 4] * 300, dtype=torch.float64)
    kernel = SpinFlip() if move == "flip" else Exchange()
    g1, g2 = torch.Generator().manual_seed(12), torch.Generator().manual_seed(12)
    state = kernel.init(density, density.encode(start))
    ref = density.encode(start)
    mh = MetropolisHastings()
    for _ in range(60):
        state = kernel.step(density, state, g1)
        if move == "flip":
            ref = mh.step(density, ChainState(ref), g2).x
        else:
            ref = _uncached_exchange_step(density, ChainState(ref), g2)
        assert torch.equal(state.x, ref)
    with torch.no_grad():
        theta = wave.theta(density.decode(state.x))
    torch.testing.assert_close(state.theta, theta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.log_cosh, log_2cosh(theta).sum(-1), rtol=1e-12, atol=1e-12)
    assert 0.05 < float(state.stats["accept_rate"]) < 0.95


@pytest.mark.parametrize("n,p", [(50, 83), (200, 37), (64, 64)])
def test_sr_cholesky_solve_matches_the_general_solve(n, p):
    """The Cholesky solve on the lower blocks of S equals the LU solve of the full S + shift I
    (the absolute diagonal shift), with fewer and with more samples than parameters."""
    g = torch.Generator().manual_seed(n + p)
    o = torch.randn(n, p, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2, p, dtype=torch.float64)
    e_loc = torch.randn(n, generator=g, dtype=torch.float64)
    oc = o - o.mean(0)
    expected = torch.linalg.solve(oc.T @ oc / n + 0.01 * torch.eye(p, dtype=torch.float64), oc.T @ (e_loc - e_loc.mean()) / n)
    torch.testing.assert_close(sr_direction(o, e_loc, 0.01), expected, rtol=1e-9, atol=1e-9)


# -- the family: bad input, divergence, evaluation, exact resume --------------------------------
def _cfg(**model):
    doc = {"data": {"name": "none"}, "model": {"kind": "nqs", **model},
           "train": {"epochs": 4, "device": "cpu", "seed": 1}}
    return lvmkit.make_config(doc)


@pytest.mark.parametrize("model,match", [
    ({"omega": 0.0}, r"model\.omega .* must be positive"),
    ({"omega": -1.0}, r"model\.omega .* must be positive"),
    ({"particles": 3, "dims": 2, "coulomb": True}, r"antisymmetric wave function"),
    ({"system": "tfim", "omega": 2.0}, r"model\.omega does not apply to model\.system = 'tfim'"),
    ({"system": "heisenberg", "sites": 7}, r"even number of sites"),
    ({"sampler": "gibbs"}, r"psi = sqrt\(F\)"),
    ({"system": "tfim", "sampler": "exchange"}, r"use model\.sampler = 'flip'"),
])
def test_bad_input_is_one_sentence(model, match):
    with pytest.raises(lvmkit.ConfigError, match=match):
        _cfg(**model)


def test_an_acceptance_outside_5_to_99_percent_warns_with_the_rate():
    cfg = _cfg(step_size=40.0, sampler="metropolis", chains=20, samples=3, warmup=10)
    model = lvmkit.build_model(cfg.model, (1,))
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    with pytest.warns(lvmkit.LvmkitWarning, match=r"accepted \d+\.\d% of its moves, outside 5%-99%.*lower model\.step_size"):
        model.training_step(None, 0, opt)


def test_a_nan_laplacian_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    from lvmkit.models.wavefunction import vmc as vmc_module

    real = vmc_module.VMC.local_energy
    calls = {"n": 0}

    def local_energy(self, x):
        e = real(self, x)
        calls["n"] += 1
        return e * float("nan") if calls["n"] >= 3 else e  # per epoch: one training, then one validation call

    monkeypatch.setattr(vmc_module.VMC, "local_energy", local_energy)
    cfg = _cfg(chains=10, samples=3, warmup=5)
    with pytest.raises(lvmkit.TrainingDiverged, match=r"local energy .*Laplacian of ln psi.* last good checkpoint"):
        lvmkit.train(cfg, tmp_path / "run", progress=False)
    assert lvmkit.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state"]["step"] == 1


def test_evaluate_gives_energy_error_and_variance(tmp_path):
    cfg = _cfg(chains=20, samples=5, warmup=50, eval_samples=100)
    run = lvmkit.train(cfg, tmp_path / "run", progress=False)
    res = lvmkit.evaluate(run)
    stored = json.loads((run.path / "eval.json").read_text())
    assert stored["energy"] == res["energy"] and res["energy_error"] > 0 and res["variance"] > 0
    assert res["energy"] >= 0.5 - 5 * res["energy_error"]  # the variational bound
    assert res["exact_energy"] == 0.5 and res["n_samples"] == 2000
    html = lvmkit.write_report(run).read_text()
    assert "Variational Monte Carlo" in html and (run.path / "figures" / "one_body_density.png").is_file()


def test_a_killed_vmc_run_resumes_exactly(tmp_path):
    """lvmkit vmc killed (SIGKILL) before its 4th iteration, then --resume: the same weights,
    chains and energies as an uninterrupted run."""
    config = tmp_path / "c.toml"
    config.write_text('[model]\nkind = "nqs"\nsystem = "tfim"\nsites = 6\nalpha = 1.0\nchains = 20\nsamples = 4\n'
                      'warmup = 10\nsr = true\n\n[train]\nepochs = 6\ndevice = "cpu"\n')
    straight = run_cli("vmc", str(config), "--out", str(tmp_path / "a"), "-q")
    assert straight.returncode == 0, straight.stderr
    env = dict(os.environ, LVMKIT_FAULT_KILL_AT_STEP="0:3")  # the loop's test hook: SIGKILL before step 3
    killed = subprocess.run([sys.executable, "-m", "lvmkit", "vmc", str(config), "--out", str(tmp_path / "b"), "-q"],
                            capture_output=True, text=True, env=env, timeout=240)
    assert killed.returncode != 0
    assert lvmkit.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["state"]["step"] == 3
    resumed = run_cli("vmc", "--resume", str(tmp_path / "b"), "-q")
    assert resumed.returncode == 0, resumed.stderr
    a = lvmkit.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = lvmkit.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0, msg=k)
    ea = [m["train_energy"] for m in lvmkit.Run.open(tmp_path / "a").read_metrics()]
    eb = [m["train_energy"] for m in lvmkit.Run.open(tmp_path / "b").read_metrics()]
    assert ea == eb and len(ea) == 6


def test_vmc_cli_refuses_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nkind = "nqs"\nomega = -1.0\n')
    res = run_cli("vmc", str(bad))
    assert res.returncode == 2 and "model.omega" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    other = tmp_path / "vae.toml"
    other.write_text('[model]\nkind = "vae"\n')
    res = run_cli("vmc", str(other))
    assert res.returncode == 2 and "lvmkit train" in res.stderr


@pytest.mark.parametrize("name", ["vmc_ho_1d.toml", "vmc_dots_2e.toml", "vmc_tfim_L20.toml", "vmc_heisenberg_L20.toml"])
def test_shipped_vmc_configs_train_two_iterations(name, tmp_path):
    from conftest import CONFIGS
    from lvmkit.training.vmc import load_vmc_config, vmc

    cfg = load_vmc_config(CONFIGS / name, ["train.epochs=2", "model.chains=8", "model.warmup=4", "model.samples=2"])
    run = vmc(cfg, tmp_path / "run", progress=False)
    energies = [m["train_energy"] for m in run.read_metrics()]
    assert len(energies) == 2 and all(math.isfinite(e) for e in energies)
