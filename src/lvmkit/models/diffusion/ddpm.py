"""Denoising diffusion probabilistic models (Ho et al. 2020) with DDIM sampling (Song et al. 2021).

The model maps lvmkit's data in [0, 1] to [-1, 1], trains a denoiser (:mod:`lvmkit.models.diffusion.denoisers`)
to predict eps, x0 or v at a uniformly drawn timestep, and keeps the schedule's closed forms in
:class:`~lvmkit.models.diffusion.process.GaussianDiffusion`. Losses (``model.loss``):

- ``simple``: E_t ||target - prediction||^2 per dimension (Ho et al. eq. 14); with
  ``min_snr_gamma`` each timestep weighted by min(SNR_t, gamma) in x0 units (Hang et al. 2023);
- ``vlb``: T E_t[L_{t-1}] / D, the variational bound's terms sampled uniformly;
- ``hybrid``: simple + ``vlb_weight`` x vlb with the mean's gradient stopped in the vlb part, so
  the bound trains only the learned variance (Nichol & Dhariwal 2021, sec. 3.1).

``lvmkit evaluate`` computes the whole bound, all T terms and L_T, per test example.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lvmkit.core.config import ModelConfig
from lvmkit.core.contract import (FAMILIES, AbstractModel, DensityModel, EvidenceBound, Family, IterativeGenerator,
                                  LossOutput)
from lvmkit.core.errors import ConfigError
from lvmkit.models.diffusion.denoisers import DENOISERS
from lvmkit.models.diffusion.process import NOISE_SCHEDULES, GaussianDiffusion
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.diffusion.samplers import DDIM, SAMPLERS, Ancestral, DiffusionSampler, ReverseProcess
from lvmkit.models.mcmc.base import choose_sampler


class DDPMConfig(ModelConfig):
    """``[model]`` of the diffusion family."""

    kind: str = "ddpm"
    timesteps: int = Field(1000, ge=2)
    schedule: str = "linear"  # a name in NOISE_SCHEDULES: linear, cosine
    target: Literal["eps", "x0", "v"] = "eps"
    loss: Literal["simple", "vlb", "hybrid"] = "simple"
    variance: Literal["fixed-small", "fixed-large", "learned"] = "fixed-small"
    vlb_weight: float = Field(0.001, ge=0.0)  # hybrid's lambda (Nichol & Dhariwal: 0.001)
    # Min-SNR-gamma weighting of the simple loss (Hang et al. 2023; they use gamma = 5); None: off.
    min_snr_gamma: Optional[float] = Field(None, gt=0.0)
    # "auto": a U-Net for images (C, H, W), an MLP for tables.
    denoiser: Literal["auto", "unet", "mlp"] = "auto"
    channels: Optional[list[int]] = None  # None: sized from the input (see default_channels)
    blocks: int = Field(1, ge=1)  # residual blocks per resolution
    attention: Optional[bool] = None  # self-attention at the lowest resolution (None: on for the U-Net)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # What `lvmkit sample`, the sample grids and `lvmkit quality` use unless told otherwise.
    sampler: str = "ancestral"
    sample_steps: Optional[int] = Field(None, gt=0)
    eta: Optional[float] = None

    @model_validator(mode="after")
    def _check(self) -> "DDPMConfig":
        NOISE_SCHEDULES.get(self.schedule)  # unknown names: the registry's error lists the valid ones
        if self.channels is not None and (not self.channels or any(c <= 0 for c in self.channels)):
            raise ConfigError(f"model.channels must be a non-empty list of positive widths, got {self.channels}.")
        if self.variance == "learned" and self.loss == "simple":
            raise ConfigError("model.variance = 'learned' gets no gradient from the simple loss; set model.loss = "
                              "'hybrid' (or 'vlb'), or use a fixed variance.")
        if self.sample_steps is not None and self.sample_steps > self.timesteps:
            raise ConfigError(f"model.sample_steps = {self.sample_steps} exceeds model.timesteps = {self.timesteps}; "
                              "lower it.")
        diffusion_samplers(self)  # the sampler named, with the settings given
        return self


def default_channels(shape: tuple[int, ...]) -> list[int]:
    """Widths by input size: small U-Nets for 8x8 (0.7 M parameters) and 28x28 (1.1 M, two
    downsamplings so attention runs at 7x7: 3x faster on a CPU than [64, 128] at 14x14)."""
    if len(shape) != 3:
        return [256, 256]
    side = min(shape[1:])
    return [32, 64] if side <= 16 else [32, 64, 64] if side <= 32 else [32, 64, 128, 128]


def diffusion_samplers(cfg: DDPMConfig) -> dict[str, DiffusionSampler]:
    """The samplers of a DDPM, the config's ``sampler`` first with ``sample_steps`` (not the
    ancestral sampler's: it takes all T) and ``eta``; DDIM otherwise takes min(50, T) steps."""
    SAMPLERS.get(cfg.sampler)  # an unknown name: the registry's error lists the valid ones
    own = {"ancestral": Ancestral(), "ddim": DDIM(steps=min(50, cfg.timesteps))}
    first = choose_sampler(own, cfg.sampler, {"steps": cfg.sample_steps if cfg.sampler != "ancestral" else None,
                                              "eta": cfg.eta}, "DDPM")
    return {cfg.sampler: first, **{k: v for k, v in own.items() if k != cfg.sampler}}


