"""Model families, a folder each, and the parts they share (:mod:`.parts`, :mod:`.mcmc`).
Importing this package registers every family with :data:`lvmkit.core.contract.FAMILIES` and
its kinds with :data:`lvmkit.core.kinds.MODEL_KINDS`; a family never imports another family."""
from __future__ import annotations

from lvmkit.core.contract import FAMILIES, AbstractModel
from lvmkit.models import autoencoder  # noqa: F401  ae, dae, vae, beta-vae, infovae, dec
from lvmkit.models import timeseries  # noqa: F401  latent-ode, rnn, neural-ode
from lvmkit.models import gan  # noqa: F401  gan
from lvmkit.models import diffusion  # noqa: F401  ddpm
from lvmkit.models import energy  # noqa: F401  rbm, dbn, ebm
from lvmkit.models import draw  # noqa: F401  draw
from lvmkit.models import wavefunction  # noqa: F401  vmc


def build_model(cfg, input_shape: tuple[int, ...]) -> AbstractModel:
    """Build the model a (validated) model config describes; its family decides the builder."""
    return FAMILIES.get(cfg.family).build(cfg, tuple(input_shape))


__all__ = ["build_model"]
