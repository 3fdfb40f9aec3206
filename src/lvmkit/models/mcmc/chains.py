"""Markov chain samplers of energy models, as objects: block Gibbs and Metropolis-Hastings.

A sampler advances chains ``x`` (batch, M) of a model with a free energy and (for Gibbs)
conditionals, such as :class:`~lvmkit.models.energy.boltzmann.RBMEnergy`, for a number of steps; every step leaves the model's marginal p(x) = exp(-F(x)) / Z invariant.

- ``gibbs``: h ~ p(h | x), then x ~ p(x | h) (block Gibbs, the lecture notes' standard rule);
- ``mh``: Metropolis-Hastings on p(x): for binary units one proposed flip of a random site per
  chain and step, for Gaussian units a Gaussian random-walk move of every coordinate (scale
  ``proposal``); accept with probability min(1, exp(F(x) - F(x'))) (symmetric proposals).
"""
from __future__ import annotations

import abc
from typing import Callable, Protocol

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry


class RBMEnergy(Protocol):
    """What the chains use of a Boltzmann machine: its free energy F(x), block conditionals,
    and whether its visible units are Gaussian (with ``log_sigma``)."""

    gaussian: bool
    log_sigma: Tensor

    def free_energy(self, x: Tensor) -> Tensor: ...

    def sample_h(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

    def sample_x(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

MCMC_SAMPLERS: Registry[Callable[..., "ChainSampler"]] = Registry("chain sampler")


class ChainSampler(abc.ABC):
    """Advances Markov chains whose stationary distribution is the model's p(x)."""

    def __init__(self, steps: int | None = None) -> None:
        if steps is not None and steps <= 0:
            raise ConfigError(f"A chain needs a positive number of steps, got {steps}; pass e.g. --steps 1000.")
        self.steps = steps

    @abc.abstractmethod
    def step(self, rbm: RBMEnergy, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One transition of every chain (rows of ``x``)."""

    @torch.no_grad()
    def run(self, rbm: RBMEnergy, x: Tensor, steps: int, generator: torch.Generator | None = None,
            keep: int = 0) -> tuple[Tensor, list[tuple[str, Tensor]]]:
        """``steps`` transitions from ``x``; also ``keep`` evenly spaced states ("step s", x)."""
        marks = {round(i * steps / max(keep - 1, 1)) for i in range(keep)} if keep else set()
        chain = [("step 0", x.clone())] if 0 in marks else []
        for s in range(1, steps + 1):
            x = self.step(rbm, x, generator)
            if s in marks:
                chain.append((f"step {s}", x.clone()))
        return x, chain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"


@MCMC_SAMPLERS.register("gibbs")
class Gibbs(ChainSampler):
    """Block Gibbs: all hidden units given x, then all visible units given h."""

    def __init__(self, steps: int | None = None, eta: float | None = None) -> None:
        if eta is not None:
            raise ConfigError("Gibbs sampling takes no eta; leave --eta out.")
        super().__init__(steps)

    def step(self, rbm, x, generator=None):
        return rbm.sample_x(rbm.sample_h(x, generator), generator)


@MCMC_SAMPLERS.register("mh")
class MetropolisHastings(ChainSampler):
    """Metropolis-Hastings with symmetric proposals on the marginal p(x) ~ exp(-F(x))."""

    def __init__(self, steps: int | None = None, eta: float | None = None, proposal: float = 0.1) -> None:
        if eta is not None:
            raise ConfigError("Metropolis-Hastings takes no eta; leave --eta out.")
        if proposal <= 0:
            raise ConfigError(f"The Metropolis-Hastings proposal scale must be positive, got {proposal}.")
        super().__init__(steps)
        self.proposal = proposal
        self.accepted = 0.0  # acceptance rate of the last step

    def step(self, rbm, x, generator=None):
        n, m = x.shape
        if rbm.gaussian:
            prop = x + self.proposal * torch.exp(rbm.log_sigma) * torch.randn(x.shape, generator=generator, device=x.device)
        else:
            site = torch.randint(0, m, (n,), generator=generator, device=x.device)
            prop = x.clone()
            rows = torch.arange(n, device=x.device)
            prop[rows, site] = 1 - prop[rows, site]
        log_ratio = rbm.free_energy(x) - rbm.free_energy(prop)
        accept = torch.log(torch.rand(n, generator=generator, device=x.device)) < log_ratio
        self.accepted = float(accept.float().mean())
        return torch.where(accept[:, None], prop, x)


def make_chain_sampler(name: str, steps: int | None = None, eta: float | None = None) -> ChainSampler:
    """The chain sampler ``name`` (gibbs, mh), validated."""
    return MCMC_SAMPLERS.get(name)(steps=steps, eta=eta)