class DDPM(AbstractModel, IterativeGenerator, DensityModel, EvidenceBound):
    """A denoiser and a fixed Gaussian diffusion; samples with an ancestral or DDIM sampler object."""

    data_support = (0.0, 1.0)
    # The objective is a Monte Carlo draw over t: a noisy validation number. The last (EMA)
    # checkpoint is the model, as in every diffusion code base.
    selection_metric = None

    def __init__(self, denoiser: nn.Module, diffusion: GaussianDiffusion, *, input_shape: tuple[int, ...],
                 loss: str = "simple", vlb_weight: float = 0.001,
                 samplers: dict[str, DiffusionSampler] | None = None, min_snr_gamma: float | None = None) -> None:
        super().__init__()
        self.denoiser, self.diffusion = denoiser, diffusion
        self.input_shape = tuple(input_shape)
        self.loss_kind, self.vlb_weight = loss, vlb_weight
        self.min_snr_gamma = min_snr_gamma
        self._samplers = samplers or {"ancestral": Ancestral(), "ddim": DDIM(steps=min(50, diffusion.T))}

    @property
    def dims(self) -> int:
        return math.prod(self.input_shape)

    def denoise(self, xt: Tensor, t: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """The network's prediction of its target and, with a learned variance, its variance output."""
        out = self.denoiser(xt, t)
        if self.diffusion.variance != "learned":
            return out, None
        pred, var_out = out.chunk(2, dim=1)
        return pred, var_out

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None, *, t: Tensor | None = None,
                noise: Tensor | None = None) -> LossOutput:
        x0 = 2 * x - 1
        n = x0.shape[0]
        t = torch.randint(0, self.diffusion.T, (n,), device=x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.diffusion.q_sample(x0, t, noise)
        pred, var_out = self.denoise(xt, t)
        per_example = (pred - self.diffusion.target_of(x0, noise, t)).pow(2).flatten(1).mean(1)
        mse = per_example.mean()
        terms = {"mse": mse.detach()}
        simple = mse if self.min_snr_gamma is None else (self.diffusion.min_snr_weight(t, self.min_snr_gamma) * per_example).mean()
        loss = simple if self.loss_kind != "vlb" else 0.0
        if self.loss_kind != "simple":
            # hybrid: the bound's gradient reaches the variance only (mean stopped)
            mean_pred = pred.detach() if self.loss_kind == "hybrid" else pred
            vlb = self.diffusion.T * self.diffusion.vlb_term(mean_pred, var_out, x0, xt, t).mean() / self.dims
            terms["vlb"] = vlb.detach()
            loss = loss + (self.vlb_weight if self.loss_kind == "hybrid" else 1.0) * vlb
        terms["loss"] = loss.detach()
        return LossOutput(loss, terms)

    # -- the bound --------------------------------------------------------------------------------
    @torch.no_grad()
    def bound_terms(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per example (rows) the bound's terms in nats: L_0, L_1, ..., L_{T-1}, then L_T (columns),
        each from one draw of x_t ~ q(x_t | x_0)."""
        x0 = 2 * x - 1
        cols = []
        for s in range(self.diffusion.T):
            t = torch.full((x0.shape[0],), s, device=x0.device, dtype=torch.long)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
            xt = self.diffusion.q_sample(x0, t, noise)
            pred, var_out = self.denoise(xt, t)
            cols.append(self.diffusion.vlb_term(pred, var_out, x0, xt, t))
        cols.append(self.diffusion.prior_kl(x0))
        return torch.stack(cols, 1)

    elbo_draws = 1  # the bound sums T terms of one draw each: T network passes per draw

    def elbo(self, x: Tensor) -> dict[str, Tensor]:
        """Minus the whole variational bound per example (Ho et al. eq. 5), one draw per term."""
        return {"elbo": -self.bound_terms(x).sum(1)}

    def log_likelihood(self, x: Tensor, k: int = 1) -> Tensor:
        """Minus the variational bound (a lower bound on log P(x) of the 8-bit data), one draw
        per term; ``k`` draws averaged."""
        return -torch.stack([self.bound_terms(x).sum(1) for _ in range(max(1, k))]).mean(0)

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """The whole bound on -log P(x) over all T terms (Ho et al. sec. 3.3, discretized decoder
        on 8-bit levels) in nats per example and bits per dimension, with Monte Carlo standard
        errors over examples; the mean of each term (``vlb_terms``, for the report). One draw
        per term and example (the bound's variance across examples dominates); ``k`` unused."""
        from lvmkit.data import batches

        g = torch.Generator(device=split.x.device).manual_seed(0)
        rows = torch.cat([self.bound_terms(xb, g) for xb, _ in batches(split, batch_size, shuffle=False)])
        total = rows.sum(1).double()
        n = len(total)
        se = float(total.std() / math.sqrt(n)) if n > 1 else float("nan")
        per_dim = math.log(2) * self.dims
        return {"nll_bound": float(total.mean()), "nll_bound_se": se, "bits_per_dim": float(total.mean()) / per_dim,
                "bits_per_dim_se": se / per_dim, "bound_estimator": f"VLB over all T = {self.diffusion.T} terms",
                "vlb_terms": rows.mean(0).tolist()}

    # -- sampling ---------------------------------------------------------------------------------
    @property
    def samplers(self) -> dict[str, DiffusionSampler]:
        return dict(self._samplers)

    def make_sampler(self, name: str | None = None, **options) -> DiffusionSampler:
        sampler = choose_sampler(self._samplers, name, options, type(self).__name__)
        sampler.check(ReverseProcess(self.diffusion, self.denoise))
        return sampler

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: DiffusionSampler | None = None, keep: int = 0):
        """``n`` samples in [0, 1] with ``sampler`` (default: the config's), x_T ~ N(0, I) drawn
        first from ``generator``. ``steps`` replaces the sampler's step count. With ``keep``,
        returns (samples, chain) where the chain holds ``keep`` states (t, x_t in [0, 1]) from
        x_T to x_0."""
        sampler = (sampler or self.default_sampler).replace(steps=steps)
        device = next(self.denoiser.parameters()).device
        was_training = self.training
        self.eval()
        try:
            x_T = torch.randn((n, *self.input_shape), generator=generator, device=device)
            x, chain = sampler.run(ReverseProcess(self.diffusion, self.denoise), x_T, generator=generator, keep=keep)
        finally:
            self.train(was_training)
        x = ((x + 1) / 2).clamp(0.0, 1.0)
        if keep:
            return x, [(t, ((c + 1) / 2).clamp(0.0, 1.0)) for t, c in chain]
        return x


def build_ddpm(cfg: DDPMConfig, input_shape: tuple[int, ...]) -> DDPM:
    shape = tuple(input_shape)
    name = cfg.denoiser if cfg.denoiser != "auto" else ("unet" if len(shape) == 3 else "mlp")
    if name == "unet" and len(shape) != 3:
        raise ConfigError(f"model.denoiser = 'unet' needs images (C, H, W); got examples of shape {shape}. Use 'mlp' or 'auto'.")
    mult = 2 if cfg.variance == "learned" else 1
    out_channels = shape[0] * mult if len(shape) == 3 else mult
    net = DENOISERS.get(name)(shape, out_channels, channels=list(cfg.channels or default_channels(shape)),
                              blocks=cfg.blocks, attention=cfg.attention if cfg.attention is not None else name == "unet",
                              dropout=cfg.dropout)
    diffusion = GaussianDiffusion(NOISE_SCHEDULES.get(cfg.schedule)(cfg.timesteps), cfg.target, cfg.variance)
    return DDPM(net, diffusion, input_shape=shape, loss=cfg.loss, vlb_weight=cfg.vlb_weight,
                samplers=diffusion_samplers(cfg), min_snr_gamma=cfg.min_snr_gamma)


MODEL_KINDS.register("ddpm")({"family": "ddpm"})
FAMILIES.register("ddpm")(Family(
    config=DDPMConfig, build=build_ddpm, model_class=DDPM,
    examples=(
        {"model": {"kind": "ddpm", "timesteps": 20, "channels": [8, 16]}, "input_shape": (1, 8, 8)},
        {"model": {"kind": "ddpm", "timesteps": 10, "schedule": "cosine", "target": "v", "loss": "hybrid",
                   "variance": "learned", "channels": [16], "sampler": "ddim", "sample_steps": 5}, "input_shape": (5,)},
    ),
))

__all__ = ["DDPM", "DDPMConfig", "build_ddpm", "default_channels"]
