"""Markov chain samplers of Boltzmann machines, as objects (:class:`~lvmkit.models.mcmc.base.AbstractSampler`):
block Gibbs and Metropolis-Hastings.

A sampler advances chains ``x`` (batch, M) of a model with a free energy and (for Gibbs)
conditionals, such as :class:`~lvmkit.models.energy.boltzmann.RBMEnergy`; every step leaves the
model's marginal p(x) = exp(-F(x)) / Z invariant (both kernels are reversible with respect to it).

- ``gibbs``: h ~ p(h | x), then x ~ p(x | h) (block Gibbs, the lecture notes' standard rule);
- ``mh``: Metropolis-Hastings on p(x): for binary units one proposed flip of a random site per
  chain and step, for Gaussian units a Gaussian random-walk move of every coordinate (scale
  ``proposal``); accept with probability min(1, exp(F(x) - F(x'))) (symmetric proposals).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.mcmc.base import AbstractSampler, ChainState


class RBMEnergy(Protocol):
    """What the chains use of a Boltzmann machine: its free energy F(x), block conditionals,
    and whether its visible units are Gaussian (with ``log_sigma``)."""

    gaussian: bool
    log_sigma: Tensor

    def free_energy(self, x: Tensor) -> Tensor: ...

    def sample_h(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

    def sample_x(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


MCMC_SAMPLERS: Registry[type[AbstractSampler]] = Registry("chain sampler")


def _check_steps(steps: int) -> None:
    if steps <= 0:
        raise ConfigError(f"A chain needs a positive number of steps, got {steps}; pass e.g. --steps 1000.")


@MCMC_SAMPLERS.register("gibbs")
@dataclass(frozen=True)
class Gibbs(AbstractSampler[RBMEnergy]):
    """Block Gibbs: all hidden units given x, then all visible units given h; ``steps``
    transitions per :meth:`run`."""

    name = "gibbs"
    title = "Gibbs sampling"
    options = ("steps",)

    steps: int = 1

    def __post_init__(self) -> None:
        _check_steps(self.steps)

    def n_steps(self, target):
        return self.steps

    def step(self, target, state, generator=None):
        return ChainState(target.sample_x(target.sample_h(state.x, generator), generator), state.i + 1)


@MCMC_SAMPLERS.register("mh")
@dataclass(frozen=True)
class MetropolisHastings(AbstractSampler[RBMEnergy]):
    """Metropolis-Hastings with symmetric proposals on the marginal p(x) ~ exp(-F(x)); ``steps``
    transitions per :meth:`run`, Gaussian moves of scale ``proposal`` sigma. The state's
    ``stats["accept_rate"]`` is the fraction of chains that moved in the last step."""

    name = "mh"
    title = "Metropolis-Hastings"
    options = ("steps", "proposal")

    steps: int = 1
    proposal: float = 0.1

    def __post_init__(self) -> None:
        _check_steps(self.steps)
        if not self.proposal > 0:
            raise ConfigError(f"The Metropolis-Hastings proposal scale must be positive, got {self.proposal}.")

    def n_steps(self, target):
        return self.steps

    def step(self, target, state, generator=None):
        x = state.x
        n, m = x.shape
        if target.gaussian:
            prop = x + self.proposal * torch.exp(target.log_sigma) * torch.randn(x.shape, generator=generator, device=x.device)
        else:
            site = torch.randint(0, m, (n,), generator=generator, device=x.device)
            prop = x.clone()
            rows = torch.arange(n, device=x.device)
            prop[rows, site] = 1 - prop[rows, site]
        log_ratio = target.free_energy(x) - target.free_energy(prop)
        accept = torch.log(torch.rand(n, generator=generator, device=x.device)) < log_ratio
        return ChainState(torch.where(accept[:, None], prop, x), state.i + 1, {"accept_rate": accept.float().mean()})


__all__ = ["Gibbs", "MCMC_SAMPLERS", "MetropolisHastings", "RBMEnergy"]
