"""Optimizers as choices, one registry, and the object a family's ``training_step`` steps with.

``train.optimizer`` names an entry of :data:`OPTIMIZERS`; each entry lists the keys it takes
(with torch's defaults). Settings resolve per optimizer group, later ones winning:

    the optimizer's defaults < the family's ``optimizer_defaults[group]``
        < keys set in [train] < keys set in [train.optim.GROUP]

A key set in the config that the group's optimizer does not take (``momentum`` for adam) is
an error naming the keys it takes. Family defaults for keys the chosen optimizer does not take
are dropped (a GAN's Adam betas when the user picks SGD).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lvmkit.core.distributed import SINGLE, all_finite, average_gradients
from lvmkit.core.errors import ConfigError, TrainingDiverged
from lvmkit.core.registry import Registry


@dataclass(frozen=True)
class OptimizerSpec:
    """A torch optimizer class, the keys it takes with their defaults, and whether it has a
    fused CPU/GPU kernel (one kernel for all tensors: ~3x cheaper per step on CPU for Adam)."""

    cls: type
    defaults: dict[str, Any]
    fused: bool = False

    def build(self, params: list[nn.Parameter], settings: dict[str, Any]) -> torch.optim.Optimizer:
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()}
        if self.fused and params and all(p.device.type in ("cpu", "cuda") for p in params):
            kwargs["fused"] = True
        return self.cls(params, **kwargs)


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
_ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
OPTIMIZERS.register("adam")(OptimizerSpec(torch.optim.Adam, _ADAM, fused=True))
OPTIMIZERS.register("adamw")(OptimizerSpec(torch.optim.AdamW, {**_ADAM, "weight_decay": 1e-2}, fused=True))
# SGD with heavy-ball or Nesterov momentum (the thesis's choices).
OPTIMIZERS.register("sgd")(OptimizerSpec(torch.optim.SGD, {"lr": 1e-3, "momentum": 0.0, "nesterov": False,
                                                            "dampening": 0.0, "weight_decay": 0.0}, fused=True))
# RMSprop (the seed report's latent ODE example trains with it).
OPTIMIZERS.register("rmsprop")(OptimizerSpec(torch.optim.RMSprop, {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                                                    "centered": False, "weight_decay": 0.0}))
OPTIMIZERS.register("adagrad")(OptimizerSpec(torch.optim.Adagrad, {"lr": 1e-2, "lr_decay": 0.0, "eps": 1e-10,
                                                                    "weight_decay": 0.0}, fused=True))
OPTIMIZERS.register("adadelta")(OptimizerSpec(torch.optim.Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}))

#: every optimizer key a config may set (besides ``optimizer`` itself)
OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps", "amsgrad", "momentum", "nesterov", "dampening", "alpha",
                  "centered", "lr_decay", "rho")


def check_keys(optimizer: str, given: dict[str, Any], where: str) -> None:
    """Raise when ``given`` holds a key the optimizer does not take (``where`` names the section)."""
    spec = OPTIMIZERS.get(optimizer)
    bad = [k for k in given if k not in spec.defaults]
    if bad:
        raise ConfigError(
            f"{where} sets {', '.join(bad)} but optimizer {optimizer!r} does not take "
            f"{'it' if len(bad) == 1 else 'them'}; its keys are: {', '.join(spec.defaults)}."
        )


def resolve_group(group: str, train_cfg, family_defaults: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The optimizer name and settings of one group (see the module docstring for the order)."""
    top = {k: getattr(train_cfg, k) for k in OPTIMIZER_KEYS if getattr(train_cfg, k) is not None}
    # [train]'s optimizer when set, else the family's, else adam
    top_name = train_cfg.optimizer or family_defaults.get("optimizer", "adam")
    override = train_cfg.optim.get(group)
    over = {} if override is None else {k: getattr(override, k) for k in OPTIMIZER_KEYS if getattr(override, k) is not None}
    # The optimizer: the group's own choice, else [train]'s (or the family's).
    name = override.optimizer if override is not None and override.optimizer is not None else top_name
    spec = OPTIMIZERS.get(name)
    check_keys(name, over, f"[train.optim.{group}]")
    if name == top_name:
        check_keys(name, top, "[train]")
        inherited = top
    else:  # a group with its own optimizer inherits only the keys it takes
        inherited = {k: v for k, v in top.items() if k in spec.defaults}
    fam = {k: v for k, v in family_defaults.items() if k in spec.defaults}
    settings = {**spec.defaults, **fam, **inherited, **over}
    if name == "sgd" and settings["nesterov"] and (settings["momentum"] <= 0 or settings["dampening"] != 0):
        raise ConfigError(f"Nesterov momentum for group {group!r} needs momentum > 0 and dampening = 0; "
                          f"got momentum = {settings['momentum']}, dampening = {settings['dampening']}.")
    return name, settings


