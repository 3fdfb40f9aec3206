"""Generative adversarial networks (Goodfellow et al. 2014), DCGAN-style networks (Radford et
al. 2015) and the Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

A generator G maps noise z ~ N(0, I) to data; a discriminator D scores examples. Three
objectives (:data:`GAN_LOSSES`) share one model:

- ``minimax``: the game of Goodfellow et al. eq. 1,
  min_G max_D V(D, G) = E_x log D(x) + E_z log(1 - D(G(z))), with D = sigmoid(logit).
- ``non-saturating``: D as above; G minimises -E_z log D(G(z)) instead (Goodfellow et al.
  sec. 3), which has the same fixed point but keeps a large gradient while D rejects G's
  samples.
- ``wgan-gp``: a critic without sigmoid minimises E D(G(z)) - E D(x) + lambda E (||grad D(xhat)||
  - 1)^2 on random interpolates xhat (Gulrajani et al. alg. 1); G minimises -E D(G(z)).

All losses take logits and use softplus forms (log sigmoid(l) = -softplus(-l),
log(1 - sigmoid(l)) = -softplus(l)), which stay finite where D saturates.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import Tensor, nn

from lvmkit.core.config import ModelConfig, Section
from lvmkit.core.contract import FAMILIES, AbstractModel, Family, Generator, LossOutput
from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry
from lvmkit.models.gan.networks import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from lvmkit.core.kinds import MODEL_KINDS


# -- objectives ------------------------------------------------------------------------------
def minimax_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-V(D, G) of Goodfellow et al. eq. 1: -E log D(x) - E log(1 - D(G(z))), from logits.

    At the optimal D this equals log 4 - 2 JSD(p_data || p_g) (their theorem 1), so values near
    log 4 = 1.386 mean D cannot tell the two apart.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """E log(1 - D(G(z))) (Goodfellow et al. eq. 1), which G minimises; saturates as D(G(z)) -> 0."""
    return -F.softplus(fake_logits).mean()


def non_saturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E log D(G(z)) (Goodfellow et al. sec. 3)."""
    return F.softplus(-fake_logits).mean()


def wasserstein_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E D(G(z)) - E D(x): minus the critic's estimate of the Wasserstein-1 distance, without
    the penalty (Gulrajani et al. alg. 1, line 7)."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    """-E D(G(z)) (Gulrajani et al. alg. 1, line 12)."""
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """E (||grad_xhat critic(xhat)||_2 - 1)^2 on xhat = eps x + (1 - eps) x~, eps ~ U(0, 1) per
    example (Gulrajani et al. alg. 1, lines 6-7).

    The interpolates are detached from the generator: the penalty trains the critic only. Its
    graph is kept (``create_graph``) when gradients are enabled, so the critic's step
    differentiates through it; under ``torch.no_grad`` (validation) it is computed with a local
    graph and returned as a plain number.

    Args:
        critic: maps (batch, *shape) to one score per example.
        real, fake: two batches of the same shape.
        generator: the random stream of eps.
    Returns:
        A scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs real and fake batches of one shape; got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}.")
    keep_graph = torch.is_grad_enabled()
    eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1), generator=generator, device=real.device, dtype=real.dtype)
    xhat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(xhat).sum(), xhat, create_graph=keep_graph)
    # sqrt(. + tiny) rather than .norm(): a finite gradient where the critic is flat.
    norm = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-12)
    penalty = (norm - 1).pow(2).mean()
    return penalty if keep_graph else penalty.detach()


@dataclass(frozen=True)
class AdversarialObjective:
    """The two players' losses from discriminator outputs (logits or critic scores).

    ``score`` maps outputs to what is logged as d_real / d_fake (D's probability, or the critic's
    value); ``penalty`` adds ``gp_weight`` x :func:`gradient_penalty` to the discriminator loss;
    ``critic``: the losses do not change when a constant is added to D's output (Wasserstein),
    so the builder gives D no output bias (it would never receive a gradient).
    """

    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    score: Callable[[Tensor], Tensor] = torch.sigmoid
    penalty: bool = False
    critic: bool = False


def _identity(scores: Tensor) -> Tensor:
    return scores


GAN_LOSSES: Registry[AdversarialObjective] = Registry("GAN loss")
GAN_LOSSES.register("minimax")(AdversarialObjective(minimax_discriminator_loss, minimax_generator_loss))
GAN_LOSSES.register("non-saturating")(AdversarialObjective(minimax_discriminator_loss, non_saturating_generator_loss))
GAN_LOSSES.register("wgan-gp")(AdversarialObjective(wasserstein_critic_loss, wasserstein_generator_loss,
                                                    score=_identity, penalty=True, critic=True))


