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
- ``flip``: single-spin flips (:class:`SpinFlip`: the binary move of
  :class:`~lvmkit.models.mcmc.chains.MetropolisHastings` with the RBM's hidden fields cached);
- ``exchange``: swap the spins of two random sites (:class:`Exchange`; keeps the total S^z).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from lvmkit.core.registry import Registry
from lvmkit.models.mcmc.base import AbstractSampler, ChainState
from lvmkit.models.mcmc.chains import Gibbs, MetropolisHastings
from lvmkit.models.mcmc.mala import MetropolisAdjustedLangevin
from lvmkit.models.wavefunction.spin_rbm import log_2cosh


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
class SpinState(ChainState):
    """Chains of spins with the RBM's hidden fields theta = b + s W (chains, H) and
    sum_j log 2cosh(theta_j) (chains,) of their current states, kept up to date by the moves."""

    theta: Tensor | None = None
    log_cosh: Tensor | None = None


@dataclass(frozen=True)
class _SpinMoves:
    """What the spin moves share: ``steps`` moves per :meth:`run`, the cached fields
    (:class:`SpinState`) and the Metropolis test from them. Flipping the sites F moves theta by -2 sum_{i in F} s_i W_i, so
    F(x) - F(x') = 2 (log psi(s') - log psi(s)) = 2 [-2 sum_F a_i s_i + sum_j log 2cosh(theta'_j)
    - log 2cosh(theta_j)], with no evaluation of the RBM per step."""

    options = ("steps",)

    steps: int = 1

    def n_steps(self, target):
        return self.steps

    def init(self, target, x):
        self.check(target)
        s = target.decode(x.detach())
        theta = target.wave.theta(s)
        return SpinState(x.detach(), theta=theta, log_cosh=log_2cosh(theta).sum(-1))

    @staticmethod
    def _metropolis(target, state, prop, da, dtheta, generator, u_dtype):
        """Accept ``prop`` (chains, L), reached by the field change ``dtheta`` (chains, H) and
        the visible term sum_F a_i s_i = ``da`` (chains,), with min(1, psi'^2 / psi^2); the uniform
        draws in ``u_dtype`` (that of the move's original kernel, so that its random stream is kept)."""
        x = state.x
        theta = state.theta - 2.0 * dtheta
        log_cosh = log_2cosh(theta).sum(-1)
        log_ratio = 2.0 * (log_cosh - state.log_cosh - 2.0 * da)  # F(x) - F(x')
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=u_dtype)
        accept = torch.log(u) < log_ratio
        return SpinState(torch.where(accept[:, None], prop, x), state.i + 1, {"accept_rate": accept.to(x.dtype).mean()},
                         torch.where(accept[:, None], theta, state.theta), torch.where(accept, log_cosh, state.log_cosh))


@dataclass(frozen=True)
class SpinFlip(_SpinMoves, AbstractSampler[Density]):
    """Metropolis with single-spin flips of the spin RBM: the move of
    :class:`~lvmkit.models.mcmc.chains.MetropolisHastings` on binary units (a random site per
    chain, the same random draws in the same order, so the same chains up to rounding), with
    the hidden fields cached and updated on acceptance (:class:`_SpinMoves`).
    ``stats["accept_rate"]``: the fraction of chains that moved."""

    name = "flip"
    title = "Single-spin flips"

    def step(self, target, state, generator=None):
        x = state.x
        n, m = x.shape
        site = torch.randint(0, m, (n,), generator=generator, device=x.device)
        rows = torch.arange(n, device=x.device)
        prop = x.clone()
        prop[rows, site] = 1 - prop[rows, site]
        wave = target.wave
        s_i = 2.0 * x[rows, site] - 1.0  # the spin before the flip (chains,)
        return self._metropolis(target, state, prop, s_i * wave.a.to(x.dtype)[site],
                                s_i[:, None] * wave.w.to(x.dtype)[site], generator, torch.float32)


@dataclass(frozen=True)
class Exchange(_SpinMoves, AbstractSampler[Density]):
    """Metropolis with exchange moves: each chain swaps the values at two distinct random sites
    (a symmetric proposal), accepted with min(1, exp(F(x) - F(x'))); conserves the number of
    up spins. A swap of antiparallel spins flips both, of parallel ones changes nothing; the
    hidden fields are cached (:class:`_SpinMoves`). ``stats["accept_rate"]``: the fraction of
    chains that moved."""

    name = "exchange"
    title = "Exchange moves"

    def step(self, target, state, generator=None):
        x = state.x
        n, length = x.shape
        rows = torch.arange(n, device=x.device)
        i = torch.randint(0, length, (n,), generator=generator, device=x.device)
        j = (i + torch.randint(1, length, (n,), generator=generator, device=x.device)) % length
        prop = x.clone()
        prop[rows, i], prop[rows, j] = x[rows, j], x[rows, i]
        wave = target.wave
        a, w = wave.a.to(x.dtype), wave.w.to(x.dtype)
        s_i, s_j = 2.0 * x[rows, i] - 1.0, 2.0 * x[rows, j] - 1.0
        moved = (s_i != s_j).to(x.dtype)  # (chains,): 1 where both sites flip
        da = moved * (s_i * a[i] + s_j * a[j])
        dtheta = moved[:, None] * (s_i[:, None] * w[i] + s_j[:, None] * w[j])
        return self._metropolis(target, state, prop, da, dtheta, generator, x.dtype)


#: the kernels a config's ``model.sampler`` names (module docstring), each built from ``model.step_size``
VMC_KERNELS: Registry[Callable[[float], AbstractSampler]] = Registry("VMC sampler")
VMC_KERNELS.register("metropolis")(lambda step_size: MetropolisHastings(proposal=step_size))
VMC_KERNELS.register("langevin")(lambda step_size: MetropolisAdjustedLangevin(step_size=step_size / 2))  # eps = dt / 2
VMC_KERNELS.register("gibbs")(lambda step_size: Gibbs())
VMC_KERNELS.register("flip")(lambda step_size: SpinFlip())
VMC_KERNELS.register("exchange")(lambda step_size: Exchange())


def make_kernel(name: str, step_size: float) -> AbstractSampler:
    """The kernel a config's ``model.sampler`` names, built from its step size."""
    return VMC_KERNELS.get(name)(step_size)


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


__all__ = ["Density", "Draw", "Exchange", "SpinFlip", "SpinState", "VMC_KERNELS", "draw", "make_kernel"]
