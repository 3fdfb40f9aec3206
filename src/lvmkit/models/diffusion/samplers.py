"""Samplers of a Gaussian diffusion, as objects: ancestral DDPM and DDIM.

A sampler walks from x_T ~ N(0, I) to x_0 calling ``denoise(x_t, t) -> (prediction, variance
output or None)``; the schedule's closed forms come from :class:`GaussianDiffusion`.
``SAMPLERS`` resolves the names used by configs and ``lvmkit sample --sampler``.
"""
from __future__ import annotations

import abc
from typing import Callable, Optional

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.diffusion.process import GaussianDiffusion

Denoise = Callable[[Tensor, Tensor], tuple[Tensor, Optional[Tensor]]]
SAMPLERS: Registry[Callable[..., "Sampler"]] = Registry("sampler")


class Sampler(abc.ABC):
    """Draws x_0 from a trained diffusion."""

    #: whether ``step`` adds noise (a deterministic sampler's run draws none)
    stochastic: bool = True

    @abc.abstractmethod
    def timesteps(self, T: int) -> list[int]:
        """The timestep indices visited, from the noisiest down to 0."""

    @abc.abstractmethod
    def step(self, diffusion: GaussianDiffusion, pred: Tensor, var_out: Optional[Tensor], xt: Tensor, t: int,
             t_prev: int, noise: Tensor) -> Tensor:
        """x at ``t_prev`` (-1: the data) from x at ``t`` and the network's output there."""

    def check(self, diffusion: GaussianDiffusion) -> None:
        """Raise ConfigError if this sampler cannot run on ``diffusion``."""

    @torch.no_grad()
    def run(self, diffusion: GaussianDiffusion, denoise: Denoise, shape: tuple[int, ...], *,
            generator: torch.Generator | None = None, device: torch.device | str = "cpu",
            keep: int = 0) -> tuple[Tensor, list[tuple[str, Tensor]]]:
        """Sample (shape[0] examples); also return ``keep`` evenly spaced states ("t=...", x_t) of
        the chain, x_T first and ("x_0", x) last, for the report's chain strip."""
        self.check(diffusion)
        x = torch.randn(shape, generator=generator, device=device)
        ts = self.timesteps(diffusion.T)
        marks = {round(i * (len(ts) - 1) / max(keep - 1, 1)) for i in range(keep)} if keep else set()
        chain = []
        for i, t in enumerate(ts):
            if i in marks:
                chain.append((f"t={t + 1}", x.clone()))
            tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
            pred, var_out = denoise(x, tt)
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            noise = torch.randn(shape, generator=generator, device=device) if self.stochastic and t_prev >= 0 else None
            x = self.step(diffusion, pred, var_out, x, t, t_prev, noise)
        if keep:
            chain.append(("x_0", x.clone()))
        return x, chain


@SAMPLERS.register("ancestral")
class Ancestral(Sampler):
    """Ho et al. 2020, algorithm 2: all T steps, x_{t-1} = mu_theta(x_t, t) + sigma_t z, with the
    model's variance (fixed-small, fixed-large or learned); no noise at the last step."""

    def __init__(self, steps: int | None = None, eta: float | None = None) -> None:
        self.steps = steps
        if eta is not None:
            raise ConfigError("The ancestral sampler takes no eta (its variance is the model's); use --sampler ddim for eta.")

    def check(self, diffusion):
        if self.steps is not None and self.steps != diffusion.T:
            raise ConfigError(f"The ancestral sampler takes all T = {diffusion.T} steps, not {self.steps}; "
                              "leave --steps out, or use --sampler ddim for fewer steps.")

    def timesteps(self, T):
        return list(range(T - 1, -1, -1))

    def step(self, diffusion, pred, var_out, xt, t, t_prev, noise):
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
        mean, logvar, _ = diffusion.p_mean_logvar(pred, var_out, xt, tt, clip=True)
        return mean if t == 0 else mean + torch.exp(0.5 * logvar) * noise


@SAMPLERS.register("ddim")
class DDIM(Sampler):
    """Song et al. 2021, eq. 12, on the sub-sequence tau = 0, c, 2c, ..., (S - 1) c with c = T // S
    (their code's uniform skip; diffusers' "leading" spacing):

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),

    with abar_prev = 1 after the last step. x0_hat is clipped to [-1, 1]; eps_hat is the
    network's own. eta = 0 is deterministic; eta = 1 with S = T is the ancestral sampler with
    fixed-small variance.
    """

    def __init__(self, steps: int | None = 50, eta: float | None = 0.0) -> None:
        steps = 50 if steps is None else steps
        eta = 0.0 if eta is None else eta
        if steps <= 0:
            raise ConfigError(f"DDIM needs a positive number of steps, got {steps}; pass e.g. --steps 50.")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"DDIM's eta must lie in [0, 1], got {eta}; 0 is deterministic, 1 is ancestral-like.")
        self.steps, self.eta = steps, eta
        self.stochastic = eta > 0

    def check(self, diffusion):
        if self.steps > diffusion.T:
            raise ConfigError(f"DDIM steps ({self.steps}) cannot exceed the model's T = {diffusion.T}; pass --steps {diffusion.T} or fewer.")

    def timesteps(self, T):
        c = T // self.steps
        return [i * c for i in range(self.steps - 1, -1, -1)]

    def step(self, diffusion, pred, var_out, xt, t, t_prev, noise):
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
        x0, eps = diffusion.predict_x0_eps(pred, xt, tt)
        x0 = x0.clamp(-1.0, 1.0)
        ab = float(diffusion.abar[t])
        ab_prev = float(diffusion.abar[t_prev]) if t_prev >= 0 else 1.0
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        out = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
        return out + sigma * noise if noise is not None else out


def make_sampler(name: str, steps: int | None = None, eta: float | None = None) -> Sampler:
    """The sampler ``name`` with its settings (None: its defaults), validated."""
    return SAMPLERS.get(name)(steps=steps, eta=eta)
