"""Boltzmann machines: energies by enumeration, partition functions, CD gradients, chain samplers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import lvmkit
from lvmkit import ConfigError, LvmkitWarning
from lvmkit.models.energy.boltzmann import RBMEnergy, _states, ais_log_z, exact_log_z
from lvmkit.models.mcmc.chains import MCMC_SAMPLERS, Gibbs, MetropolisHastings

from conftest import run_cli


def _rbm(nv, nh, visible="binary", scale=1.0, seed=0):
    torch.manual_seed(seed)
    r = RBMEnergy(nv, nh, visible)
    with torch.no_grad():
        r.W.normal_(0, scale)
        r.a.normal_(0, scale)
        r.b.normal_(0, scale)
        if visible == "gaussian":
            r.log_sigma.normal_(0, 0.2)
    return r.double()


@torch.no_grad()
def _joint_log_z(r):
    xs, hs = _states(r.n_visible, 0, 1 << r.n_visible, "cpu", torch.float64), _states(r.n_hidden, 0, 1 << r.n_hidden, "cpu", torch.float64)
    e = torch.stack([r.energy(xs, h.expand(len(xs), -1)) for h in hs])
    return float(torch.logsumexp(-e.flatten(), 0)), xs


@torch.no_grad()
def test_free_energy_is_minus_log_sum_over_hidden_states_and_log_z_matches_brute_force():
    for nv, nh in ((4, 3), (3, 5)):  # both enumeration directions of exact_log_z
        r = _rbm(nv, nh)
        log_z, xs = _joint_log_z(r)
        hs = _states(nh, 0, 1 << nh, "cpu", torch.float64)
        by_hand = -torch.logsumexp(torch.stack([-r.energy(xs, h.expand(len(xs), -1)) for h in hs]), 0)
        torch.testing.assert_close(r.free_energy(xs), by_hand)
        assert exact_log_z(r) == pytest.approx(log_z, abs=1e-9)


@torch.no_grad()
def test_gaussian_binary_conditionals_free_energy_and_log_z():
    r = _rbm(1, 2, "gaussian", scale=0.7)
    s2 = float(torch.exp(2 * r.log_sigma))
    a, W, b = float(r.a), r.W[0].detach(), r.b.detach()
    x = torch.tensor([[0.3]], dtype=torch.float64)
    # p(h_j = 1 | x) = sigmoid(b_j + x W_j / s^2); x | h ~ N(a + W h, s^2)
    torch.testing.assert_close(r.p_h(x)[0], torch.sigmoid(b + 0.3 * W / s2))
    h = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(r.visible_mean(h)) == pytest.approx(a + float(W[0]))
    # the energy's x-dependence is that Gaussian's: E(x, h) - E(x', h) = (x - mu)^2/2s^2 - (x' - mu)^2/2s^2
    mu = a + float(W[0])
    e = lambda v: float(r.energy(torch.tensor([[v]], dtype=torch.float64), h))  # noqa: E731
    assert e(1.1) - e(-0.4) == pytest.approx(((1.1 - mu) ** 2 - (-0.4 - mu) ** 2) / (2 * s2))
    # log Z = log sum_h int exp(-E(x, h)) dx by quadrature
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.float64)[:, None]
    hs = _states(2, 0, 4, "cpu", torch.float64)
    dens = sum(torch.exp(-r.energy(grid, hh.expand(len(grid), -1))) for hh in hs)
    assert exact_log_z(r) == pytest.approx(math.log(float(torch.trapezoid(dens, grid[:, 0]))), rel=1e-6)
    f = r.free_energy(grid)
    assert float(torch.trapezoid(torch.exp(-f - exact_log_z(r)), grid[:, 0])) == pytest.approx(1.0, rel=1e-6)


def test_exact_log_z_refuses_too_many_units():
    with pytest.raises(ConfigError, match=r"enumerates 2\^21 states .* limit of 2\^20; use annealed importance sampling"):
        exact_log_z(RBMEnergy(30, 21))


@pytest.mark.parametrize("visible", ["binary", "gaussian"])
def test_ais_brackets_the_exact_log_z(visible):
    r = _rbm(24 if visible == "binary" else 10, 14, visible, scale=0.3, seed=1)
    base = torch.zeros(r.n_visible, dtype=torch.float64)
    res = ais_log_z(r, base, runs=100, temperatures=2000, generator=torch.Generator().manual_seed(0))
    exact = exact_log_z(r)
    assert res.lower <= exact <= res.upper and res.upper - res.lower < 1.0
    assert abs(res.log_z - exact) < 0.2


def test_ais_under_estimates_log_z_on_average():
    # E[w] = Z/Z_A, so by Jensen E[log mean w] <= log Z: with few temperatures the bias shows
    r = _rbm(20, 12, scale=0.6, seed=2)
    exact = exact_log_z(r)
    g = torch.Generator().manual_seed(1)
    est = [ais_log_z(r, torch.zeros(20, dtype=torch.float64), runs=10, temperatures=20, generator=g).log_z for _ in range(40)]
    assert np.mean(est) < exact


def test_ais_needs_two_temperatures_and_runs():
    r = RBMEnergy(4, 3)
    with pytest.raises(ConfigError, match=r"AIS needs at least 2 temperatures, got 1"):
        ais_log_z(r, torch.zeros(4), temperatures=1)
    with pytest.raises(ConfigError, match=r"AIS needs at least 2 runs"):
        ais_log_z(r, torch.zeros(4), runs=1)


def _exact_marginal(r):
    xs = _states(r.n_visible, 0, 1 << r.n_visible, "cpu", torch.float64)
    logp = -r.free_energy(xs) - exact_log_z(r)
    return xs, logp.exp()


@pytest.mark.parametrize("sampler, steps", [(Gibbs(), 30), (MetropolisHastings(), 150)])
def test_chains_sample_the_exact_distribution(sampler, steps):
    r = _rbm(4, 3, scale=1.0, seed=3)
    xs, p = _exact_marginal(r)
    g = torch.Generator().manual_seed(4)
    x0 = (torch.rand(20_000, 4, generator=g) < 0.5).double()
    x, _ = sampler.replace(steps=steps).run(r, x0, generator=g)
    idx = (x.long() * (1 << torch.arange(4))).sum(1)
    counts = np.bincount(idx.numpy(), minlength=16)
    chi2 = stats.chisquare(counts, p.detach().numpy() * len(x))
    assert chi2.pvalue > 1e-3, (counts, (p * len(x)).round())
    # and a wrong target is rejected by the same test: the chain is informative
    wrong = np.roll(p.detach().numpy(), 1)
    assert stats.chisquare(counts, wrong / wrong.sum() * len(x)).pvalue < 1e-6


def _exact_w_gradient(r, data):
    # gradient of mean log p(data) wrt W: <x p(h|x)>_data - <x p(h|x)>_model
    xs, p = _exact_marginal(r)
    return (data.t() @ r.p_h(data) / len(data) - (xs * p[:, None]).t() @ r.p_h(xs)).detach()


def _surrogate_error(r, chains, data, exact, state=None):
    """Relative error of the training surrogate's W gradient (the path training_step takes)."""
    r.zero_grad()
    loss, _, neg = chains.train(r, data, torch.zeros(0, r.n_visible, dtype=data.dtype) if state is None else state)
    loss.backward()
    return float((-r.W.grad - exact).norm() / exact.norm()), neg


