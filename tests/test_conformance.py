"""One conformance suite over every registered family (scikit-learn's test_common.py).

Each family registers tiny example configs (``Family.examples``): a model section and either a
data section or an input shape (then uniform data in [0, 1]). A new family passes this suite by
registering; the family's own file then tests only its mathematics.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import FAMILIES, DensityModel, Encoder, Forecaster, Generator, Reconstructor
from lvmkit.core.contract import CAPABILITIES, ClusterModel, EnergyModel, EvidenceBound, LatentDecoder, has
from lvmkit.core.optim import Optimizers

CASES = [(name, i) for name in FAMILIES for i in range(len(FAMILIES.get(name).examples))]
FIRST = [(name, 0) for name in FAMILIES]
IDS = [f"{name}-{i}" for name, i in CASES]


def test_every_family_registers_examples():
    assert set(FAMILIES.names()) >= {"autoencoder", "latent-ode", "rnn", "neural-ode", "gan"}
    for name in FAMILIES:
        assert FAMILIES.get(name).examples, f"family {name!r} registers no example for this suite"


def _data_doc(example: dict, tmp_path) -> dict:
    if "data" in example:
        return copy.deepcopy(example["data"])
    shape = tuple(example["input_shape"])
    # load_data adds the channel axis to single-channel (N, H, W) images
    stored = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    x = np.random.default_rng(0).random((120, *stored), dtype=np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x)
    return {"name": "npz", "path": str(path)}


def _setup(name: str, i: int, tmp_path, **train):
    example = FAMILIES.get(name).examples[i]
    cfg = lvmkit.make_config({"data": _data_doc(example, tmp_path), "model": copy.deepcopy(example["model"]),
                              "train": {"epochs": 2, "batch_size": 32, "patience": 0, "device": "cpu", "seed": 3,
                                        "sample_every": 0, **train}})
    data = lvmkit.load_data(cfg.data, cfg.train.seed)
    torch.manual_seed(0)
    model = lvmkit.build_model(cfg.model, data.shape)
    x = data.train.x[:24]
    model.update(data.train.x, 10**6)  # past any pretraining stage (DEC starts clustering)
    return cfg, data, model, x, example


@pytest.fixture(params=CASES, ids=IDS)
def case(request, tmp_path):
    return _setup(*request.param, tmp_path)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_forward_is_a_finite_scalar_and_pure(case):
    cfg, data, model, x = case[:4]
    model.eval()
    before = _state(model)
    out = model(x)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert "loss" in out.terms and all(torch.isfinite(v) for v in out.terms.values())
    after = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=f"forward changed {k}")


def test_training_step_changes_every_trained_parameter(case):
    cfg, data, model, x = case[:4]
    model.train()
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    grouped = {id(p) for ps in model.optimizer_groups().values() for p in ps}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {id(p) for _, p in trained} <= grouped, "a trainable parameter belongs to no optimizer group"
    before = {n: p.detach().clone() for n, p in trained}
    # Two steps: a zero-initialised output layer (the diffusion denoisers') passes gradient to
    # the layers below only once it has moved. A family whose parameters train in stages (a
    # DBN's greedy layers) names steps that visit every stage (example "probe_steps").
    for step in case[4].get("probe_steps", (10**6, 10**6 + 1)):
        terms = model.training_step(x, step, opt)
        assert all(torch.isfinite(v) for v in terms.values())
    for n, p in trained:
        assert not torch.equal(p.detach(), before[n]), f"two training steps left {n} unchanged"


def test_a_bf16_autocast_training_step_is_finite(case):
    """train.precision = 'bf16' wraps the family's step in autocast: every family must cope
    (losses summed in float32, no dtype clashes in custom operations)."""
    cfg, data, model, x = case[:4]
    model.train()
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.training_step(x, 10**6, opt)
    assert all(torch.isfinite(torch.as_tensor(v, dtype=torch.float32)) for v in terms.values())
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())


def test_save_load_reproduces_outputs(case, tmp_path):
    cfg, data, model, x = case[:4]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    lvmkit.save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict()})
    torch.manual_seed(0)
    fresh = lvmkit.build_model(cfg.model, data.shape)
    fresh.load_state_dict(lvmkit.load_checkpoint(tmp_path / "m.pt")["model"])
    model.eval(), fresh.eval()
    for m in (model, fresh):
        torch.manual_seed(11)
        m._out = m(x).terms
    for k in model._out:
        torch.testing.assert_close(fresh._out[k], model._out[k], rtol=0, atol=0)


def test_seeded_training_steps_repeat(case):
    cfg, data, _, x = case[:4]

    def three_steps():
        torch.manual_seed(0)
        model = lvmkit.build_model(cfg.model, data.shape)
        model.update(data.train.x, 10**6)
        opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
        torch.manual_seed(5)
        return [{k: float(v) for k, v in model.training_step(x, s, opt).items()} for s in range(3)]

    assert three_steps() == three_steps()


def test_declared_capabilities_work(case):
    """Every capability the instance offers (its class declares it and the instance does not
    lack it) works; one the instance lacks is said in a clause, never found by calling it."""
    cfg, data, model, x = case[:4]
    model.eval()
    shape = tuple(data.shape)
    assert lvmkit.capabilities(model), "a family declares at least one capability"
    for name, cap in CAPABILITIES.items():
        if isinstance(model, cap) and not has(model, cap):
            reason = model.lacks(cap)
            assert isinstance(reason, str) and reason and "\n" not in reason, f"{name}: lacks() gives no reason"
    if has(model, Generator):
        g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
        s = model.sample(5, generator=g())
        assert s.shape == (5, *shape) and torch.isfinite(s).all()
        torch.testing.assert_close(model.sample(5, generator=g()), s, rtol=0, atol=0)
    if has(model, Encoder):
        codes = model.embed(x)
        assert codes.shape == (len(x), model.latent_dim)
        # the interface takes arrays too: converted to the model's dtype and device
        torch.testing.assert_close(model.embed(x.numpy()), codes, rtol=0, atol=0)
    if has(model, Reconstructor):
        assert model.reconstruct(x).shape == x.shape
    if has(model, DensityModel):
        assert torch.isfinite(model.log_likelihood(x[:4], 3)).all()
    if has(model, EvidenceBound):
        torch.manual_seed(1)
        bound = model.elbo(x[:4])["elbo"]
        assert bound.shape == (4,) and torch.isfinite(bound).all()
    if has(model, EnergyModel):
        e = model.energy(x[:4])
        assert e.shape == (4,) and torch.isfinite(e).all()
    if has(model, ClusterModel):
        k = model.predict_clusters(model.embed(x))
        assert k.shape == (len(x),) and 0 <= int(k.min()) and int(k.max()) < model.n_clusters
    if has(model, LatentDecoder):
        m = model.decode_mean(torch.zeros(2, model.latent_dim))
        assert m.shape == (2, *shape) and torch.isfinite(m).all()
    if has(model, Forecaster):
        p = model.predict(x[:3])
        assert p.dim() == 4 and p.shape[1:3] == (3, x.shape[-2]) and torch.isfinite(p).all()  # (S, B, T, D)


def test_config_round_trips_through_toml(case, tmp_path):
    cfg, *_ = case
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert lvmkit.load_config(path) == cfg


@pytest.mark.parametrize("name,i", FIRST, ids=[n for n, _ in FIRST])
def test_killed_run_resumes_to_the_same_weights(name, i, tmp_path):
    """Train 3 epochs straight, and 1 epoch then resume to 3 (what --resume does after a kill at
    an epoch boundary): the final weights, optimizer states and EMA weights are identical."""
    cfg, *_ = _setup(name, i, tmp_path, epochs=3, ema_decay=0.9, max_steps=None)
    cfg.data.limit = 96 if cfg.data.name != "spirals" else None
    straight = lvmkit.train(cfg, tmp_path / "straight", progress=False)
    short = cfg.model_copy(deep=True)
    short.train.epochs = 1
    part = lvmkit.train(short, tmp_path / "part", progress=False)
    (part.path / "config.toml").write_text(cfg.to_toml())  # as if the run had been killed after epoch 1
    resumed = lvmkit.resume(part.path, progress=False)
    a = lvmkit.load_checkpoint(straight.checkpoints / "last.pt")
    b = lvmkit.load_checkpoint(resumed.checkpoints / "last.pt")
    assert a["state"]["step"] == b["state"]["step"]
    for part_name in ("model", "ema"):
        for k, v in a[part_name].items():
            torch.testing.assert_close(b[part_name][k], v, rtol=0, atol=0, msg=f"{part_name}.{k}")
    for group, st in a["optimizers"].items():
        for pid, s in st["state"].items():
            for k, v in s.items():
                if isinstance(v, torch.Tensor):
                    torch.testing.assert_close(b["optimizers"][group]["state"][pid][k], v, rtol=0, atol=0)
    assert [m["train_loss"] for m in straight.read_metrics()] == [m["train_loss"] for m in resumed.read_metrics()]
