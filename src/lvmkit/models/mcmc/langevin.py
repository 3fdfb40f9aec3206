"""Langevin dynamics on a differentiable energy, as a sampler object
(:class:`~lvmkit.models.mcmc.base.AbstractSampler`: ``init``/``step``/``run``). It needs only grad_x E,
so any energy network can use it; the RBM's Gibbs and Metropolis-Hastings samplers, which use
the free energy's structure, are in :mod:`lvmkit.models.mcmc.chains`.

One step of the unadjusted Langevin algorithm (ULA; stochastic-gradient Langevin dynamics,
Welling & Teh 2011, when the gradient is a minibatch estimate) with step size eps:

    x <- x - eps grad E(x) + noise * sqrt(2 eps) z,    z ~ N(0, I).

With ``noise = 1`` its stationary distribution tends to p(x) ~ exp(-E(x)) as eps -> 0 (the
bias is O(eps)); with ``noise = sqrt(T)`` it tends to exp(-E(x) / T). Energy-based models trained
with short chains (Du & Mordatch 2019; Nijkamp et al. 2019) use a large step and a much smaller
noise than the exact value, i.e. a low temperature: Du & Mordatch's x <- x - lambda grad E +
sigma z with lambda = 10, sigma = 0.005 is ``step_size = 10``, ``noise = 0.005 / sqrt(20)``.

Optional parts, each applied at every step: ``grad_clip`` clamps each component of grad E to
[-grad_clip, grad_clip] (the practice of Du & Mordatch's PyTorch re-implementations; it bounds
how far one step moves a pixel), and ``bounds`` clamps x to the data's range.

:data:`GRADIENT_SAMPLERS` resolves the names that configs and ``lvmkit sample --sampler`` use.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.mcmc.base import AbstractSampler, ChainState

Energy = Callable[[Tensor], Tensor]  # (batch, *shape) -> (batch,)
GRADIENT_SAMPLERS: Registry[type] = Registry("gradient-based sampler")


def energy_and_grad(energy: Energy, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) (batch,) and grad_x sum_i E(x_i) (batch, *shape): each example's own gradient (the
    energies are per example), both detached. Works under ``torch.no_grad``; builds no graph
    through the parameters' ``.grad``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), grad


def energy_grad(energy: Energy, x: Tensor) -> Tensor:
    """grad_x sum_i E(x_i) alone (:func:`energy_and_grad`)."""
    return energy_and_grad(energy, x)[1]


@GRADIENT_SAMPLERS.register("langevin")
@dataclasses.dataclass(frozen=True)
class Langevin(AbstractSampler[Energy]):
    """The unadjusted Langevin sampler (see the module docstring for the update); options:
    ``steps``, ``step_size``, ``noise``, ``grad_clip`` (``bounds`` is the model's data range).

    Args:
        steps: Langevin steps per call of :meth:`run`.
        step_size: eps, the drift's step (the noise's variance is 2 eps noise^2).
        noise: the multiplier of the exact noise sqrt(2 eps) z: 1 samples exp(-E), sqrt(T) the
            tempered exp(-E / T), 0 is gradient descent on E.
        grad_clip: clamp each component of grad E to [-grad_clip, grad_clip]; 0: no clipping.
        bounds: clamp x to [low, high] after every step; None: unbounded.
    """

    name = "langevin"
    title = "Langevin"
    options = ("steps", "step_size", "noise", "grad_clip")

    steps: int = 60
    step_size: float = 10.0
    noise: float = 0.005 / math.sqrt(20.0)
    grad_clip: float = 0.03
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"Langevin needs a non-negative number of steps, got {self.steps}; pass e.g. --steps 60.")
        if not self.step_size > 0:
            raise ConfigError(f"The Langevin step size must be positive, got {self.step_size}.")
        if self.noise < 0:
            raise ConfigError(f"The Langevin noise scale must be non-negative, got {self.noise}; 1 is exact sampling.")
        if self.grad_clip < 0:
            raise ConfigError(f"The Langevin grad_clip must be non-negative (0: off), got {self.grad_clip}.")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ConfigError(f"Langevin bounds must be (low, high) with low < high, got {self.bounds}.")

    def n_steps(self, target):
        return self.steps

    def step(self, target, state, generator=None):
        """One Langevin update of every chain (noise from ``generator``, or torch's global
        stream); the new states are detached."""
        grad = energy_grad(target, state.x)
        if self.grad_clip > 0:
            grad = grad.clamp(-self.grad_clip, self.grad_clip)
        x = state.x.detach() - self.step_size * grad
        if self.noise > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + self.noise * math.sqrt(2.0 * self.step_size) * z
        if self.bounds is not None:
            x = x.clamp(*self.bounds)
        return ChainState(x, state.i + 1)


__all__ = ["Energy", "GRADIENT_SAMPLERS", "Langevin", "energy_and_grad", "energy_grad"]
