"""One conformance suite over every registered model configuration (kind x network)."""
from __future__ import annotations

import pytest
import torch

import lvmkit
from lvmkit import MODEL_KINDS, NETWORKS

from conftest import tiny_config

# Families of image/tabular models; the time-series families have their own conformance test
# in test_timeseries.py (their examples are packed series, not images).
IMAGE_KINDS = [k for k in MODEL_KINDS if MODEL_KINDS.get(k)["family"] == "autoencoder"]
CASES = [(k, n) for k in IMAGE_KINDS for n in NETWORKS] + [("vae-gaussian-learned", "mlp")]


def _config(kind: str, network: str) -> lvmkit.ExperimentConfig:
    model = {"kind": kind, "network": network, "latent_dim": 3, "hidden": [16], "channels": [4, 8],
             "clusters": 3, "pretrain_steps": 2}
    if kind == "vae-gaussian-learned":
        model.update(kind="vae", likelihood="gaussian", learn_sigma=True)
    return tiny_config(model=model)


def _build(cfg, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return lvmkit.build_model(cfg.model, shape)


@pytest.fixture(params=CASES, ids=[f"{k}-{n}" for k, n in CASES])
def case(request):
    kind, network = request.param
    cfg = _config(kind, network)
    return cfg, _build(cfg)


def _batch(n=10):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_loss_is_finite_scalar_and_gradients_reach_every_parameter(case):
    cfg, model = case
    x = _batch()
    assert model.update(x, step=cfg.model.pretrain_steps) is None  # past any pretraining stage
    out = model.loss(x, step=cfg.model.pretrain_steps)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for v in out.terms.values())
    out.loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen copies (DEC's target encoder) are not trained
            continue
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"gradient of {name} is identically zero"


def test_save_load_reproduces_outputs(case, tmp_path):
    cfg, model = case
    # Perturb the weights so that a load which silently kept fresh weights would be caught.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    lvmkit.save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict()})
    fresh = _build(cfg)
    fresh.load_state_dict(lvmkit.load_checkpoint(tmp_path / "m.pt")["model"])
    model.eval(), fresh.eval()
    x = _batch()
    torch.testing.assert_close(fresh.embed(x), model.embed(x), rtol=0, atol=0)
    torch.testing.assert_close(fresh.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)


def test_seeded_training_steps_repeat(case):
    cfg, _ = case

    def three_steps():
        model = _build(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(5)
        losses = []
        for step in range(3):
            model.update(_batch(), step)
            out = model.loss(_batch(), step)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(out.loss.item())
        return losses

    assert three_steps() == three_steps()


def test_sample_has_declared_shape(case):
    cfg, model = case
    x = model.sample(7)
    assert x.shape == (7, 1, 8, 8)
    assert torch.isfinite(x).all()


def test_config_round_trips_through_toml(case, tmp_path):
    cfg, _ = case
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert lvmkit.load_config(path) == cfg


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_every_kind_trains_end_to_end(kind, tmp_path):
    run = lvmkit.train(tiny_config(model={"kind": kind}, train={"epochs": 2}), tmp_path / kind, progress=False)
    metrics = run.read_metrics()
    assert len(metrics) == 2
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] * 1.5
    assert (run.checkpoints / "last.pt").is_file() and (run.checkpoints / "best.pt").is_file()
