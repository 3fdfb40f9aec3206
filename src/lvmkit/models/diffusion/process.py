"""Gaussian diffusion: noise schedules, the forward process, its posterior and the variational bound.

Notation of Ho et al. 2020 (DDPM): beta_t for t = 1..T, alpha_t = 1 - beta_t, abar_t = prod
alpha_s. Tensors index timesteps from 0, so ``t`` = 0 is the paper's t = 1. Data live in
[-1, 1] here; the model maps lvmkit's [0, 1] to it.

- forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)             (Ho eq. 4)
- posterior q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I),                            (Ho eq. 6-7)
  mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
  beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
- bound -log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0                               (Ho eq. 5)
  with L_0 a discretized Gaussian decoder on 8-bit data                             (Ho sec. 3.3)
- parameterisations: eps (Ho), x0, v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022)
- learned variance: log sigma^2 = u log beta_t + (1 - u) log beta~_t                (Nichol & Dhariwal eq. 15)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.parts.distributions import kl_normal_terms

NOISE_SCHEDULES: Registry[Callable[[int], Tensor]] = Registry("noise schedule")


@NOISE_SCHEDULES.register("linear")
def linear_betas(T: int) -> Tensor:
    """Ho et al.'s beta 1e-4 -> 0.02 over T = 1000 steps; for other T the ends scale by 1000 / T
    (Nichol & Dhariwal 2021, their code) so that abar_T stays near 0."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)


@NOISE_SCHEDULES.register("cosine")
def cosine_betas(T: int, s: float = 0.008) -> Tensor:
    """abar(t) = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) pi / 2); beta_t = 1 - abar_t /
    abar_{t-1} clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17)."""
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    """log P(x) elementwise for data on ``bins`` levels in [-1, 1]: the Gaussian's mass on the bin
    [x - 1/(bins-1), x + 1/(bins-1)], the outer bins extended to -inf and +inf (Ho et al. sec. 3.3)."""
    half = 1.0 / (bins - 1)
    inv = torch.exp(-log_scale)
    upper = _std_normal_cdf((x - mean + half) * inv)
    lower = _std_normal_cdf((x - mean - half) * inv)
    mass = torch.where(x < -1 + 1e-3, upper, torch.where(x > 1 - 1e-3, 1 - lower, upper - lower))
    return torch.log(mass.clamp_min(1e-12))


