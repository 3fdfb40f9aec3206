"""Samplers of a Gaussian diffusion, as objects: ancestral DDPM and DDIM.

Both implement the shared sampler interface (:class:`~lvmkit.models.mcmc.base.AbstractSampler`)
on a :class:`ReverseProcess`: ``init`` takes x_T (the caller draws it from N(0, I)), each
``step`` calls ``denoise(x_t, t) -> (prediction, variance output or None)`` once and moves to
the next timestep of :meth:`DiffusionSampler.timesteps`, with the schedule's closed forms from
:class:`GaussianDiffusion` (:meth:`DiffusionSampler.update`). ``SAMPLERS`` resolves the names
used by configs and ``lvmkit sample --sampler``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.diffusion.process import GaussianDiffusion
from lvmkit.models.mcmc.base import AbstractSampler, ChainState
from lvmkit.models.parts.distributions import reparameterize

Denoise = Callable[[Tensor, Tensor], tuple[Tensor, Optional[Tensor]]]
SAMPLERS: Registry[type["DiffusionSampler"]] = Registry("sampler")


@dataclass(frozen=True)
class ReverseProcess:
    """What a diffusion sampler walks: the schedule's closed forms and the trained network."""

    diffusion: GaussianDiffusion
    denoise: Denoise


class DiffusionSampler(AbstractSampler[ReverseProcess]):
    """Walks x_T ~ N(0, I) down to x_0 over :meth:`timesteps`, one network call per step."""

    @property
    def stochastic(self) -> bool:
        """Whether a step adds noise (a deterministic sampler's run draws none)."""
        return True

    @abc.abstractmethod
    def timesteps(self, T: int) -> list[int]:
        """The timestep indices visited, from the noisiest down to 0."""

    @abc.abstractmethod
    def update(self, diffusion: GaussianDiffusion, pred: Tensor, var_out: Optional[Tensor], xt: Tensor, t: int,
               t_prev: int, noise: Optional[Tensor]) -> Tensor:
        """x at ``t_prev`` (-1: the data) from x at ``t`` and the network's output there."""

    def n_steps(self, target):
        return len(self.timesteps(target.diffusion.T))

    def step(self, target, state, generator=None):
        ts = self.timesteps(target.diffusion.T)
        x, i = state.x, state.i
        t, t_prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
        pred, var_out = target.denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        noise = torch.randn(x.shape, generator=generator, device=x.device) if self.stochastic and t_prev >= 0 else None
        return ChainState(self.update(target.diffusion, pred, var_out, x, t, t_prev, noise), i + 1)

    def label(self, target, state):
        ts = self.timesteps(target.diffusion.T)
        return f"t={ts[state.i] + 1}" if state.i < len(ts) else "x_0"


@SAMPLERS.register("ancestral")
@dataclass(frozen=True)
class Ancestral(DiffusionSampler):
    """Ho et al. 2020, algorithm 2: all T steps, x_{t-1} = mu_theta(x_t, t) + sigma_t z, with the
    model's variance (fixed-small, fixed-large or learned); no noise at the last step. ``steps``
    may only be T (None: T)."""

    name = "ancestral"
    title = "The ancestral sampler"
    options = ("steps",)

    steps: int | None = None

    @classmethod
    def describe(cls):
        return f"{cls.name} (steps = T only)"

    def check(self, target):
        T = target.diffusion.T
        if self.steps is not None and self.steps != T:
            raise ConfigError(f"The ancestral sampler takes all T = {T} steps, not {self.steps}; "
                              "leave --steps out, or use --sampler ddim for fewer steps.")

    def timesteps(self, T):
        return list(range(T - 1, -1, -1))

    def update(self, diffusion, pred, var_out, xt, t, t_prev, noise):
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
        mean, logvar, _ = diffusion.p_mean_logvar(pred, var_out, xt, tt, clip=True)
        return mean if t == 0 else reparameterize(mean, logvar, noise)


@SAMPLERS.register("ddim")
@dataclass(frozen=True)
class DDIM(DiffusionSampler):
    """Song et al. 2021, eq. 12, on the sub-sequence tau = 0, c, 2c, ..., (S - 1) c with c = T // S
    (their code's uniform skip; diffusers' "leading" spacing):

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),

    with abar_prev = 1 after the last step. x0_hat is clipped to [-1, 1]; eps_hat is the
    network's own. eta = 0 is deterministic; eta = 1 with S = T is the ancestral sampler with
    fixed-small variance.
    """

    name = "ddim"
    title = "DDIM"
    options = ("steps", "eta")

    steps: int = 50
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"DDIM needs a positive number of steps, got {self.steps}; pass e.g. --steps 50.")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"DDIM's eta must lie in [0, 1], got {self.eta}; 0 is deterministic, 1 is ancestral-like.")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def check(self, target):
        T = target.diffusion.T
        if self.steps > T:
            raise ConfigError(f"DDIM steps ({self.steps}) cannot exceed the model's T = {T}; pass --steps {T} or fewer.")

    def timesteps(self, T):
        c = T // self.steps
        return [i * c for i in range(self.steps - 1, -1, -1)]

    def update(self, diffusion, pred, var_out, xt, t, t_prev, noise):
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
        x0, eps = diffusion.predict_x0_eps(pred, xt, tt)
        x0 = x0.clamp(-1.0, 1.0)
        ab = float(diffusion.abar[t])
        ab_prev = float(diffusion.abar[t_prev]) if t_prev >= 0 else 1.0
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        out = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
        return out + sigma * noise if noise is not None else out


__all__ = ["Ancestral", "DDIM", "Denoise", "DiffusionSampler", "ReverseProcess", "SAMPLERS"]
