"""Latent regularizers: what turns an autoencoder into a VAE, beta-VAE or InfoVAE."""
from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from lvmkit.models.parts.distributions import kl_std_normal
from lvmkit.models.parts.mmd import mmd2_biased, mmd2_unbiased
from lvmkit.core.registry import Registry
from lvmkit.core.schedules import linear_warmup

REGULARIZERS: Registry = Registry("regularizer")


class Regularizer(nn.Module, abc.ABC):
    """Interface: a penalty on the codes of one batch."""

    #: Whether the penalty is the KL term of an ELBO (so the loss is a negative ELBO at weight 1).
    is_kl: bool = False

    @property
    def stage(self) -> int:
        """Changes when the objective itself changes during training (0 for fixed objectives)."""
        return 0

    @property
    def final(self) -> bool:
        """False while a later stage of the objective is still to come (DEC's pretraining)."""
        return True

    @abc.abstractmethod
    def forward(
        self, z: Tensor, mean: Tensor, logvar: Tensor | None, step: int, x: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (weighted penalty, batch mean; unweighted named terms for logging).

        Args:
            z: sampled codes (batch, latent); equal to ``mean`` for deterministic encoders.
            mean, logvar: the posterior's parameters (``logvar`` is None when deterministic).
            step: the optimisation step, for weight schedules.
            x: the (uncorrupted) batch the codes came from.
        """

    def attach(self, model: nn.Module) -> None:
        """Called once when the model is composed; a regularizer that needs parts of the model
        (e.g. a frozen copy of the encoder) takes them here. Default: nothing."""

    def update(self, model: nn.Module, x: Tensor, step: int) -> str | None:
        """Called by the training loop before every step with the whole training set ``x``;
        returns a reason to stop training, or None. Default: nothing to do."""
        return None


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """A plain autoencoder's latent space is left free."""

    @classmethod
    def from_config(cls, cfg) -> "NoRegularizer":
        return cls()

    def forward(self, z, mean, logvar, step, x):
        return z.new_zeros(()), {}


@REGULARIZERS.register("kl")
class KLRegularizer(Regularizer):
    """beta * KL(q(z|x) || N(0, I)), beta ramped up over ``warmup_steps`` (Higgins et al. 2017)."""

    is_kl = True

    def __init__(self, beta: float = 1.0, warmup_steps: int = 0) -> None:
        super().__init__()
        self.beta = beta
        self.warmup_steps = warmup_steps

    @classmethod
    def from_config(cls, cfg) -> "KLRegularizer":
        return cls(cfg.beta, cfg.warmup_steps)

    def weight(self, step: int) -> float:
        """The KL weight at ``step``: beta times the linear warm-up."""
        return self.beta * linear_warmup(step, self.warmup_steps)

    def forward(self, z, mean, logvar, step, x):
        kl = kl_std_normal(mean, logvar).mean()
        return self.weight(step) * kl, {"kl": kl}


@REGULARIZERS.register("mmd")
class MMDRegularizer(Regularizer):
    """lambda * MMD^2(q(z), N(0, I)) on the batch's codes (InfoVAE, Zhao et al. 2017; WAE-MMD).

    The unbiased estimate needs two codes; a batch of one (the last batch when the split size
    leaves a remainder of 1) gets the biased estimate instead, which is defined for one code.
    """

    def __init__(self, weight: float = 10.0, kernel: str = "imq", scale: float = 1.0, warmup_steps: int = 0) -> None:
        super().__init__()
        self.weight = weight
        self.kernel = kernel
        self.scale = scale
        self.warmup_steps = warmup_steps

    @classmethod
    def from_config(cls, cfg) -> "MMDRegularizer":
        return cls(cfg.mmd_weight, cfg.mmd_kernel, cfg.mmd_scale, cfg.warmup_steps)

    def forward(self, z, mean, logvar, step, x):
        prior = torch.randn_like(z)
        mmd = (mmd2_unbiased if len(z) > 1 else mmd2_biased)(z, prior, self.kernel, self.scale)
        return self.weight * linear_warmup(step, self.warmup_steps) * mmd, {"mmd": mmd}
