"""The autoencoder family, composed of parts: encoder, decoder, likelihood, regularizer, input
corruption. AE, DAE, VAE, beta-VAE, InfoVAE and DEC are configurations (presets) of this one
class; its typed config and presets live here too."""
from __future__ import annotations


import torch
from torch import Tensor, nn

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from lvmkit.core.contract import (FAMILIES, AbstractModel, ClusterModel, DensityModel, Encoder, EvidenceBound, Family,
                                  Generator, LatentDecoder, LossOutput, Reconstructor)
from lvmkit.core.config import ModelConfig
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.parts.corruption import CORRUPTIONS
from lvmkit.models.parts.distributions import kl_std_normal, log_normal, log_std_normal, reparameterize
from lvmkit.core.errors import ConfigError
from lvmkit.models.parts.likelihoods import LIKELIHOODS, Likelihood
from lvmkit.models.parts.networks import _ACTIVATIONS, NETWORKS
from lvmkit.models.parts.regularizers import REGULARIZERS, Regularizer
from lvmkit.models.parts.evaluation import importance_weighted, reconstruction_and_likelihood
from lvmkit.models.autoencoder import dec as _dec  # noqa: F401  (registers the "dec" regularizer)


class AutoencoderConfig(ModelConfig):
    """``[model]`` of the autoencoder family: networks, latent regularizer, corruption,
    likelihood, and DEC's clustering keys. ``None`` fields come from the kind's preset."""

    kind: str = "vae"
    latent_dim: int = Field(2, gt=0)
    network: str = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [400])
    channels: list[int] = Field(default_factory=lambda: [32, 64])
    # network = "conv", one entry per entry of channels; unset: 3, 2 and kernel // 2 each.
    kernels: Optional[list[Annotated[int, Field(gt=0)]]] = None
    strides: Optional[list[Annotated[int, Field(gt=0)]]] = None
    padding: Optional[list[Annotated[int, Field(ge=0)]]] = None
    pooling: int = Field(0, ge=0)  # max pooling size and stride after each convolution; 0: none
    batch_norm: bool = False  # BatchNorm2d after each convolution (and decoder's but the last)
    activation: Literal[tuple(_ACTIVATIONS)] = "relu"  # type: ignore[valid-type]  # the names networks.py builds
    leaky_slope: float = Field(0.01, ge=0.0)  # negative slope of activation = "leaky_relu"
    likelihood: str = "bernoulli"
    sigma: float = Field(0.1, gt=0.0)
    learn_sigma: bool = False
    regularizer: Optional[str] = None
    stochastic: Optional[bool] = None
    beta: Optional[float] = Field(None, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    mmd_weight: Optional[float] = Field(None, ge=0.0)
    mmd_kernel: Literal["imq", "rbf"] = "imq"
    mmd_scale: float = Field(1.0, gt=0.0)
    corruption: Optional[str] = None
    noise: Optional[float] = Field(None, ge=0.0, le=1.0)
    clusters: int = Field(10, ge=2)
    gamma: float = Field(0.1, ge=0.0)
    pretrain_steps: int = Field(1000, ge=0)
    dec_interval: int = Field(140, gt=0)
    dec_tol: float = Field(0.001, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "AutoencoderConfig":
        if any(h <= 0 for h in self.hidden) or any(c <= 0 for c in self.channels):
            raise ValueError("hidden and channels must hold positive sizes")
        conv_keys = {"kernels": self.kernels, "strides": self.strides, "padding": self.padding}
        if self.network == "mlp":
            used = [k for k, v in {**conv_keys, "pooling": self.pooling, "batch_norm": self.batch_norm}.items() if v]
            if used:
                raise ConfigError(
                    f"model.{used[0]} applies to convolutional networks only, but model.network = 'mlp'; "
                    f"set model.network = 'conv' or remove model.{used[0]}."
                )
        for key, values in conv_keys.items():
            if values is not None and len(values) != len(self.channels):
                raise ConfigError(
                    f"model.{key} has {len(values)} entries but model.channels has {len(self.channels)} "
                    f"(one per convolutional layer); give model.{key} {len(self.channels)} entries or leave it unset."
                )
        if self.regularizer == "kl" and not self.stochastic:
            raise ValueError(
                "regularizer 'kl' needs a stochastic encoder; set model.stochastic = true "
                "or choose model.regularizer = 'none'"
            )
        return self


_NONE = {"corruption": "none", "noise": 0.0}
MODEL_KINDS.register("ae")({"family": "autoencoder", "regularizer": "none", "stochastic": False, **_NONE})
MODEL_KINDS.register("dae")({"family": "autoencoder", "regularizer": "none", "stochastic": False, "corruption": "gaussian",
                             "noise": 0.3})
MODEL_KINDS.register("vae")({"family": "autoencoder", "regularizer": "kl", "stochastic": True, "beta": 1.0, **_NONE})
MODEL_KINDS.register("beta-vae")({"family": "autoencoder", "regularizer": "kl", "stochastic": True, "beta": 4.0, **_NONE})
# InfoVAE / MMD-VAE (Zhao et al. 2017): reconstruction + lambda * MMD(q(z), p(z)).
MODEL_KINDS.register("infovae")({"family": "autoencoder", "regularizer": "mmd", "stochastic": True, "mmd_weight": 10.0,
                                 **_NONE})
# DEC / DCEC (Xie et al. 2016; Guo et al. 2017): an autoencoder pretrained on reconstruction,
# then trained with a clustering KL term; with model.network = "conv" this is DCEC.
MODEL_KINDS.register("dec")({"family": "autoencoder", "regularizer": "dec", "stochastic": False, **_NONE})


class Autoencoder(AbstractModel, Encoder, Reconstructor, Generator, LatentDecoder, DensityModel, EvidenceBound,
                  ClusterModel):
    """Encoder q(z|x) (Gaussian, or deterministic), decoder p(x|z), prior N(0, I).

    The training loss is ``-E_q log p(x|z) + regularizer``; with the KL regularizer at weight
    1 this is the negative ELBO (Kingma & Welling 2013, eq. 3). A deterministic encoder (ae,
    dae, dec) has no density or bound and draws from an untrained prior; only DEC's clustering
    objective gives clusters of its own (:meth:`lacks`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        regularizer: Regularizer,
        corruption: nn.Module,
        latent_dim: int,
        stochastic: bool,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.regularizer = regularizer
        self.corruption = corruption
        self.latent_dim = latent_dim
        self.stochastic = stochastic
        self.input_shape = tuple(input_shape)

    # -- the parts ---------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Posterior parameters (mean, logvar), each (batch, latent); logvar is None for a
        deterministic encoder."""
        h = self.encoder(x)
        if not self.stochastic:
            return h, None
        mean, logvar = h.chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters (batch, *input_shape) for codes z (batch, latent)."""
        return self.decoder(z)

    @property
    def data_support(self) -> tuple[float, float] | None:
        return getattr(self.likelihood, "support", None)

    # -- training ----------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        """Reconstruction term + regularizer (input corruption in training mode only)."""
        x_in = self.corruption(x) if self.training else x
        mean, logvar = self.encode(x_in)
        z = reparameterize(mean, logvar) if logvar is not None else mean
        recon = self.likelihood.mean_nll(self.decode(z), x)
        penalty, terms = self.regularizer(z, mean, logvar, step, x)
        loss = recon + penalty
        out = {"loss": loss.detach(), "recon": recon.detach()}
        out.update({k: v.detach() for k, v in terms.items()})
        if self.regularizer.is_kl:
            out["elbo"] = -(recon + terms["kl"]).detach()
        return LossOutput(loss, out)

    def update(self, x: Tensor, step: int) -> str | None:
        # Regularizers with state outside the gradient (DEC targets) refresh it here.
        return self.regularizer.update(self, x, step)

    @property
    def objective_stage(self) -> int:
        return self.regularizer.stage

    @property
    def objective_final(self) -> bool:
        return self.regularizer.final

    # -- capabilities of this instance -----------------------------------------------------------
    def lacks(self, capability: type) -> str | None:
        if issubclass(capability, (DensityModel, EvidenceBound)) and not self.stochastic:
            return ("its encoder is deterministic, so it has no posterior to bound log p(x) with "
                    "(kinds 'vae', 'beta-vae' and 'infovae' have one)")
        if issubclass(capability, ClusterModel):
            if not isinstance(self.regularizer, _dec.DECRegularizer):
                return "it was trained without a clustering objective (model.kind = 'dec' learns clusters)"
            if not int(self.regularizer.started):
                return (f"its training stopped before the clustering stage began (model.pretrain_steps = "
                        f"{self.regularizer.pretrain_steps}), so train it longer")
        return None

    @property
    def trained_prior(self) -> bool:
        return self.stochastic

    @property
    def n_clusters(self) -> int:
        return self.regularizer.clusters

    @torch.no_grad()
    def predict_clusters(self, codes: Tensor) -> Tensor:
        """DEC's clusters: the argmax of each code's soft assignment to the learned centres."""
        return self.regularizer.predict(codes)

    # -- using a trained model ---------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Posterior-mean codes (batch, latent), not sampled codes."""
        return self.encode(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x | z = posterior mean), in data space."""
        return self.likelihood.mean(self.decode(self.embed(x)))

    @torch.no_grad()
    def decode_mean(self, z: Tensor) -> Tensor:
        """Mean of p(x | z) in data space."""
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n codes z ~ N(0, I): (n, *input_shape); ``steps`` is not used."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode_mean(z)

    def _require_posterior(self, what: str) -> None:
        if not self.stochastic:
            raise ConfigError(
                f"{what} needs a stochastic encoder and a prior, but this model is deterministic "
                "(an autoencoder); train a model with kind 'vae', 'beta-vae' or 'infovae'."
            )

    @torch.no_grad()
    def elbo(self, x: Tensor) -> dict[str, Tensor]:
        """Per-example single-sample ELBO = log p(x|z) - KL(q(z|x) || p(z)), with its terms."""
        self._require_posterior("The ELBO")
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar)
        rec = self.likelihood.log_prob(self.decode(z), x)
        kl = kl_std_normal(mean, logvar)
        return {"elbo": rec - kl, "log_px_given_z": rec, "kl": kl}

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
        """Importance-weighted estimate of log p(x) per example (Burda et al. 2015, eq. 8):
        log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x); a lower bound, rising with k.

        All examples of ``x`` and ``chunk`` samples at a time go through the decoder as one
        batch (:func:`~lvmkit.models.parts.evaluation.importance_weighted`).
        """
        self._require_posterior("The importance-weighted likelihood")
        b = x.shape[0]
        mean, logvar = self.encode(x)  # (b, latent)

        def log_weights(m: int) -> Tensor:
            eps = torch.randn(m, *mean.shape, device=x.device, dtype=mean.dtype)
            z = reparameterize(mean, logvar, eps).transpose(0, 1).contiguous()  # (b, m, latent)
            params = self.decode(z.view(b * m, -1))  # each example's samples in consecutive rows
            log_px = self.likelihood.log_prob_many(params.view(b, m, *params.shape[1:]), x)
            return log_px + log_std_normal(z) - log_normal(z, mean[:, None], logvar[:, None])  # (b, m)

        return importance_weighted(log_weights, b, k, chunk, x.device, mean.dtype)

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Reconstruction error; with a stochastic encoder also the single-sample ELBO and its
        terms and the importance-weighted log p(x) with ``k`` samples, batched over examples."""
        return reconstruction_and_likelihood(self, split, k, batch_size, self.stochastic)


def build_autoencoder(cfg: AutoencoderConfig, input_shape: tuple[int, ...]) -> Autoencoder:
    """Compose an autoencoder-family model from its config: the one place names become parts."""
    out = 2 * cfg.latent_dim if cfg.stochastic else cfg.latent_dim
    encoder, decoder = NETWORKS.get(cfg.network)(cfg, tuple(input_shape), out)
    model = Autoencoder(
        encoder=encoder,
        decoder=decoder,
        likelihood=LIKELIHOODS.get(cfg.likelihood).from_config(cfg),
        regularizer=REGULARIZERS.get(cfg.regularizer).from_config(cfg),
        corruption=CORRUPTIONS.get(cfg.corruption).from_config(cfg),
        latent_dim=cfg.latent_dim,
        stochastic=bool(cfg.stochastic),
        input_shape=tuple(input_shape),
    )
    model.regularizer.attach(model)
    return model


_TINY = {"latent_dim": 3, "hidden": [16], "channels": [4, 8], "clusters": 3, "pretrain_steps": 2}
FAMILIES.register("autoencoder")(Family(
    config=AutoencoderConfig, build=build_autoencoder, model_class=Autoencoder,
    examples=tuple({"model": {"kind": kind, "network": net, **_TINY}, "input_shape": (1, 8, 8)}
                   for kind in ("ae", "dae", "vae", "beta-vae", "infovae", "dec") for net in ("mlp", "conv"))
    + ({"model": {"kind": "vae", "likelihood": "gaussian", "learn_sigma": True, **_TINY}, "input_shape": (1, 8, 8)},
       {"model": {"kind": "vae", **_TINY}, "input_shape": (6,)},
       # The conv keys: 8x8 -> conv 5/2 -> 4x4 -> pool -> 2x2 -> conv 3/1 -> 2x2 -> pool -> 1x1.
       {"model": {"kind": "vae", "network": "conv", **_TINY, "kernels": [5, 3], "strides": [2, 1], "pooling": 2,
                  "batch_norm": True, "activation": "leaky_relu", "leaky_slope": 0.2}, "input_shape": (1, 8, 8)}),
))

__all__ = ["Autoencoder", "AutoencoderConfig", "build_autoencoder"]
