"""The energy-based family's own mathematics: Langevin dynamics against a Gaussian energy's exact
mean and variance, the replay buffer, spectral normalisation, the L2 energy penalty, and one
tiny run on digits (the shared conformance suite covers purity, gradients, save/load, resume)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import lvmkit
from lvmkit import ConfigError
from lvmkit.core.optim import Optimizers
from lvmkit.models.energy.ebm import EBM, EBMConfig, build_ebm
from lvmkit.models.mcmc.langevin import GRADIENT_SAMPLERS, Langevin

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "lvmkit" / "configs"


def _ebm(shape=(5,), **fields) -> EBM:
    return build_ebm(EBMConfig(**{"hidden": [16], **fields}), shape)


def _gaussian_energy(mu: torch.Tensor, s: float):
    """E(x) = |x - mu|^2 / (2 s^2): exp(-E) is N(mu, s^2 I)."""
    return lambda x: (x - mu).pow(2).sum(1) / (2 * s**2)


# -- Langevin dynamics -------------------------------------------------------------------------
def test_one_langevin_step_with_unit_noise_is_the_exact_ula_update():
    mu, s = torch.tensor([0.5, -1.0]), 0.7
    x = torch.randn(6, 2)
    sampler = Langevin(steps=1, step_size=0.05, noise=1.0, grad_clip=0.0)
    energy = _gaussian_energy(mu, s)
    new = sampler.step(energy, sampler.init(energy, x), torch.Generator().manual_seed(3)).x
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    expected = x - 0.05 * (x - mu) / s**2 + math.sqrt(2 * 0.05) * z  # x - eps grad E + sqrt(2 eps) z
    torch.testing.assert_close(new, expected)
    # Clipping acts on each gradient component, bounds on the new state.
    clipped = Langevin(steps=1, step_size=0.05, noise=0.0, grad_clip=0.1, bounds=(-0.2, 0.2))
    grad = ((x - mu) / s**2).clamp(-0.1, 0.1)
    torch.testing.assert_close(clipped.step(energy, clipped.init(energy, x)).x, (x - 0.05 * grad).clamp(-0.2, 0.2))


@pytest.mark.parametrize("noise", [1.0, 0.5])
def test_langevin_on_a_gaussian_energy_reaches_its_mean_and_variance(noise):
    """With noise = sqrt(T) the chain samples exp(-E / T) = N(mu, T s^2): noise 1 is exp(-E).
    4,000 chains in 2-D after 12 relaxation times (s^2 / eps = 62.5 steps): standard errors
    ~0.008 on the mean and ~1.6% on the variance; the step's O(eps) bias is 0.8%."""
    torch.manual_seed(0)
    mu, s, eps = torch.tensor([0.3, -1.2]), 0.5, 0.004
    sampler = Langevin(steps=750, step_size=eps, noise=noise, grad_clip=0.0)
    x, _ = sampler.run(_gaussian_energy(mu, s), torch.zeros(4000, 2))
    target_var = noise**2 * s**2
    assert (x.mean(0) - mu).abs().max() < 0.04
    assert (x.var(0) / target_var - 1).abs().max() < 0.08


def test_a_large_langevin_step_has_the_discretisation_bias_of_its_ar1_closed_form():
    """On E = x^2 / (2 s^2) the update is x' = (1 - eps / s^2) x + sqrt(2 eps) z, an AR(1) with
    stationary variance s^2 / (1 - eps / (2 s^2)): 5.3% above s^2 at eps = 0.1 s^2 (SE 0.9%)."""
    torch.manual_seed(1)
    s, eps = 1.0, 0.1
    x, _ = Langevin(steps=300, step_size=eps, noise=1.0, grad_clip=0.0).run(_gaussian_energy(torch.zeros(1), s),
                                                                             torch.zeros(25000, 1))
    var = float(x.var())
    assert var / (s**2 / (1 - eps / (2 * s**2))) == pytest.approx(1.0, abs=0.027)
    assert var / s**2 > 1.025


