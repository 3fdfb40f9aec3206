"""Recipes that reach quality sooner (issue 22): EMA with warm-up, learning-rate warm-up,
min-SNR-gamma weighting, and a wall-time budget that ends a run at its last finished epoch."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import lvmkit
from lvmkit.core.config import parse_duration
from lvmkit.core.errors import ConfigError
from lvmkit.core.optim import EMA, lr_factor
from lvmkit.models.diffusion.process import NOISE_SCHEDULES, GaussianDiffusion
from conftest import CONFIGS, tiny_config


# -- EMA with warm-up -------------------------------------------------------------------------
def test_ema_warmup_copies_until_its_start_then_follows_the_growing_decay_then_the_fixed_one():
    m = nn.Linear(3, 1)
    ema = EMA(m, 0.99, start=20)
    expected = m.weight.detach().clone()
    for step in range(300):
        with torch.no_grad():
            m.weight.add_(1.0)
        d = 0.0 if step < 20 else min(0.99, (1 + step - 20) / (10 + step - 20))
        expected = d * expected + (1 - d) * m.weight.detach()
        ema.update(m, step)
    torch.testing.assert_close(ema.state_dict()["weight"], expected, rtol=1e-6, atol=1e-4)
    assert ema.decay_at(19) == 0.0 and ema.decay_at(20) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.99


def test_ema_warmup_forgets_the_initialisation_that_a_fixed_decay_keeps():
    # After 100 steps at a constant weight w = 1 from w0 = 0, a fixed 0.999 keeps 0.999^100 = 90%
    # of the initialisation; with warm-up the first update keeps only 1 - 0.9 = 10% of it and the
    # product prod_s d_s = prod (1 + s) / (10 + s) vanishes like 9! / 100^9.
    def average(warmup: bool) -> float:
        m = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            m.weight.zero_()
        ema = EMA(m, 0.999, warmup=warmup)
        with torch.no_grad():
            m.weight.fill_(1.0)
        for step in range(100):
            ema.update(m, step)
        return float(ema.state_dict()["weight"])

    assert average(False) == pytest.approx(1 - 0.999**100, rel=1e-5)
    kept = 1.0
    for s in range(100):
        kept *= (1 + s) / (10 + s)
    assert kept < 1e-12 and 1 - average(True) < 1e-6  # float32 weights: 1 - kept rounds to 1


@pytest.mark.slow
def test_a_short_ddpm_runs_ema_weights_are_not_worse_than_its_raw_ones(tmp_path):
    """200 steps of the digits DDPM: the default EMA samples at least as well as the raw weights
    (a fixed 0.999 would still hold 0.999^200 = 82% of the initial weights)."""
    cfg = lvmkit.load_config(CONFIGS / "ddpm_digits.toml", [
        "train.max_steps=200", "train.epochs=10", "train.threads=1", "train.device=cpu", "train.sample_every=0",
        "model.channels=[16,32]", "model.sample_steps=20"])
    run = lvmkit.train(cfg, tmp_path / "ddpm", progress=False)
    fd = {w: lvmkit.quality(run, n=400, weights=w, write=False)["frechet_distance"] for w in ("ema", "raw")}
    assert fd["ema"] <= fd["raw"], fd


# -- learning-rate warm-up ----------------------------------------------------------------------
def test_lr_warmup_rises_linearly_then_hands_over_to_the_cosine():
    assert [lr_factor("constant", s, 100, 0.1, warmup=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # After warm-up the cosine runs over the remaining 96 steps: 1 at step 4, lr_final at 100.
    assert lr_factor("cosine", 4, 100, 0.1, warmup=4) == pytest.approx(1.0)
    assert lr_factor("cosine", 52, 100, 0.1, warmup=4) == pytest.approx(0.55)
    assert lr_factor("cosine", 100, 100, 0.1, warmup=4) == pytest.approx(0.1)
    assert lr_factor("cosine", 50, 100, 0.1) == pytest.approx(0.55)  # no warm-up: as before


# -- min-SNR-gamma ----------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_min_snr_weight_turns_each_targets_error_into_the_clipped_x0_error(target):
    """w_t ||target - target^||^2 = min(SNR_t, gamma) ||x0 - x0^||^2 for every parameterisation
    (Hang et al. 2023), with x0^ recovered from the prediction by the forward process."""
    torch.manual_seed(0)
    proc = GaussianDiffusion(NOISE_SCHEDULES.get("linear")(1000), target=target, variance="fixed-small").double()
    t = torch.tensor([0, 10, 100, 500, 999])
    x0, noise = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    a = proc.abar[t][:, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = proc.target_of(x0, noise, t) + 0.1 * torch.randn(5, 4, dtype=torch.float64)
    if target == "eps":
        x0_hat = (xt - (1 - a).sqrt() * pred) / a.sqrt()
    elif target == "x0":
        x0_hat = pred
    else:
        x0_hat = a.sqrt() * xt - (1 - a).sqrt() * pred
    snr = (a / (1 - a)).squeeze(1)
    lhs = proc.min_snr_weight(t, 5.0).double() * (pred - proc.target_of(x0, noise, t)).pow(2).sum(1)
    rhs = torch.clamp(snr, max=5.0) * (x0 - x0_hat).pow(2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-10)


def test_min_snr_gamma_changes_the_ddpm_loss_only_where_snr_exceeds_gamma():
    cfg = lvmkit.make_config({"model": {"kind": "ddpm", "denoiser": "mlp", "channels": [16], "timesteps": 100,
                                        "min_snr_gamma": 5.0}})
    model = lvmkit.build_model(cfg.model, (6,))
    plain = lvmkit.build_model(lvmkit.make_config({"model": {"kind": "ddpm", "denoiser": "mlp", "channels": [16],
                                                             "timesteps": 100}}).model, (6,))
    plain.load_state_dict(model.state_dict())
    x = torch.rand(8, 6)
    noise = torch.randn(8, 6)
    late = torch.full((8,), 99)  # SNR far below 5: weight 1 on eps, the plain loss
    with torch.no_grad():
        assert float(model(x, t=late, noise=noise).loss) == pytest.approx(float(plain(x, t=late, noise=noise).loss),
                                                                          rel=1e-6)
        early = torch.zeros(8, dtype=torch.long)  # SNR ~ 1e4: weight 5 / SNR
        assert float(model(x, t=early, noise=noise).loss) < 1e-2 * float(plain(x, t=early, noise=noise).loss)


# -- the wall-time budget ---------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("90s", 90), ("60m", 3600), ("1h30m", 5400), ("2h", 7200), ("45", 45),
                                           (30, 30), ("0.5s", 0.5)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "0", "-5m", "1d", "m", True])
def test_an_unparsable_time_limit_names_the_accepted_forms(bad):
    with pytest.raises(ConfigError, match=r"train.time_limit must be a positive duration such as \"90s\", \"60m\""):
        tiny_config(train={"time_limit": bad})


class _Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_epoch_end(self, trainer, record) -> None:
        time.sleep(self.seconds)


def test_a_time_limit_ends_the_run_at_a_finished_epoch_and_resume_goes_on(tmp_path):
    cfg = tiny_config(train={"epochs": 50, "time_limit": "1s"})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False, callbacks=[_Slow(0.3)])
    done = run.read_metrics()
    assert 1 <= len(done) < 50
    ckpt = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == len(done) and ckpt["state"]["stopped"].startswith("time limit:")
    again = lvmkit.resume(run.path, progress=False)
    assert len(again.read_metrics()) > len(done)  # the budget ends one invocation, not the run


def test_a_time_limit_inside_an_epoch_drops_that_epoch_and_keeps_the_last_finished_one(tmp_path, monkeypatch):
    from lvmkit.models.autoencoder.autoencoder import Autoencoder

    real = Autoencoder.training_step

    def slow_step(self, x, step, opt):
        time.sleep(0.05)
        return real(self, x, step, opt)

    monkeypatch.setattr(Autoencoder, "training_step", slow_step)
    cfg = tiny_config(train={"epochs": 5, "batch_size": 8, "time_limit": "0.5s"})  # ~180 steps of 50 ms per epoch
    run = lvmkit.train(cfg, tmp_path / "r", progress=False)
    assert run.read_metrics() == []
    ckpt = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 0 and ckpt["state"]["step"] == 0


def test_runs_written_before_the_warmup_resume_with_the_fixed_decay_they_began_with(tmp_path):
    import shutil

    from conftest import ROOT

    shutil.copytree(ROOT / "tests" / "fixtures" / "v1_vae_run", tmp_path / "old")
    assert lvmkit.Run.open(tmp_path / "old").config.train.ema_warmup is False
    assert tiny_config().train.ema_warmup is True