class GaussianDiffusion(nn.Module):
    """The fixed quantities of a schedule (buffers, float64 for accuracy, cast when used) and the
    closed forms built from them. ``target`` is what the network predicts (eps, x0, v);
    ``variance`` is fixed-small (beta~), fixed-large (beta) or learned."""

    TARGETS = ("eps", "x0", "v")
    VARIANCES = ("fixed-small", "fixed-large", "learned")

    def __init__(self, betas: Tensor, target: str = "eps", variance: str = "fixed-small") -> None:
        super().__init__()
        if target not in self.TARGETS:
            raise ConfigError(f"Unknown prediction target {target!r}; choose one of {list(self.TARGETS)}.")
        if variance not in self.VARIANCES:
            raise ConfigError(f"Unknown variance {variance!r}; choose one of {list(self.VARIANCES)}.")
        if len(betas) < 2:
            raise ConfigError(f"A diffusion needs at least 2 timesteps, got T = {len(betas)}; set model.timesteps >= 2.")
        self.target, self.variance, self.T = target, variance, len(betas)
        betas = betas.to(torch.float64)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        for name, value in {
            "betas": betas, "abar": abar, "abar_prev": abar_prev, "post_var": post_var,
            # log beta~ with t = 1's zero replaced by beta~_2, as every implementation does
            "post_logvar": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "post_c0": betas * abar_prev.sqrt() / (1 - abar), "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
            # fixed-large: log beta_t, with t = 1's entry beta~_2 (Ho et al.'s code)
            "large_logvar": torch.log(torch.cat([post_var[1:2], betas[1:]])),
        }.items():
            self.register_buffer(name, value, persistent=False)

    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        # (batch,) -> (batch, 1, ..., 1) in like's dtype
        return getattr(self, name)[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    # -- forward process ---------------------------------------------------------------------
    def q_mean_var(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) (Ho eq. 4)."""
        ab = self._at("abar", t, x0)
        return ab.sqrt() * x0, (1 - ab).expand_as(x0)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        ab = self._at("abar", t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho eq. 6-7)."""
        mean = self._at("post_c0", t, xt) * x0 + self._at("post_ct", t, xt) * xt
        return mean, self._at("post_var", t, xt).expand_as(xt), self._at("post_logvar", t, xt).expand_as(xt)

    # -- the network's prediction -------------------------------------------------------------
    def min_snr_weight(self, t: Tensor, gamma: float) -> Tensor:
        """Min-SNR-gamma loss weights (Hang et al. 2023) per example (batch,) for the squared
        error of this process's target. With SNR_t = abar_t / (1 - abar_t), an error in the target
        is an x0 error scaled by ||eps - eps^||^2 = SNR ||x0 - x0^||^2 and ||v - v^||^2 = (1 + SNR)
        ||x0 - x0^||^2, so the x0-loss weight min(SNR_t, gamma) becomes min(SNR_t, gamma) / SNR_t on
        eps, min(SNR_t, gamma) / (1 + SNR_t) on v, and stays min(SNR_t, gamma) on x0."""
        abar = self.abar[t]
        snr = abar / (1 - abar)
        clipped = torch.clamp(snr, max=gamma)
        per_x0 = {"x0": torch.ones_like(snr), "eps": snr, "v": snr + 1}[self.target]
        return (clipped / per_x0).float()

    def target_of(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network should output for (x_0, noise) at t."""
        if self.target == "eps":
            return noise
        if self.target == "x0":
            return x0
        ab = self._at("abar", t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def predict_x0_eps(self, pred: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x_0, eps) implied by the network's prediction of its target at (x_t, t)."""
        ab = self._at("abar", t, xt)
        if self.target == "eps":
            eps = pred
            x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
        elif self.target == "x0":
            x0 = pred
            eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
        else:  # v: x_0 = sqrt(abar) x_t - sqrt(1 - abar) v, eps = sqrt(1 - abar) x_t + sqrt(abar) v
            x0 = ab.sqrt() * xt - (1 - ab).sqrt() * pred
            eps = (1 - ab).sqrt() * xt + ab.sqrt() * pred
        return x0, eps

    def p_logvar(self, t: Tensor, xt: Tensor, var_out: Tensor | None) -> Tensor:
        """log sigma_t^2 of p(x_{t-1} | x_t): fixed, or interpolated by the network's output in
        [-1, 1] between log beta~_t and log beta_t (Nichol & Dhariwal eq. 15)."""
        if self.variance == "fixed-small":
            return self._at("post_logvar", t, xt).expand_as(xt)
        if self.variance == "fixed-large":
            return self._at("large_logvar", t, xt).expand_as(xt)
        u = (var_out + 1) / 2
        return u * torch.log(self._at("betas", t, xt)) + (1 - u) * self._at("post_logvar", t, xt)

    def p_mean_logvar(self, pred: Tensor, var_out: Tensor | None, xt: Tensor, t: Tensor,
                      clip: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t), and the predicted x_0 (clipped to [-1, 1]
        when ``clip``: the data's range, as samplers do)."""
        x0, _ = self.predict_x0_eps(pred, xt, t)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return mean, self.p_logvar(t, xt, var_out), x0

    # -- the bound --------------------------------------------------------------------------
    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats."""
        t = torch.full((x0.shape[0],), self.T - 1, device=x0.device, dtype=torch.long)
        mean, var = self.q_mean_var(x0, t)
        return kl_normal_terms(mean, var.log(), torch.zeros_like(mean), torch.zeros_like(mean)).flatten(1).sum(1)

    def vlb_term(self, pred: Tensor, var_out: Tensor | None, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """Per example, in nats: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 1 and
        L_0 = -log p(x_0 | x_1) (discretized Gaussian) at t = 1 (index 0). No clipping: the
        bound is of the model as trained."""
        mean, logvar, _ = self.p_mean_logvar(pred, var_out, xt, t, clip=False)
        q_mean, _, q_logvar = self.q_posterior(x0, xt, t)
        kl = kl_normal_terms(q_mean, q_logvar, mean, logvar).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).flatten(1).sum(1)
        return torch.where(t == 0, nll, kl)
