"""Gaussian diffusion: schedules, closed forms, the bound, samplers, the DDPM family end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import ConfigError
from lvmkit.models.diffusion.process import NOISE_SCHEDULES, GaussianDiffusion, discretized_gaussian_log_likelihood
from lvmkit.models.parts.distributions import kl_normal_terms
from lvmkit.models.diffusion.samplers import DDIM, SAMPLERS, Ancestral, ReverseProcess

from conftest import run_cli

torch.set_default_dtype(torch.float32)


def _diffusion(T=50, schedule="linear", target="eps", variance="fixed-small"):
    return GaussianDiffusion(NOISE_SCHEDULES.get(schedule)(T), target, variance)


# -- schedules and closed forms ------------------------------------------------------------------
def test_linear_schedule_is_ho_et_al_at_T_1000_and_cosine_is_monotone_to_near_zero():
    b = NOISE_SCHEDULES.get("linear")(1000)
    assert float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    for T in (10, 100, 1000):
        abar = torch.cumprod(1 - NOISE_SCHEDULES.get("cosine")(T), 0)
        assert (abar[1:] < abar[:-1]).all() and float(abar[-1]) < 1e-4 and float(abar[0]) > 1 - 0.5 / T
        # abar follows f(t)/f(0) with f = cos^2(((t/T) + s)/(1 + s) pi/2) except where beta is clipped
        t = torch.arange(1, T + 1, dtype=torch.float64)
        f = lambda u: torch.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        torch.testing.assert_close(abar[: T // 2], (f(t) / f(torch.zeros(1, dtype=torch.float64)))[: T // 2])
        lin = torch.cumprod(1 - NOISE_SCHEDULES.get("linear")(T), 0)
        assert float(lin[-1]) < 1e-3  # the scaled ends keep x_T close to pure noise for any T


def test_forward_marginals_match_the_schedule_by_sampling():
    d = _diffusion(T=100)
    x0 = torch.full((200_000, 1), 0.6)
    g = torch.Generator().manual_seed(0)
    for s in (0, 30, 99):
        t = torch.full((len(x0),), s, dtype=torch.long)
        xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        ab = float(d.abar[s])
        assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 0.6, abs=4 * math.sqrt((1 - ab) / len(x0)) + 1e-6)
        assert float(xt.var()) == pytest.approx(1 - ab, rel=0.02, abs=1e-6)
        mean, var = d.q_mean_var(x0[:1], t[:1])
        assert float(mean) == pytest.approx(math.sqrt(ab) * 0.6, rel=1e-5) and float(var) == pytest.approx(1 - ab, rel=1e-4)


def test_posterior_matches_bayes_rule_on_the_two_gaussians():
    # q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): a product of Gaussians.
    d = _diffusion(T=30)
    x0, xt = torch.tensor([[0.3]]), torch.tensor([[-0.7]])
    for s in (1, 10, 29):
        t = torch.tensor([s])
        beta, ab_prev = float(d.betas[s]), float(d.abar[s - 1])
        # x_t | x_{t-1} ~ N(sqrt(1 - beta) x_{t-1}, beta); x_{t-1} | x_0 ~ N(sqrt(ab_prev) x0, 1 - ab_prev)
        prec = (1 - beta) / beta + 1 / (1 - ab_prev)
        mean = (math.sqrt(1 - beta) * (-0.7) / beta + math.sqrt(ab_prev) * 0.3 / (1 - ab_prev)) / prec
        m, v, logv = d.q_posterior(x0, xt, t)
        assert float(m) == pytest.approx(mean, rel=1e-6) and float(v) == pytest.approx(1 / prec, rel=1e-6)
        assert float(logv) == pytest.approx(math.log(1 / prec), rel=1e-6)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_each_parameterisation_inverts_to_the_true_x0_and_noise(target):
    d = _diffusion(T=40, target=target)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(8, 3, generator=g) * 2 - 1, torch.randn(8, 3, generator=g)
    t = torch.randint(0, 40, (8,), generator=g)
    xt = d.q_sample(x0, t, noise)
    x0_hat, eps_hat = d.predict_x0_eps(d.target_of(x0, noise, t), xt, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, noise, atol=1e-4, rtol=1e-4)


def test_discretized_decoder_sums_to_one_over_the_256_levels():
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in ((0.1, -2.0), (-0.95, -4.0), (0.99, 0.5)):
        p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)).exp()
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)


def test_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    z = 0.3 + 0.5 * torch.randn(400_000, generator=g)
    lp = lambda x, m, s: -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)  # noqa: E731
    mc = float((lp(z, 0.3, 0.5) - lp(z, -0.2, 1.3)).mean())
    kl = float(kl_normal_terms(torch.tensor(0.3), torch.tensor(math.log(0.25)), torch.tensor(-0.2), torch.tensor(math.log(1.69))))
    assert kl == pytest.approx(mc, abs=3e-3)


# -- the bound -------------------------------------------------------------------------------------
def _toy_denoise(xt, t):
    # any fixed function of (x_t, t): the bound holds for every model, not just a trained one
    return 0.4 * xt + 0.05 * t.float().reshape(-1, *([1] * (xt.dim() - 1))), None


def test_sum_of_bound_terms_equals_the_bound_computed_in_one_piece():
    """E_q[log q(x_{1:T}|x_0) - log p(x_{0:T})] by whole forward trajectories against L_T + sum
    of KLs + L_0 evaluated term by term: the same expectation, two independent estimates."""
    T, n = 4, 200_000
    d = _diffusion(T=T, variance="fixed-large")
    g = torch.Generator().manual_seed(3)
    x0 = torch.full((n, 1), 2 * (100 / 255) - 1)  # an 8-bit level
    # one piece: walk x_1..x_T forward, sum log-density ratios
    xs, x = [x0], x0
    lq = torch.zeros(n)
    for s in range(T):
        beta = float(d.betas[s])
        nxt = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=g)
        lq += (-0.5 * (nxt - math.sqrt(1 - beta) * x) ** 2 / beta - 0.5 * math.log(2 * math.pi * beta)).sum(1)
        xs.append(nxt)
        x = nxt
    lp = (-0.5 * xs[T] ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)
    for s in range(T - 1, -1, -1):
        tt = torch.full((n,), s, dtype=torch.long)
        pred, _ = _toy_denoise(xs[s + 1], tt)
        mean, logvar, _ = d.p_mean_logvar(pred, None, xs[s + 1], tt, clip=False)
        if s == 0:
            lp += discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).sum(1)
        else:
            lp += (-0.5 * (xs[s] - mean) ** 2 / logvar.exp() - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(1)
    one_piece = lq - lp
    # term by term: the model's own bound_terms
    model = lvmkit.build_model(lvmkit.make_config({"model": {"kind": "ddpm", "timesteps": T, "variance": "fixed-large",
                                                             "channels": [4]}}).model, (1,))
    model.diffusion = d
    model.denoise = _toy_denoise
    x = (x0 + 1) / 2
    terms = model.bound_terms(x, torch.Generator().manual_seed(4))
    total = terms.sum(1)
    se = math.sqrt(float(one_piece.var()) / n + float(total.var()) / n)
    assert float(total.mean()) == pytest.approx(float(one_piece.mean()), abs=4 * se)
    assert terms.shape == (n, T + 1)
    assert float(terms[0, -1]) == pytest.approx(float(d.prior_kl(x0[:1])))


# -- samplers ----------------------------------------------------------------------------------------
def _oracle(d, x0):
    """A perfect denoiser for one known x_0: the exact target at every (x_t, t)."""
    def denoise(xt, t):
        ab = d.abar[t].float().reshape(-1, *([1] * (xt.dim() - 1)))
        eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
        return d.target_of(x0.expand_as(xt), eps, t), None
    return denoise


@pytest.mark.parametrize("sampler", [Ancestral(), DDIM(10, 0.0), DDIM(7, 0.5)])
def test_with_the_true_noise_the_loss_is_zero_and_samplers_recover_x0(sampler):
    d = _diffusion(T=70)
    x0 = torch.tensor([[0.25, -0.5, 0.9]])
    denoise = _oracle(d, x0)
    t = torch.tensor([33])
    noise = torch.randn(1, 3)
    pred, _ = denoise(d.q_sample(x0, t, noise), t)
    assert float((pred - d.target_of(x0, noise, t)).pow(2).mean()) < 1e-10
    g = torch.Generator().manual_seed(0)
    x, chain = sampler.run(ReverseProcess(d, denoise), torch.randn(5, 3, generator=g), generator=g, keep=3)
    torch.testing.assert_close(x, x0.expand(5, 3), atol=1e-4, rtol=1e-4)
    assert chain[0][0] == f"t={sampler.timesteps(70)[0] + 1}" and chain[-1][0] == "x_0" and len(chain) == 3


def _within_range(d):
    """A denoiser whose implied x_0 = 0.5 tanh(x_t) stays inside [-1, 1], so no sampler clips."""
    def denoise(xt, t):
        ab = d.abar[t].float().reshape(-1, *([1] * (xt.dim() - 1)))
        return (xt - ab.sqrt() * 0.5 * torch.tanh(xt)) / (1 - ab).sqrt(), None
    return denoise


def test_ddim_with_eta_one_and_all_steps_is_the_ancestral_sampler():
    # Song et al. 2021, sec. 4.1: sigma_t(eta = 1) is beta~_t, the fixed-small variance
    d = _diffusion(T=25)
    x = torch.randn(6, 2)
    den = _within_range(d)
    for s in (24, 10, 1):
        pred, _ = den(x, torch.full((6,), s))
        noise = torch.randn(6, 2)
        a = Ancestral().update(d, pred, None, x, s, s - 1, noise)
        b = DDIM(25, 1.0).update(d, pred, None, x, s, s - 1, noise)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert DDIM(25, 1.0).timesteps(25) == Ancestral().timesteps(25)
    # and the whole chains agree for the same noise
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    xa, _ = Ancestral().run(ReverseProcess(d, den), torch.randn(4, 2, generator=ga), generator=ga)
    xb, _ = DDIM(25, 1.0).run(ReverseProcess(d, den), torch.randn(4, 2, generator=gb), generator=gb)
    torch.testing.assert_close(xa, xb, atol=1e-4, rtol=1e-4)


def test_sampler_settings_are_checked():
    with pytest.raises(ConfigError, match=r"DDIM's eta must lie in \[0, 1\], got 1.5"):
        DDIM(10, 1.5)
    with pytest.raises(ConfigError, match=r"DDIM needs a positive number of steps, got 0"):
        DDIM(0)
    with pytest.raises(ConfigError, match=r"DDIM steps \(80\) cannot exceed the model's T = 50"):
        DDIM(80).run(ReverseProcess(_diffusion(50), _toy_denoise), torch.zeros(1, 1))
    with pytest.raises(ConfigError, match=r"The ancestral sampler takes all T = 50 steps, not 10"):
        Ancestral(10).run(ReverseProcess(_diffusion(50), _toy_denoise), torch.zeros(1, 1))
    with pytest.raises(ConfigError, match=r"Unknown sampler 'euler'"):
        SAMPLERS.get("euler")


def test_one_step_matches_diffusers_schedulers():
    diffusers = pytest.importorskip("diffusers")
    T = 1000
    d = _diffusion(T=T)
    g = torch.Generator().manual_seed(6)
    x, pred = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    ddim = diffusers.DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                   clip_sample=True, set_alpha_to_one=True, steps_offset=0)
    ddim.set_timesteps(50)
    ours = DDIM(50, 0.0)
    assert [int(t) for t in ddim.timesteps] == ours.timesteps(T)
    for i in (0, 25, 49):
        t = ours.timesteps(T)[i]
        t_prev = ours.timesteps(T)[i + 1] if i + 1 < 50 else -1
        ref = ddim.step(pred, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours.update(d, pred, None, x, t, t_prev, None), ref, atol=1e-5, rtol=1e-4)
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                   clip_sample=True, variance_type="fixed_small")
    for t in (999, 500, 0):
        ref = ddpm.step(pred, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(Ancestral().update(d, pred, None, x, t, t - 1, noise), ref, atol=1e-5, rtol=1e-4)


# -- the family -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    ({"schedule": "quadratic"}, r"Unknown noise schedule 'quadratic'"),
    ({"target": "score"}, r"model.target"),
    ({"timesteps": 1}, r"model.timesteps"),
    ({"variance": "learned"}, r"model.variance = 'learned' gets no gradient from the simple loss"),
    ({"sampler": "ddim", "sample_steps": 2000}, r"model.sample_steps = 2000 exceeds model.timesteps = 1000"),
    ({"sampler": "ddim", "eta": -0.1}, r"DDIM's eta must lie in \[0, 1\]"),
])
def test_bad_ddpm_configs(fields, message):
    with pytest.raises(ConfigError, match=message):
        lvmkit.make_config({"model": {"kind": "ddpm", **fields}})


@torch.no_grad()
def _ddim_by_hand(model, n, seed, steps, eta):
    """DDIM (Song et al. 2021, eq. 12; eps-target network) written out, in [0, 1]: timesteps
    (S - 1) c, ..., c, 0 with c = T // S, x0 clipped to [-1, 1]."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *model.input_shape), generator=g)
    abar = model.diffusion.abar.double()
    c = model.diffusion.T // steps
    ts = [c * i for i in range(steps - 1, -1, -1)]
    for t, t_prev in zip(ts, ts[1:] + [None]):
        eps = model.denoiser(x, torch.full((n,), t, dtype=torch.long))
        a, a_prev = float(abar[t]), (float(abar[t_prev]) if t_prev is not None else 1.0)
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)  # x_t = sqrt(a) x0 + sqrt(1 - a) eps
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if t_prev is not None and eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=g)
    return ((x + 1) / 2).clamp(0, 1).numpy()