# -- the model -------------------------------------------------------------------------------
@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` inside (the generator's step backpropagates through
    D to its input only: less work, and D's .grad keeps what D's own step left there)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GAN(AbstractModel, Generator):
    """A generator and a discriminator trained by alternating steps.

    ``training_step``: ``n_critic`` discriminator updates, each on the whole real batch with
    fresh noise (Gulrajani et al. draw a fresh real batch per critic update; reusing the batch
    keeps the critic's batch, and so its penalty, at ``train.batch_size``, and one epoch one pass
    for the generator), then one generator update on the last critic step's noise, scored by
    the updated discriminator (DCGAN's practice; one generator forward per step). Real and fake batches go
    through D separately, as in DCGAN, so batch norm never mixes them.

    ``forward`` (validation, evaluation) returns the discriminator's loss as ``loss``: -V(D, G)
    for the minimax family, the critic's loss with its penalty for wgan-gp. No validation number
    tracks sample quality, so ``selection_metric`` is None: the last checkpoint is the model.

    Args:
        generator: (batch, latent_dim) -> (batch, *input_shape), in [0, 1].
        discriminator: (batch, *input_shape) -> (batch,) logits or critic scores.
        input_shape: the shape of one example.
        latent_dim: the width of the noise z ~ N(0, I).
        objective: an entry of :data:`GAN_LOSSES`.
        n_critic: discriminator updates per generator update.
        gp_weight: lambda of the gradient penalty (used when ``objective.penalty``).
    """

    selection_metric = None
    data_support = (0.0, 1.0)  # the generators end in a sigmoid
    # Radford et al. 2015, sec. 4: Adam, lr 2e-4, beta1 0.5.
    optimizer_defaults = {group: {"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}
                          for group in ("generator", "discriminator")}

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, input_shape: tuple[int, ...],
                 latent_dim: int, objective: AdversarialObjective, n_critic: int = 1, gp_weight: float = 10.0) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.objective = objective
        self.n_critic = n_critic
        self.gp_weight = gp_weight

    def _noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def discriminator_loss(self, real: Tensor, fake: Tensor,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The discriminator's loss on a real and a fake batch (with the penalty for wgan-gp).

        Returns ``(loss, fake_outputs, terms)``: D's outputs on ``fake`` (for the generator's loss
        when ``fake`` is not detached) and the detached terms d_loss, d_real, d_fake (, gp).
        """
        real_out, fake_out = self.discriminator(real), self.discriminator(fake)
        loss = self.objective.discriminator(real_out, fake_out)
        terms = {"d_real": self.objective.score(real_out).mean().detach(),
                 "d_fake": self.objective.score(fake_out).mean().detach()}
        if self.objective.penalty:
            gp = gradient_penalty(self.discriminator, real, fake, generator)
            loss = loss + self.gp_weight * gp
            terms["gp"] = gp.detach()
        terms["d_loss"] = loss.detach()
        return loss, fake_out, terms

    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        return self._objective(x)

    def _objective(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        fake = self.generator(self._noise(x.shape[0], x.device, generator))
        d_loss, fake_out, terms = self.discriminator_loss(x, fake, generator)
        g_loss = self.objective.generator(fake_out)
        return LossOutput(d_loss, {"loss": d_loss.detach(), **terms, "g_loss": g_loss.detach()})

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": [p for p in self.generator.parameters() if p.requires_grad],
                "discriminator": [p for p in self.discriminator.parameters() if p.requires_grad]}

    def training_step(self, x: Tensor, step: int, opt) -> dict[str, Tensor]:
        n = x.shape[0]
        for i in range(self.n_critic):
            last = i == self.n_critic - 1
            # The last critic step's fake batch is kept with its graph and scored again by the
            # updated D for G's step, as DCGAN (and pytorch/examples) does: one generator
            # forward per step instead of two. Earlier critic steps need no graph through G.
            with torch.set_grad_enabled(last):
                fake = self.generator(self._noise(n, x.device))
            d_loss, _, terms = self.discriminator_loss(x, fake.detach())
            opt.minimize("discriminator", d_loss)
        with _frozen(self.discriminator):
            g_loss = self.objective.generator(self.discriminator(fake))
            opt.minimize("generator", g_loss)
        return {"loss": terms["d_loss"], **terms, "g_loss": g_loss.detach()}

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Mean d_loss, g_loss, d_real, d_fake (and gp) over the split, in eval mode, with noise
        from a fixed seed. ``k`` is unused: nothing here is a Monte Carlo bound."""
        from lvmkit.data import batches

        was_training = self.training
        self.eval()
        rng = torch.Generator(device=split.x.device).manual_seed(0)
        sums: dict[str, float] = {}
        try:
            for xb, _ in batches(split, batch_size, shuffle=False):
                for key, value in self._objective(xb, rng).terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * xb.shape[0]
        finally:
            self.train(was_training)
        return {key: total / len(split) for key, total in sums.items()}

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """G(z) for n draws z ~ N(0, I): (n, *input_shape) in [0, 1]. The generator runs in eval
        mode (batch norm uses its running statistics, which sampling leaves unchanged)."""
        device = next(self.generator.parameters()).device
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self._noise(n, device, generator))
        finally:
            self.generator.train(was_training)


# -- configuration and registration ----------------------------------------------------------
class GeneratorConfig(Section):
    """``[model.generator]``."""

    # conv: widest first; one stride-2 transposed convolution per entry (depth = len).
    channels: list[PositiveInt] = Field(default_factory=lambda: [128, 64], min_length=1)
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128])  # mlp widths
    # "auto": batch norm for conv (DCGAN), none for mlp.
    norm: Literal["auto", "batch", "none"] = "auto"


class DiscriminatorConfig(Section):
    """``[model.discriminator]``."""

    # conv: narrowest first; each entry halves the image size (rounding down).
    channels: list[PositiveInt] = Field(default_factory=lambda: [64, 128], min_length=1)
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128])  # mlp widths
    # "auto": batch norm for a conv network with a minimax-family loss, else none (a gradient
    # penalty is per example, and batch norm couples the examples of a batch).
    norm: Literal["auto", "batch", "layer", "none"] = "auto"
    spectral_norm: bool = False  # Miyato et al. 2018: every layer's largest singular value -> 1


class GANConfig(ModelConfig):
    """``[model]`` of the GAN family."""

    kind: str = "gan"
    latent_dim: int = Field(64, gt=0)
    # "auto": conv for images (C, H, W), mlp otherwise.
    network: Literal["auto", "conv", "mlp"] = "auto"
    loss: str = "non-saturating"  # a name in GAN_LOSSES: minimax, non-saturating, wgan-gp
    n_critic: int = Field(1, ge=1)  # discriminator updates per generator update
    gp_weight: float = Field(10.0, ge=0.0)  # wgan-gp's lambda (Gulrajani et al.: 10)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        GAN_LOSSES.get(name)  # raises ConfigError listing the valid names
        return name

    @model_validator(mode="after")
    def _penalty_without_batch_norm(self) -> "GANConfig":
        if GAN_LOSSES.get(self.loss).penalty and self.discriminator.norm == "batch":
            raise ConfigError(
                f"model.discriminator.norm = 'batch' couples the examples of a batch, which the per-example "
                f"gradient penalty of loss {self.loss!r} must not; choose 'layer', 'none' or 'auto'."
            )
        return self


def build_gan(cfg: GANConfig, input_shape: tuple[int, ...]) -> GAN:
    """The GAN that ``cfg`` describes for examples of ``input_shape``."""
    shape = tuple(input_shape)
    network = cfg.network if cfg.network != "auto" else ("conv" if len(shape) == 3 else "mlp")
    objective = GAN_LOSSES.get(cfg.loss)
    g, d = cfg.generator, cfg.discriminator
    if network == "conv":
        if len(shape) != 3:
            raise ConfigError(f"model.network = 'conv' needs images (C, H, W); got examples of shape {shape}. "
                              f"Use network = 'mlp' or 'auto'.")
        d_norm = d.norm if d.norm != "auto" else ("none" if objective.penalty else "batch")
        gen = ConvGenerator(cfg.latent_dim, shape, list(g.channels), "batch" if g.norm == "auto" else g.norm)
        disc = ConvDiscriminator(shape, list(d.channels), d_norm, d.spectral_norm, output_bias=not objective.critic)
    else:
        gen = MLPGenerator(cfg.latent_dim, shape, list(g.hidden), "none" if g.norm == "auto" else g.norm)
        disc = MLPDiscriminator(shape, list(d.hidden), "none" if d.norm == "auto" else d.norm, d.spectral_norm,
                                output_bias=not objective.critic)
    return GAN(gen, disc, input_shape=shape, latent_dim=cfg.latent_dim, objective=objective,
               n_critic=cfg.n_critic, gp_weight=cfg.gp_weight)


MODEL_KINDS.register("gan")({"family": "gan"})
FAMILIES.register("gan")(Family(
    config=GANConfig, build=build_gan, model_class=GAN,
    examples=(
        {"model": {"kind": "gan", "latent_dim": 4, "generator": {"channels": [8, 4]},
                   "discriminator": {"channels": [4, 8]}}, "input_shape": (1, 8, 8)},
        {"model": {"kind": "gan", "loss": "wgan-gp", "n_critic": 2, "latent_dim": 3, "generator": {"hidden": [16]},
                   "discriminator": {"hidden": [16], "spectral_norm": True}}, "input_shape": (5,)},
    ),
))

__all__ = ["AdversarialObjective", "DiscriminatorConfig", "GAN", "GANConfig", "GAN_LOSSES", "GeneratorConfig",
           "build_gan", "gradient_penalty", "minimax_discriminator_loss", "minimax_generator_loss",
           "non_saturating_generator_loss", "wasserstein_critic_loss", "wasserstein_generator_loss"]