def test_cd_gradient_approaches_the_exact_gradient_as_k_grows():
    from lvmkit.models.energy.rbm import _Chains

    r = _rbm(5, 4, scale=1.2, seed=5)
    data = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0], [1, 1, 0, 0, 1]], dtype=torch.float64).repeat(20_000, 1)
    exact = _exact_w_gradient(r, data[:3])
    errors = {}
    for k in (1, 50):
        torch.manual_seed(0)
        errors[k] = _surrogate_error(r, _Chains(Gibbs(), k, persistent=False), data, exact)[0]
    assert errors[50] < 0.05 < errors[1]
    # the generic path (sample visible states, then score them) gives the same gradient
    torch.manual_seed(0)
    neg, _ = Gibbs(steps=50).run(r, data)
    r.zero_grad()
    (r.free_energy(data).mean() - r.free_energy(neg).mean()).backward()
    assert float((-r.W.grad - exact).norm() / exact.norm()) < 0.05


def test_persistent_chains_continue_from_their_stored_states():
    from lvmkit.models.energy.rbm import _Chains

    r = _rbm(5, 4, scale=1.2, seed=5)
    data = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0], [1, 1, 0, 0, 1]], dtype=torch.float64).repeat(20_000, 1)
    exact = _exact_w_gradient(r, data[:3])
    chains = _Chains(Gibbs(), 1, persistent=True)
    torch.manual_seed(0)
    first, neg = _surrogate_error(r, chains, data, exact)
    for _ in range(40):  # PCD-1 with frozen weights: the chains mix towards the model
        err, neg = _surrogate_error(r, chains, data, exact, neg)
    assert err < 0.05 < first


def test_chain_sampler_settings():
    with pytest.raises(ConfigError, match=r"A chain needs a positive number of steps, got 0"):
        Gibbs(steps=0)
    with pytest.raises(ConfigError, match=r"Unknown chain sampler 'hmc'"):
        MCMC_SAMPLERS.get("hmc")
    with pytest.raises(ConfigError, match=r"model.cd_steps"):
        lvmkit.make_config({"model": {"kind": "rbm", "cd_steps": 0}})
    with pytest.raises(ConfigError, match=r"model.log_z = 'exact' enumerates 2\^64 states"):
        lvmkit.build_model(lvmkit.make_config({"model": {"kind": "rbm", "hidden": 100, "log_z": "exact"}}).model, (64,))