def test_ddpm_trains_samples_and_bounds_on_digits(tmp_path):
    cfg = lvmkit.make_config({"data": {"name": "digits", "limit": 500},
                              "model": {"kind": "ddpm", "timesteps": 40, "channels": [8, 16], "sampler": "ddim", "sample_steps": 10},
                              "train": {"epochs": 2, "batch_size": 64, "ema_decay": 0.9, "ema_start": 0, "sample_every": 1}})
    run = lvmkit.train(cfg, tmp_path / "ddpm", progress=False)
    res = lvmkit.evaluate(run)
    # the bound is in nats for the whole image and per dimension in bits: consistent units
    assert res["bits_per_dim"] == pytest.approx(res["nll_bound"] / (64 * math.log(2)))
    assert res["n_test"] == 100 and len(res["vlb_terms"]) == 41 and res["nll_bound"] == pytest.approx(sum(res["vlb_terms"]), rel=1e-4)
    assert 0 < res["nll_bound_se"] < res["nll_bound"]
    a = lvmkit.sample(run, 6, seed=3, sampler="ddim", steps=5)
    # the samples are Song et al.'s eq. 12 on the trained network, computed here independently:
    # the first draw of the seed is x_T, then (eta > 0) one draw per step but the last
    model = run.load_model("best")
    assert a.shape == (6, 1, 8, 8)
    np.testing.assert_allclose(a, _ddim_by_hand(model, 6, 3, 5, 0.0), atol=1e-5)
    np.testing.assert_allclose(lvmkit.sample(run, 6, seed=3, sampler="ddim", steps=5, eta=0.5),
                               _ddim_by_hand(model, 6, 3, 5, 0.5), atol=1e-5)
    assert list((run.path / "samples").glob("epoch_*.npy"))
    q = lvmkit.quality(run, 40, sampler="ddim", steps=5, eta=0.5, write=False)
    assert q["sampler"] == {"name": "ddim", "steps": 5, "eta": 0.5} and q["n_generated"] == 40 and q["weights"] == "ema"
    # the optimizer's own weights instead of their moving average, on request
    raw = lvmkit.sample(run, 6, seed=3, sampler="ddim", steps=5, weights="raw")
    assert raw.shape == a.shape and not np.allclose(raw, a)
    assert lvmkit.quality(run, 40, sampler="ddim", steps=5, write=False, weights="raw")["weights"] == "raw"
    with pytest.raises(ConfigError, match=r"weights must be 'ema' or 'raw', got 'best'"):
        lvmkit.sample(run, 2, weights="best")
    page = lvmkit.write_report(run).read_text()
    assert "Sampling chain" in page and (run.figures / "chain.png").is_file() and (run.figures / "bound_terms.png").is_file()
    r = run_cli("sample", str(run.path), "--sampler", "ddim", "--steps", "80", "--out", str(tmp_path / "s.npy"))
    assert r.returncode == 2 and "DDIM steps (80) cannot exceed the model's T = 40" in r.stderr
    r = run_cli("sample", str(run.path), "--sampler", "ancestral", "--n", "4", "--out", str(tmp_path / "s.npy"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)


def test_choosing_a_sampler_for_a_one_pass_generator_is_an_error(trained_run):
    with pytest.raises(ConfigError, match=r"Choosing a sampler .* needs a model that is a generator with a choice of samplers"):
        lvmkit.sample(trained_run, 4, sampler="ddim")
