"""The one sampler interface (``init``/``step``/``run``, chains in and out): one transition of each
kernel against exact distributions, ``run`` as the loop of ``step``, and the validation of sampler
options by the samplers a family lists (in Python and at the CLI)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import lvmkit
from lvmkit import ConfigError
from lvmkit.models.diffusion.process import NOISE_SCHEDULES, GaussianDiffusion
from lvmkit.models.diffusion.samplers import DDIM, Ancestral, ReverseProcess
from lvmkit.models.energy.boltzmann import RBMEnergy, _states
from lvmkit.models.mcmc.base import ChainState, choose_sampler
from lvmkit.models.mcmc.chains import Gibbs, MetropolisHastings
from lvmkit.models.mcmc.langevin import Langevin

from conftest import run_cli


# -- one transition of each Boltzmann kernel on an enumerable RBM ---------------------------------
def _tiny_rbm() -> RBMEnergy:
    """3 binary visible and 2 hidden units, weights large enough that p(x) is far from uniform."""
    torch.manual_seed(11)
    r = RBMEnergy(3, 2, "binary")
    with torch.no_grad():
        r.W.normal_(0, 1.5)
        r.a.normal_(0, 1.0)
        r.b.normal_(0, 1.0)
    return r.double()


@torch.no_grad()
def _exact(r: RBMEnergy):
    """By enumeration of the joint energy E(x, h) alone: the states, p(x), and the exact one-step
    transition matrices of block Gibbs (sum_h p(h | x) p(x' | h)) and of Metropolis-Hastings
    with a uniformly chosen site flipped (1/3 min(1, p(x') / p(x)) to each neighbour)."""
    xs, hs = _states(3, 0, 8, "cpu", torch.float64), _states(2, 0, 4, "cpu", torch.float64)
    e = torch.stack([r.energy(xs, h.expand(8, -1)) for h in hs], 1)  # (x, h)
    joint = torch.exp(-e) / torch.exp(-e).sum()
    px = joint.sum(1)
    h_given_x = joint / joint.sum(1, keepdim=True)
    x_given_h = joint / joint.sum(0, keepdim=True)  # column h: p(x | h)
    gibbs = h_given_x @ x_given_h.t()
    mh = torch.zeros(8, 8, dtype=torch.float64)
    for i in range(8):
        for site in range(3):
            j = i ^ (1 << site)  # _states' bit order: unit k is bit k of the index
            mh[i, j] = min(1.0, float(px[j] / px[i])) / 3
        mh[i, i] = 1 - mh[i].sum()
    return xs, px, gibbs, mh


def _index(x: torch.Tensor) -> torch.Tensor:
    return (x.long() * (1 << torch.arange(x.shape[1]))).sum(1)


@torch.no_grad()
def _empirical_kernel(sampler, r, xs, chains=20_000, seed=0):
    """One ``step`` of ``chains`` parallel chains from each of the 8 states: counts (from, to)."""
    g = torch.Generator().manual_seed(seed)
    start = xs.repeat_interleave(chains, 0)
    state = sampler.step(r, sampler.init(r, start), g)
    assert state.i == 1 and torch.equal(state.x.unique(), torch.tensor([0.0, 1.0], dtype=torch.float64))
    counts = np.zeros((8, 8))
    np.add.at(counts, (_index(start).numpy(), _index(state.x).numpy()), 1)
    return counts


def test_the_exact_kernels_are_reversible_with_respect_to_p_x():
    # the oracle itself: both kernels satisfy detailed balance, so p(x) is invariant
    _, px, gibbs, mh = _exact(_tiny_rbm())
    for k in (gibbs, mh):
        flow = px[:, None] * k
        torch.testing.assert_close(flow, flow.t())
        torch.testing.assert_close(px @ k, px)
        torch.testing.assert_close(k.sum(1), torch.ones(8, dtype=torch.float64))
    assert float(px.max() / px.min()) > 5  # far from uniform: a wrong acceptance rule shows


@pytest.mark.parametrize("sampler, kernel", [(Gibbs(), 2), (MetropolisHastings(), 3)])
def test_one_step_of_each_chain_kernel_is_its_exact_transition_matrix(sampler, kernel):
    r = _tiny_rbm()
    xs, px, *exact = _exact(r)
    k = exact[kernel - 2].numpy()
    counts = _empirical_kernel(sampler, r, xs)
    n = counts.sum(1)
    assert (counts[k == 0] == 0).all()  # MH moves one site at most
    for row in range(8):  # each row against the exact transition probabilities
        support = k[row] > 0
        assert stats.chisquare(counts[row, support], k[row, support] * n[row]).pvalue > 1e-4, (row, counts[row])
    # so one step leaves p(x) invariant and balances the flows, within the counts' noise
    k_hat = counts / n[:, None]
    p = px.numpy()
    se = np.sqrt(((p[:, None] ** 2) * k_hat * (1 - k_hat) / n[:, None]).sum(0))
    assert (np.abs(p @ k_hat - p) < 5 * se + 1e-12).all()
    flow = p[:, None] * k_hat
    flow_se = p[:, None] * np.sqrt(k_hat * (1 - k_hat) / n[:, None])
    assert (np.abs(flow - flow.T) < 5 * np.hypot(flow_se, flow_se.T) + 1e-12).all()
    # and the test tells the two kernels apart: the other kernel's rows are rejected
    other = exact[3 - kernel].numpy()
    assert min(stats.chisquare(counts[row], other[row] * n[row] + 1e-300).pvalue for row in range(8)) < 1e-6


def test_metropolis_hastings_reports_its_acceptance_rate_in_the_state():
    r = _tiny_rbm()
    xs, px, _, mh = _exact(r)
    g = torch.Generator().manual_seed(1)
    start = xs.repeat_interleave(20_000, 0)
    state = MetropolisHastings().step(r, ChainState(start), g)
    moved = float((state.x != start).any(1).double().mean())
    assert float(state.stats["accept_rate"]) == pytest.approx(moved, abs=1e-6)
    assert moved == pytest.approx(float((1 - mh.diagonal()).mean()), abs=4 * math.sqrt(0.25 / len(start)))


# -- one transition of Langevin and of the diffusion samplers ---------------------------------------
@pytest.mark.parametrize("noise", [1.0, 0.5])
def test_one_langevin_step_leaves_its_discretised_stationary_law_invariant(noise):
    """On E = (x - mu)^2 / (2 s^2) the update is the AR(1) x' - mu = (1 - eps/s^2)(x - mu) +
    noise sqrt(2 eps) z, whose stationary law is N(mu, 2 eps noise^2 / (1 - (1 - eps/s^2)^2)):
    at eps = s^2 / 2 that is 4/3 noise^2 s^2, far from the exact s^2 (a wrong step fails)."""
    mu, s, eps, n = 0.7, 0.8, 0.32, 400_000
    var = 2 * eps * noise**2 / (1 - (1 - eps / s**2) ** 2)
    g = torch.Generator().manual_seed(2)
    x = mu + math.sqrt(var) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    sampler = Langevin(steps=1, step_size=eps, noise=noise, grad_clip=0.0)
    energy = lambda v: (v - mu).pow(2).sum(1) / (2 * s**2)  # noqa: E731
    out = sampler.step(energy, sampler.init(energy, x), g).x
    assert float(out.mean()) == pytest.approx(mu, abs=4 * math.sqrt(var / n))
    assert float(out.var()) / var == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    assert float(((out - mu) * (x - mu)).mean()) / var == pytest.approx(1 - eps / s**2, abs=0.01)


def _diffusion(T=60):
    return GaussianDiffusion(NOISE_SCHEDULES.get("linear")(T), "eps", "fixed-small")


def _oracle(d, x0):
    def denoise(xt, t):  # the exact noise of x_t for the one data point x0
        ab = d.abar[t].double().reshape(-1, *([1] * (xt.dim() - 1)))
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt(), None
    return denoise


@pytest.mark.parametrize("sampler", [Ancestral(), DDIM(12, 0.0), DDIM(12, 0.6)])
def test_one_diffusion_step_maps_the_forward_marginal_at_t_to_that_at_the_next_timestep(sampler):
    """With the exact denoiser of a point mass at x0, q(x_t | x0) = N(sqrt(abar_t) x0, 1 - abar_t)
    is carried by one step to q(x_t' | x0) at the sampler's next timestep t' (the posterior for
    the ancestral sampler; Song et al.'s marginal-preserving family for DDIM, any eta)."""
    d, x0, n = _diffusion(), 0.3, 400_000
    target = ReverseProcess(d, _oracle(d, x0))
    ts = sampler.timesteps(d.T)
    i = len(ts) // 2
    t, t_next = ts[i], ts[i + 1]
    g = torch.Generator().manual_seed(3)
    ab, ab_next = float(d.abar[t]), float(d.abar[t_next])
    x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    before = g.get_state()
    out = sampler.step(target, ChainState(x, i), g)
    assert out.i == i + 1 and sampler.label(target, out) == f"t={t_next + 1}"
    assert float(out.x.mean()) == pytest.approx(math.sqrt(ab_next) * x0, abs=4 * math.sqrt((1 - ab_next) / n))
    assert float(out.x.var()) / (1 - ab_next) == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    # a deterministic sampler draws nothing; the others one noise per chain
    assert torch.equal(g.get_state(), before) == (not sampler.stochastic)


@pytest.mark.parametrize("sampler, target, x", [
    (Gibbs(steps=4), _tiny_rbm(), torch.ones(5, 3, dtype=torch.float64)),
    (MetropolisHastings(steps=6), _tiny_rbm(), torch.zeros(5, 3, dtype=torch.float64)),
    (Langevin(steps=5, step_size=0.1, noise=1.0, grad_clip=0.0), lambda v: v.pow(2).sum(1), torch.ones(5, 2)),
    (Ancestral(), ReverseProcess(_diffusion(9), lambda x, t: (0.5 * x, None)), torch.ones(5, 2)),
    (DDIM(4, 0.5), ReverseProcess(_diffusion(9), lambda x, t: (0.5 * x, None)), torch.ones(5, 2)),
])
def test_run_is_init_then_its_steps_and_keeps_an_evenly_spaced_strip(sampler, target, x):
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    out, strip = sampler.run(target, x, generator=g1, keep=3)
    state, states = sampler.init(target, x), []
    for _ in range(sampler.n_steps(target)):
        states.append(state)
        state = sampler.step(target, state, g2)
    states.append(state)
    torch.testing.assert_close(out, state.x, rtol=0, atol=0)
    n = sampler.n_steps(target)
    expected = [states[0], states[round(n / 2)], states[n]]
    assert [label for label, _ in strip] == [sampler.label(target, s) for s in expected]
    for (_, kept), s in zip(strip, expected):
        torch.testing.assert_close(kept, s.x, rtol=0, atol=0)
    assert [label for label, _ in sampler.run(target, x, keep=1)[1]] == [sampler.label(target, states[n])]


# -- options, validated by the samplers a family lists ----------------------------------------------
def _model(doc: dict, shape):
    return lvmkit.build_model(lvmkit.make_config({"model": doc}).model, shape)


def test_an_rbm_refuses_options_its_chain_samplers_do_not_take():
    rbm = _model({"kind": "rbm", "hidden": 3, "sample_steps": 7}, (4,))
    assert list(rbm.samplers) == ["gibbs", "mh"] and rbm.default_sampler == Gibbs(steps=7)
    menu = r"gibbs \(steps\) or mh \(steps, proposal\)"
    with pytest.raises(ConfigError, match=rf"^No sampler of this RBM takes eta: it samples with {menu}; leave eta out\.$"):
        rbm.make_sampler(eta=0.5)
    with pytest.raises(ConfigError, match=rf"^Gibbs sampling takes no eta; this RBM samples with {menu}: leave eta out\.$"):
        rbm.make_sampler("gibbs", eta=0.5)
    with pytest.raises(ConfigError, match=r"^Gibbs sampling takes no proposal; .*: leave proposal out or choose mh\.$"):
        rbm.make_sampler("gibbs", proposal=0.2)
    with pytest.raises(ConfigError, match=rf"^Unknown sampler 'hmc' for this RBM; choose one of: {menu}\.$"):
        rbm.make_sampler("hmc")
    with pytest.raises(ConfigError, match=r"A chain needs a positive number of steps, got 0"):
        rbm.make_sampler(steps=0)
    # without a name: the default if it takes the options, else the first sampler that does
    assert rbm.make_sampler(steps=3) == Gibbs(steps=3)
    assert rbm.make_sampler(proposal=0.3) == MetropolisHastings(steps=7, proposal=0.3)
    mh_first = _model({"kind": "rbm", "hidden": 3, "sampler": "mh", "sample_steps": 2}, (4,))
    assert list(mh_first.samplers) == ["mh", "gibbs"] and mh_first.make_sampler(steps=5) == MetropolisHastings(steps=5)


def test_a_ddpm_chooses_ddim_for_eta_and_checks_steps_against_t():
    ddpm = _model({"kind": "ddpm", "timesteps": 20, "channels": [4]}, (3,))
    assert list(ddpm.samplers) == ["ancestral", "ddim"]
    assert ddpm.make_sampler(eta=0.5) == DDIM(steps=20, eta=0.5)  # DDIM's 50 steps capped at T
    with pytest.raises(ConfigError, match=r"^The ancestral sampler takes no eta; this DDPM samples with ancestral "
                                          r"\(steps = T only\) or ddim \(steps, eta\): leave eta out or choose ddim\.$"):
        ddpm.make_sampler("ancestral", eta=0.5)
    with pytest.raises(ConfigError, match=r"DDIM steps \(80\) cannot exceed the model's T = 20"):
        ddpm.make_sampler("ddim", steps=80)
    with pytest.raises(ConfigError, match=r"The ancestral sampler takes all T = 20 steps, not 5"):
        ddpm.make_sampler(steps=5)
    with pytest.raises(ConfigError, match=r"The ancestral sampler takes no eta; this DDPM samples with"):
        lvmkit.make_config({"model": {"kind": "ddpm", "eta": 0.3}})
    cfg = lvmkit.make_config({"model": {"kind": "ddpm", "sampler": "ddim", "sample_steps": 8, "eta": 0.2}})
    assert lvmkit.build_model(cfg.model, (3,)).default_sampler == DDIM(8, 0.2)


def test_an_ebm_takes_langevin_options_but_not_eta():
    ebm = _model({"kind": "ebm", "hidden": [4], "buffer_size": 8, "langevin": {"steps": 3}}, (2,))
    chosen = ebm.make_sampler(step_size=0.5, steps=2)
    assert (chosen.step_size, chosen.steps, chosen.bounds) == (0.5, 2, (0.0, 1.0))  # the data range stays
    with pytest.raises(ConfigError, match=r"^No sampler of this EBM takes eta: it samples with langevin "
                                          r"\(steps, step_size, noise, grad_clip\); leave eta out\.$"):
        ebm.make_sampler(eta=0.5)
    with pytest.raises(ConfigError, match=r"^Langevin takes no bounds; it takes steps, step_size, noise, grad_clip\.$"):
        ebm.default_sampler.replace(bounds=(0.0, 2.0))


def test_each_sampler_declares_its_options_and_refuses_others():
    assert DDIM().replace(eta=0.4, steps=None) == DDIM(50, 0.4)  # None leaves a setting
    with pytest.raises(ConfigError, match=r"^Gibbs sampling takes no eta; it takes steps\.$"):
        Gibbs().replace(eta=0.1)
    with pytest.raises(ConfigError, match=r"^DDIM takes no proposal or step_size; it takes steps, eta\.$"):
        DDIM().replace(proposal=1.0, step_size=0.1)
    samplers = {"mh": MetropolisHastings(), "langevin": Langevin()}
    with pytest.raises(ConfigError, match=r"^No sampler of this model takes proposal, step_size together: .*"
                                          r"choose a sampler by name and give only its options\.$"):
        choose_sampler(samplers, None, {"proposal": 0.2, "step_size": 0.1}, "model")


@pytest.mark.slow
def test_eta_on_an_rbm_run_is_one_line_and_exit_2_at_the_cli(tmp_path):
    cfg = lvmkit.make_config({"data": {"name": "digits", "binarize": "static", "limit": 100},
                              "model": {"kind": "rbm", "hidden": 4, "sample_steps": 3},
                              "train": {"epochs": 1, "batch_size": 50}})
    run = lvmkit.train(cfg, tmp_path / "rbm", progress=False)
    line = ("No sampler of this RBM takes eta: it samples with gibbs (steps) or mh (steps, proposal); "
            "leave eta out.")
    for command in (["sample", str(run.path), "--eta", "0.5", "--out", str(tmp_path / "s.npy")],
                    ["quality", str(run.path), "--n", "20", "--eta", "0.5"]):
        r = run_cli(*command)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(line), r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "s.npy").exists()