def _cfg(tmp_path=None, **model):
    return lvmkit.make_config({"data": {"name": "digits", "binarize": "static", "limit": 800},
                               "model": {"kind": "rbm", "hidden": 16, **model},
                               "train": {"epochs": 3, "batch_size": 64}})


def test_rbm_trains_evaluates_samples_and_encodes(tmp_path):
    run = lvmkit.train(_cfg(persistent=True, sample_steps=20), tmp_path / "rbm", progress=False)
    res = lvmkit.evaluate(run)
    # 16 hidden units: log Z is exact, so the likelihood is too
    assert res["estimator"] == "exact (enumeration)" and res["log_likelihood"] == res["log_likelihood_lower"]
    assert -44 < res["log_likelihood"] < -15  # nats over 64 binary pixels (uniform: -44.4)
    model = run.load_model()
    x = run.data().test.x
    with torch.no_grad():
        assert float((-model.energy(x) - exact_log_z(model.layer)).mean()) == pytest.approx(res["log_likelihood"], rel=1e-5)
    s = lvmkit.sample(run, 5, steps=10)
    assert s.shape == (5, 1, 8, 8)
    assert lvmkit.LatentEncoder(run).fit().transform(x[:3]).shape == (3, 16)
    # the free energy is an anomaly score: digits against the same digits with pixels flipped
    scores = lvmkit.SCORES.get("energy")()
    with torch.no_grad():
        normal, flipped = scores(model, x), scores(model, 1 - x)
    assert np.median(flipped) > np.median(normal) + 5
    r = run_cli("sample", str(run.path), "--sampler", "mh", "--steps", "5", "--out", str(tmp_path / "s.npy"))
    assert r.returncode == 0, r.stderr
    page = lvmkit.write_report(run).read_text()
    assert "Sampling chain" in page and (run.figures / "filters.png").is_file()
    r = run_cli("sample", str(run.path), "--sampler", "gibbs", "--eta", "0.3", "--out", str(tmp_path / "s.npy"))
    assert r.returncode == 2 and "Gibbs sampling takes no eta" in r.stderr


def test_binary_rbm_on_grey_levels_is_an_error_and_gaussian_units_warn_on_raw_data(tmp_path):
    grey = lvmkit.make_config({"data": {"name": "digits"}, "model": {"kind": "rbm", "hidden": 4}, "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"A binary RBM needs visible data in \{0, 1\}.*set data.binarize = 'dynamic'"):
        lvmkit.train(grey, tmp_path / "grey", progress=False)
    raw = lvmkit.make_config({"data": {"name": "digits", "scale": "none"}, "model": {"kind": "rbm", "visible": "gaussian", "hidden": 4},
                              "train": {"epochs": 1}})
    with pytest.warns(LvmkitWarning, match=r"Gaussian visible units with sigma fixed at 1 expect standardised data"):
        lvmkit.train(raw, tmp_path / "raw", progress=False)


def test_dbn_trains_layer_by_layer(tmp_path):
    cfg = lvmkit.make_config({"data": {"name": "digits", "binarize": "static"},
                              "model": {"kind": "dbn", "hidden": [32, 8], "layer_steps": 40},
                              "train": {"epochs": 4, "batch_size": 64}})
    run = lvmkit.train(cfg, tmp_path / "dbn", progress=False)
    layers = [m["train_layer"] for m in run.read_metrics()]
    assert layers[0] == 0 and layers[-1] == 1  # ~23 steps per epoch: layer 0 first, then layer 1
    model = run.load_model()
    assert lvmkit.LatentEncoder(run).fit().transform(run.data().test.x[:2]).shape == (2, 8)
    assert model.sample(3, steps=5).shape == (3, 1, 8, 8)


def test_a_diverging_gaussian_rbm_stops_with_the_last_good_checkpoint_and_advice(tmp_path):
    from lvmkit import TrainingDiverged

    cfg = lvmkit.make_config({"data": {"name": "digits", "scale": "none", "limit": 300},
                              "model": {"kind": "rbm", "visible": "gaussian", "learn_sigma": True, "hidden": 8},
                              "train": {"epochs": 5, "batch_size": 50, "lr": 5.0, "grad_clip": 0}})
    with pytest.raises(TrainingDiverged, match=r"energies of a Gaussian-binary RBM ran off: "
                       r"lower train.lr.*model.learn_sigma = false"):
        lvmkit.train(cfg, tmp_path / "grbm", progress=False)
    assert (tmp_path / "grbm" / "checkpoints" / "last.pt").is_file()
