"""Chains on |psi|^2 from lvmkit's Markov-chain kernels (:mod:`lvmkit.models.mcmc`), many chains as
one tensor (chains, *shape), with the acceptance rate of every move measured.

|psi|^2 = exp(-F) with F = -2 ln psi, so a wave function is a target of the kernels that
sample exp(-free energy):

- ``metropolis``: brute-force Metropolis, a Gaussian random-walk move of every coordinate of
  scale ``step_size`` (:class:`~lvmkit.models.mcmc.chains.MetropolisHastings`);
- ``langevin``: importance sampling, the Langevin (Fokker-Planck) drift move accepted by the
  Green's-function ratio (:class:`~lvmkit.models.mcmc.mala.MetropolisAdjustedLangevin`);
  ``step_size`` is the course's time step dt (eps = D dt = dt / 2);
- ``gibbs``: block Gibbs of the Gaussian-binary RBM, exact for psi = sqrt(F)
  (:class:`~lvmkit.models.mcmc.chains.Gibbs`);
- ``flip``: single-spin flips (the binary move of :class:`~lvmkit.models.mcmc.chains.MetropolisHastings`);
- ``exchange``: swap the spins of two random sites (:class:`Exchange`; keeps the total S^z).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.models.mcmc.base import AbstractSampler, ChainState
from lvmkit.models.mcmc.chains import Gibbs, MetropolisHastings
from lvmkit.models.mcmc.mala import MetropolisAdjustedLangevin

CONTINUOUS = ("langevin", "metropolis", "gibbs")
SPIN = ("flip", "exchange")


class Density:
    """|psi|^2 of a wave function as the kernels' target: ``free_energy`` F = -2 ln psi on their
    representation (coordinates as they are; spins +-1 as binary units x = (s + 1) / 2), and the
    RBM's conditionals for Gibbs. ``encode``/``decode`` convert chains to and from it."""

    log_sigma = torch.zeros(())  # the random-walk move's scale is step_size itself

    def __init__(self, wave) -> None:
        self.wave = wave
        self.gaussian = wave.continuous

    def encode(self, x: Tensor) -> Tensor:
        return x if self.gaussian else (x + 1) / 2

    def decode(self, x: Tensor) -> Tensor:
        return x if self.gaussian else 2 * x - 1

    def free_energy(self, x: Tensor) -> Tensor:
        return -2.0 * self.wave.log_psi(self.decode(x))

    def __call__(self, x: Tensor) -> Tensor:  # the energy of the gradient-based kernels
        return self.free_energy(x)

    def sample_h(self, x: Tensor, generator=None) -> Tensor:
        return self.wave.sample_h(x, generator)

    def sample_x(self, h: Tensor, generator=None) -> Tensor:
        return self.wave.sample_x(h, generator)


@dataclass(frozen=True)
class Exchange(AbstractSampler[Density]):
    """Metropolis with exchange moves: each chain swaps the values at two distinct random sites
    (a symmetric proposal), accepted with min(1, exp(F(x) - F(x'))); conserves the number of
    up spins. ``stats["accept_rate"]``: the fraction of chains that moved."""

    name = "exchange"
    title = "Exchange moves"
    options = ("steps",)

    steps: int = 1

    def n_steps(self, target):
        return self.steps

    def step(self, target, state, generator=None):
        x = state.x
        n, length = x.shape
        rows = torch.arange(n, device=x.device)
        i = torch.randint(0, length, (n,), generator=generator, device=x.device)
        j = (i + torch.randint(1, length, (n,), generator=generator, device=x.device)) % length
        prop = x.clone()
        prop[rows, i], prop[rows, j] = x[rows, j], x[rows, i]
        log_ratio = target.free_energy(x) - target.free_energy(prop)
        u = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)
        accept = torch.log(u) < log_ratio
        return ChainState(torch.where(accept[:, None], prop, x), state.i + 1, {"accept_rate": accept.to(x.dtype).mean()})


def make_kernel(name: str, step_size: float) -> AbstractSampler:
    """The kernel a config's ``model.sampler`` names (module docstring)."""
    if name == "metropolis":
        return MetropolisHastings(proposal=step_size)
    if name == "langevin":
        return MetropolisAdjustedLangevin(step_size=step_size / 2)
    if name == "gibbs":
        return Gibbs()
    if name == "flip":
        return MetropolisHastings()
    if name == "exchange":
        return Exchange()
    raise ConfigError(f"Unknown VMC sampler {name!r}; choose one of: {', '.join(CONTINUOUS + SPIN)}.")


@dataclass(frozen=True)
class Draw:
    """What :func:`draw` returns: ``samples`` (chains, T, *shape), the chains' last states
    ``last`` (chains, *shape), and the mean acceptance rate over every step taken."""

    samples: Tensor
    last: Tensor
    acceptance: float


@torch.no_grad()
def draw(kernel: AbstractSampler, density: Density, chains: Tensor, *, burn_in: int, samples: int, thin: int,
         generator: torch.Generator | None = None) -> Draw:
    """Advance ``chains`` (chains, *shape) ``burn_in`` steps, then keep their states every
    ``thin`` steps, ``samples`` times."""
    state = kernel.init(density, density.encode(chains))
    rates: list[Tensor] = []
    kept: list[Tensor] = []
    for t in range(burn_in + samples * thin):
        state = kernel.step(density, state, generator)
        rates.append(torch.as_tensor(state.stats.get("accept_rate", 1.0)))
        if t >= burn_in and (t - burn_in + 1) % thin == 0:
            kept.append(density.decode(state.x))
    acceptance = float(torch.stack(rates).mean()) if rates else float("nan")
    return Draw(torch.stack(kept, 1), density.decode(state.x), acceptance)


__all__ = ["CONTINUOUS", "Density", "Draw", "Exchange", "SPIN", "draw", "make_kernel"]
