"""Optimizers as choices: each registered optimizer takes the same steps as torch's own on a
quadratic, settings resolve per group, keys an optimizer does not take are errors; EMA."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lvmkit
from lvmkit import OPTIMIZERS, ConfigError, Optimizers, TrainingDiverged
from lvmkit.core.optim import EMA

A = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)


def _quadratic(p: torch.Tensor) -> torch.Tensor:
    return 0.5 * p @ A @ p - p.sum()


def _train(**train):
    return lvmkit.make_config({"train": {"grad_clip": 0, **train}}).train


CASES = {
    "adam": ({"betas": [0.8, 0.99], "eps": 1e-6}, {"betas": (0.8, 0.99), "eps": 1e-6}),
    "adamw": ({"weight_decay": 0.1}, {"weight_decay": 0.1}),
    "sgd": ({"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ({"alpha": 0.9, "momentum": 0.5, "centered": True}, {"alpha": 0.9, "momentum": 0.5, "centered": True}),
    "adagrad": ({"lr_decay": 0.01}, {"lr_decay": 0.01}),
    "adadelta": ({"rho": 0.8}, {"rho": 0.8}),
}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_matches_torch_on_a_quadratic(name):
    keys, torch_kwargs = CASES[name]
    ours = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    theirs = nn.Parameter(ours.detach().clone())
    opt = Optimizers({"main": [ours]}, _train(optimizer=name, lr=0.05, **keys))
    ref = OPTIMIZERS.get(name).cls([theirs], lr=0.05, **torch_kwargs)
    for _ in range(25):
        opt.minimize("main", _quadratic(ours))
        ref.zero_grad()
        _quadratic(theirs).backward()
        ref.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-12, atol=1e-12)
    assert _quadratic(ours) < _quadratic(torch.tensor([1.0, -2.0], dtype=torch.float64))  # it descends


def test_settings_resolve_per_group_in_order():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    family = {"g": {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999)},
              "d": {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}}
    cfg = lvmkit.make_config({"train": {"optim": {"d": {"lr": 1e-4, "betas": [0.0, 0.9]}}}}).train
    opt = Optimizers({"g": [a], "d": [b]}, cfg, family)
    assert opt.settings["g"]["lr"] == 2e-4 and tuple(opt.settings["g"]["betas"]) == (0.5, 0.999)
    assert opt.settings["d"]["lr"] == 1e-4 and tuple(opt.settings["d"]["betas"]) == (0.0, 0.9)
    # [train] keys set explicitly beat the family's defaults
    opt = Optimizers({"g": [a], "d": [b]}, _train(lr=1e-3), family)
    assert opt.settings["g"]["lr"] == 1e-3 and tuple(opt.settings["g"]["betas"]) == (0.5, 0.999)
    # choosing another optimizer drops the family's keys that it does not take
    opt = Optimizers({"g": [a], "d": [b]}, _train(optimizer="sgd", momentum=0.9), family)
    assert opt.settings["d"] == {"optimizer": "sgd", "lr": 2e-4, "momentum": 0.9, "nesterov": False, "dampening": 0.0,
                                 "weight_decay": 0.0}
    assert isinstance(opt.optimizers["d"], torch.optim.SGD)


def test_keys_an_optimizer_does_not_take_are_errors():
    with pytest.raises(ConfigError, match=r"\[train\] sets momentum but optimizer 'adam' does not take it; its keys are: lr, betas"):
        lvmkit.make_config({"train": {"optimizer": "adam", "momentum": 0.9}})
    with pytest.raises(ConfigError, match=r"sets rho but optimizer 'sgd' does not take it"):
        lvmkit.make_config({"train": {"optim": {"discriminator": {"optimizer": "sgd", "rho": 0.9}}}})
    with pytest.raises(ConfigError, match=r"Unknown optimizer 'adamm'; choose one of: adadelta, adagrad, adam, adamw, rmsprop, sgd"):
        lvmkit.make_config({"train": {"optimizer": "adamm"}})
    with pytest.raises(ConfigError, match=r"Nesterov momentum for group 'main' needs momentum > 0"):
        Optimizers({"main": [nn.Parameter(torch.zeros(1))]}, _train(optimizer="sgd", nesterov=True))
    with pytest.raises(ConfigError, match=r"\[train.optim.critic\] names no optimizer group of this model; its groups are: main"):
        Optimizers({"main": [nn.Parameter(torch.zeros(1))]}, lvmkit.make_config({"train": {"optim": {"critic": {"lr": 1}}}}).train)


def test_minimize_refuses_a_non_finite_loss_without_stepping():
    p = nn.Parameter(torch.ones(2))
    opt = Optimizers({"main": [p]}, _train())
    with pytest.raises(TrainingDiverged, match=r"the 'main' loss became nan"):
        opt.minimize("main", p.sum() * float("nan"))
    torch.testing.assert_close(p.detach(), torch.ones(2))


def test_minimize_steps_only_its_group_and_clips():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = Optimizers({"a": [a], "b": [b]}, _train(optimizer="sgd", lr=1.0, grad_clip=0.5))
    opt.minimize("a", 10 * (a.sum() + b.sum()))
    torch.testing.assert_close(b.detach(), torch.ones(3))  # the other group is untouched
    # gradient 10 per entry (norm 10 sqrt 3) is rescaled to norm 0.5
    torch.testing.assert_close(a.detach(), torch.ones(3) - 0.5 / 3**0.5)


def test_ema_is_the_exponential_average_of_the_weights():
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, 0.9)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            m.weight.fill_(value)
        ema.update(m)
    expected = 0.0
    for value in (1.0, 2.0, 3.0):
        expected = 0.9 * expected + 0.1 * value
    torch.testing.assert_close(ema.state_dict()["weight"], torch.full((1, 2), expected))
    with pytest.raises(ConfigError, match=r"train.ema_decay must lie in \(0, 1\)"):
        EMA(m, 1.0)