def test_langevin_chain_keeps_states_from_start_to_end():
    sampler = Langevin(steps=10, step_size=0.01, noise=1.0, grad_clip=0.0)
    start = torch.zeros(3, 2)
    x, chain = sampler.run(_gaussian_energy(torch.ones(2), 1.0), start, keep=4)
    assert chain[0][0] == "step 0" and chain[-1][0] == "step 10" and len(chain) == 4
    torch.testing.assert_close(chain[0][1], start, rtol=0, atol=0)
    torch.testing.assert_close(chain[-1][1], x, rtol=0, atol=0)


def test_bad_langevin_settings_and_sampler_choices_are_one_sentence_errors():
    with pytest.raises(ConfigError, match="step size must be positive, got 0"):
        Langevin(step_size=0.0)
    model = _ebm(langevin={"steps": 7})
    assert model.make_sampler("langevin", steps=3).steps == 3 and model.make_sampler("langevin").steps == 7
    with pytest.raises(ConfigError, match="Unknown sampler 'ddim' for this EBM; choose one of: langevin"):
        model.make_sampler("ddim")
    with pytest.raises(ConfigError, match="takes no eta"):
        model.make_sampler("langevin", eta=0.5)
    assert "langevin" in GRADIENT_SAMPLERS


# -- the replay buffer -------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.05, 0.5])
def test_replay_buffer_reinitialises_the_stated_fraction_with_uniform_noise(fraction):
    torch.manual_seed(0)
    model = _ebm(buffer_size=1000, reinit_fraction=fraction)
    model.buffer.fill_(2.0)  # outside the data's range: a fresh start is any row not 2
    fresh_total = 0
    for _ in range(10):
        starts, index, fresh = model.chain_starts(800)
        assert len(set(index.tolist())) == 800  # distinct rows: write-back is well defined
        from_noise = (starts != 2.0).all(1)
        assert torch.equal(from_noise, fresh) and ((starts[fresh] >= 0) & (starts[fresh] <= 1)).all()
        fresh_total += int(fresh.sum())
    # Binomial(8000, f): standard error sqrt(f (1 - f) / 8000) <= 0.0056
    assert fresh_total / 8000 == pytest.approx(fraction, abs=4 * math.sqrt(fraction * (1 - fraction) / 8000))


def test_training_step_writes_chain_ends_back_and_forward_does_not():
    torch.manual_seed(0)
    model = _ebm(buffer_size=100, reinit_fraction=0.0, langevin={"steps": 2})
    model.buffer.fill_(0.5)
    x = torch.rand(30, 5)
    model.eval()
    model(x)
    assert (model.buffer == 0.5).all()
    model.train()
    cfg = lvmkit.make_config({"model": {"kind": "ebm"}}).train
    model.training_step(x, 0, Optimizers(model.optimizer_groups(), cfg, model.optimizer_defaults))
    changed = (model.buffer != 0.5).any(1)
    assert int(changed.sum()) == 30


def test_a_replay_buffer_smaller_than_the_batch_is_an_error_naming_both_sizes():
    model = _ebm(buffer_size=16)
    cfg = lvmkit.make_config({"model": {"kind": "ebm"}}).train
    opt = Optimizers(model.optimizer_groups(), cfg, model.optimizer_defaults)
    with pytest.raises(ConfigError, match=r"model.buffer_size = 16 is smaller than the batch of 32 examples.*at least 32"):
        model.training_step(torch.rand(32, 5), 0, opt)