class Optimizers:
    """One optimizer per named parameter group, and :meth:`minimize`, the only way a family's
    ``training_step`` changes parameters through gradients.

    Args:
        groups: group name -> parameters (from ``model.optimizer_groups()``).
        train_cfg: the [train] section (optimizer keys, ``optim`` overrides, ``grad_clip``).
        family_defaults: group name -> settings the family prefers (``model.optimizer_defaults``).
    """

    def __init__(self, groups: dict[str, list[nn.Parameter]], train_cfg, family_defaults: dict[str, dict] | None = None) -> None:
        unknown = sorted(set(train_cfg.optim) - set(groups))
        if unknown:
            raise ConfigError(f"[train.optim.{unknown[0]}] names no optimizer group of this model; its groups are: "
                              f"{', '.join(groups)}.")
        self.grad_clip = float(train_cfg.grad_clip)
        self.params = {name: [p for p in ps if p.requires_grad] for name, ps in groups.items()}
        self.settings: dict[str, dict[str, Any]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for name, ps in self.params.items():
            opt_name, settings = resolve_group(name, train_cfg, (family_defaults or {}).get(name, {}))
            self.settings[name] = {"optimizer": opt_name, **settings}
            self.optimizers[name] = OPTIMIZERS.get(opt_name).build(ps, settings)
        self.lr_factor = 1.0  # set by the loop before each step (learning-rate schedules)
        # Several processes (torchrun): gradients are averaged, weighted by this process's
        # share of the global batch, which the loop sets before each step.
        self.world, self.share_weight = SINGLE, 1.0
        self.steps = {name: 0 for name in self.params}
        # fp16 training: one gradient scaler per group (loss scaling against underflow)
        self.scalers: dict[str, Any] = {}
        if getattr(train_cfg, "precision", "fp32") == "fp16":
            self.scalers = {name: torch.amp.GradScaler("cuda") for name in self.params}

    def minimize(self, group: str, loss: Tensor) -> None:
        """zero_grad, backward, clip, schedule, step, for one group.

        Raises:
            TrainingDiverged: the loss is NaN or infinite (nothing is stepped).
        """
        if group not in self.optimizers:
            raise KeyError(f"no optimizer group {group!r}; groups are {list(self.optimizers)}")
        if not all_finite(self.world, loss):
            raise TrainingDiverged(f"the {group!r} loss became {float(loss.detach())}"
                                   + (" in one of the processes" if self.world.active else ""))
        params, opt = self.params[group], self.optimizers[group]
        for p in params:
            p.grad = None
        scaler = self.scalers.get(group)
        (scaler.scale(loss) if scaler else loss).backward()
        average_gradients(self.world, params, self.share_weight)
        if scaler:
            scaler.unscale_(opt)  # clipping sees the true gradients
        if self.grad_clip > 0:
            # Rescale only when the norm exceeds the limit (clip_grad_norm_ always rescales).
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            if norm > self.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm)
        base = self.settings[group]["lr"]
        for g in opt.param_groups:
            g["lr"] = base * self.lr_factor
        if scaler:
            scaler.step(opt)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            opt.step()
        self.steps[group] += 1

    def state_dict(self) -> dict[str, Any]:
        state = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        if self.scalers:
            state["_grad_scalers"] = {name: sc.state_dict() for name, sc in self.scalers.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.optimizers) - set(state))
        if missing:
            from lvmkit.core.errors import CheckpointError

            raise CheckpointError(f"The checkpoint holds no optimizer state for group(s) {', '.join(missing)}; "
                                  "it was written for another model, retrain or resume the right run.")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        for name, sc in self.scalers.items():
            if name in state.get("_grad_scalers", {}):
                sc.load_state_dict(state["_grad_scalers"][name])


class EMA:
    """Exponential moving average of a model's parameters, ``ema <- d_s * ema + (1 - d_s) *
    current`` after optimisation step s (Polyak averaging; the DCGAN/DDPM practice).

    With ``warmup`` (the default) the average copies the weights for the first ``start`` steps
    and then its decay grows with the steps since, d = min(decay, (1 + u) / (10 + u)) with
    u = s - start (TensorFlow's ExponentialMovingAverage with ``num_updates``, begun late as
    diffusers' ``update_after_step``): a short run's average no longer carries the
    initialisation (0.9995^4220 = 12% of it after 4,220 steps at a fixed 0.9995), and while the
    model still improves fast the average does not lag behind it (200 steps of the digits DDPM:
    FD 170.6 with the warm-up from step 0, 135.6 with (1 + u) / (50 + u), raw weights 127.8).
    ``warmup = False`` keeps the fixed decay from the first step. Buffers (batch-norm statistics, spectral norm's power-iteration vectors, chains)
    are copied, not averaged: an average of unit vectors or of a chain's states is neither."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True, start: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must lie in (0, 1) to average weights, got {decay}; use e.g. 0.999, or 0 to turn EMA off.")
        self.decay, self.warmup, self.start = decay, warmup, start
        self.averaged = {name for name, p in model.named_parameters() if p.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int | None) -> float:
        """The decay applied by the update after optimisation step ``step`` (0-based)."""
        if not self.warmup or step is None:
            return self.decay
        if step < self.start:
            return 0.0
        u = step - self.start
        return min(self.decay, (1.0 + u) / (10.0 + u))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Average after optimisation step ``step`` (0-based; None: the fixed decay)."""
        state = model.state_dict()
        names = [k for k in state if k in self.averaged]
        if names:  # one fused pass over every averaged tensor
            torch._foreach_lerp_([self.shadow[k] for k in names], [state[k].detach() for k in names],
                                 1.0 - self.decay_at(step))
        for k, v in state.items():
            if k in self.averaged:
                continue
            s = self.shadow[k]
            if s.shape == v.shape:
                s.copy_(v)
            else:  # a buffer that changed size (DEC's assignments)
                self.shadow[k] = v.detach().clone()

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.shadow = {k: v.detach().clone() for k, v in state.items()}


def lr_factor(schedule: str, step: int, planned: float, final: float, warmup: int = 0) -> float:
    """The learning-rate multiplier at ``step`` (a pure function of the step: exact on resume):
    a linear warm-up over ``warmup`` steps, then the schedule over the remaining steps."""
    from lvmkit.core.schedules import cosine_decay, linear_warmup

    factor = linear_warmup(step + 1, warmup) if warmup else 1.0
    if schedule == "constant":
        return factor
    return factor * cosine_decay(step - warmup, planned - warmup, final) if step >= warmup else factor


__all__ = ["EMA", "OPTIMIZERS", "OPTIMIZER_KEYS", "OptimizerSpec", "Optimizers", "check_keys", "lr_factor", "resolve_group"]
