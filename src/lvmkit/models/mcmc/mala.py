"""The Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996) on a differentiable
energy, as a sampler object (:class:`~lvmkit.models.mcmc.base.AbstractSampler`).

The proposal is the update of :class:`~lvmkit.models.mcmc.langevin.Langevin` at full noise,

    x' = x - eps grad E(x) + sqrt(2 eps) z,    z ~ N(0, I),

and the Metropolis-Hastings test with the proposal's Gaussian density (the Green's function of
the Fokker-Planck equation over one step) removes the step-size bias that the unadjusted chain
keeps: accept with probability min(1, A),

    log A = E(x) - E(x') + log G(x | x') - log G(x' | x),
    log G(y | x) = -|y - x + eps grad E(x)|^2 / (4 eps).

With E = -2 ln|psi| this is the "importance sampling" of variational Monte Carlo (the quantum
force F = 2 grad ln|psi|, diffusion constant D = 1/2, time step dt = 2 eps).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.models.mcmc.base import AbstractSampler, ChainState
from lvmkit.models.mcmc.langevin import Energy, energy_and_grad


def log_green(y: Tensor, x: Tensor, grad_x: Tensor, eps: float) -> Tensor:
    """log G(y | x) of the Langevin proposal from x (up to a constant), per chain (batch,)."""
    d = (y - x + eps * grad_x).flatten(1)
    return -(d * d).sum(1) / (4.0 * eps)


@dataclasses.dataclass(frozen=True)
class MetropolisAdjustedLangevin(AbstractSampler[Energy]):
    """MALA (module docstring): a Langevin proposal of step ``step_size`` (eps) accepted by the
    Metropolis-Hastings ratio with the proposal's Green's function; ``steps`` transitions per
    :meth:`run`. The state's ``stats`` hold ``accept_rate`` (the fraction of chains that moved)
    and, to save a gradient per step, ``energy`` and ``grad`` at the current states."""

    name = "mala"
    title = "Metropolis-adjusted Langevin"
    options = ("steps", "step_size")

    steps: int = 100
    step_size: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"Metropolis-adjusted Langevin needs a non-negative number of steps, got {self.steps}.")
        if not self.step_size > 0:
            raise ConfigError(f"The Metropolis-adjusted Langevin step size must be positive, got {self.step_size}.")

    def n_steps(self, target):
        return self.steps

    def log_acceptance(self, target: Energy, x: Tensor, prop: Tensor, current: tuple[Tensor, Tensor] | None = None
                       ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """log A of moving each chain from ``x`` to ``prop`` (batch,), and (E, grad E) at ``prop``.
        ``current``: (E, grad E) at ``x`` when known."""
        e_x, g_x = current if current is not None else energy_and_grad(target, x)
        e_p, g_p = energy_and_grad(target, prop)
        log_a = e_x - e_p + log_green(x, prop, g_p, self.step_size) - log_green(prop, x, g_x, self.step_size)
        return log_a, (e_p, g_p)

    def step(self, target, state, generator=None):
        x = state.x.detach()
        if "grad" in state.stats and "energy" in state.stats:
            e_x, g_x = state.stats["energy"], state.stats["grad"]
        else:
            e_x, g_x = energy_and_grad(target, x)
        # the proposal is the unadjusted Langevin update (mcmc.langevin.Langevin at noise = 1)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        prop = x - self.step_size * g_x + math.sqrt(2.0 * self.step_size) * z
        log_a, (e_p, g_p) = self.log_acceptance(target, x, prop, (e_x, g_x))
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        accept = torch.log(u) < log_a
        keep = accept.view(-1, *([1] * (x.dim() - 1)))
        return ChainState(torch.where(keep, prop, x), state.i + 1,
                          {"accept_rate": accept.to(x.dtype).mean(), "energy": torch.where(accept, e_p, e_x),
                           "grad": torch.where(keep, g_p, g_x)})


__all__ = ["MetropolisAdjustedLangevin", "log_green"]