# -- the energy network and the objective ------------------------------------------------------
@pytest.mark.parametrize("shape,fields", [((6,), {"hidden": [12, 12]}), ((1, 8, 8), {"channels": [4, 8]})])
def test_spectral_norm_bounds_every_layers_largest_singular_value(shape, fields):
    torch.manual_seed(0)

    def scaled(spectral: bool) -> EBM:
        torch.manual_seed(0)
        model = _ebm(shape, spectral_norm=spectral, **fields)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(10.0)
        return model

    layers = lambda m: [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]  # noqa: E731
    sigma = lambda w: float(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2))  # noqa: E731
    assert max(sigma(layer.weight) for layer in layers(scaled(False))) > 2.0  # the control
    model = scaled(True)
    model.train()
    for _ in range(100):  # power iterations run in training-mode forward passes
        model.energy(torch.rand(4, *shape))
    model.eval()
    sigmas = [sigma(layer.weight) for layer in layers(model)]
    # Power iteration approaches sigma from below, so the normalised sigma from above.
    assert all(1.0 - 1e-4 <= s <= 1.005 for s in sigmas), sigmas
    if len(shape) == 1:  # E's Lipschitz constant <= prod sigma_i x 1.0998 per SiLU
        x, y = torch.rand(200, *shape), torch.rand(200, *shape)
        with torch.no_grad():
            ratio = (model.energy(x) - model.energy(y)).abs() / (x - y).norm(dim=1)
        assert float(ratio.max()) <= math.prod(sigmas) * 1.0998**2


def test_the_l2_energy_penalty_appears_in_the_loss_and_its_terms():
    torch.manual_seed(0)
    model = _ebm(alpha=0.7)
    pos, neg = torch.rand(9, 5), torch.rand(9, 5)
    out = model.contrastive_loss(pos, neg)
    e_pos, e_neg = model.energy(pos), model.energy(neg)
    reg = 0.7 * (e_pos.pow(2) + e_neg.pow(2)).mean()  # Du & Mordatch 2019, sec. 3.3
    torch.testing.assert_close(out.terms["reg"], reg.detach())
    torch.testing.assert_close(out.terms["cd"], (e_pos.mean() - e_neg.mean()).detach())
    torch.testing.assert_close(out.loss, e_pos.mean() - e_neg.mean() + reg)
    assert float(_ebm(alpha=0.0).contrastive_loss(pos, neg).terms["reg"]) == 0.0


# -- end to end --------------------------------------------------------------------------------
def test_a_tiny_ebm_trains_on_digits_and_samples(tmp_path):
    cfg = lvmkit.make_config({
        "data": {"name": "digits"},
        "model": {"kind": "ebm", "channels": [8, 16], "buffer_size": 256, "langevin": {"steps": 5}},
        "train": {"epochs": 2, "max_steps": 6, "batch_size": 32, "device": "cpu", "seed": 0},
    })
    run = lvmkit.train(cfg, tmp_path / "run", progress=False)
    metrics = run.read_metrics()
    assert metrics[-1]["step"] == 6 and all(math.isfinite(m["train_loss"]) for m in metrics)
    assert {"train_reg", "train_e_pos", "val_loss"} <= set(metrics[-1])
    assert (run.path / "samples").is_dir()  # the per-epoch grids of a generator on images
    ckpt = lvmkit.load_checkpoint(run.checkpoints / "last.pt")
    assert ckpt["model"]["buffer"].shape == (256, 1, 8, 8)
    model = run.load_model("best")  # no selection metric: the last checkpoint
    x = model.sample(6, steps=4, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    grid = lvmkit.sample(run, 4, tmp_path / "s.png", steps=3)
    assert grid.shape == (4, 1, 8, 8) and (tmp_path / "s.png").stat().st_size > 0
    ev = model.evaluate_split(run.data().test, k=1, batch_size=200)
    assert ev["n_samples"] == min(len(run.data().test), 1000)
    assert ev["energy_gap"] == pytest.approx(ev["energy_samples"] - ev["energy_data"])
    assert model.energy(run.data().test.x[:7]).shape == (7,)


@pytest.mark.parametrize("name", ["ebm_digits.toml", "ebm_fashion.toml"])
def test_shipped_configs_load_and_build(name):
    cfg = lvmkit.load_config(CONFIGS / name)
    shape = (1, 8, 8) if "digits" in name else (1, 28, 28)
    model = lvmkit.build_model(cfg.model, shape)
    assert isinstance(model, EBM) and model.buffer_size >= cfg.train.batch_size
