"""The latent-variable model, composed of parts: encoder, decoder, likelihood, regularizer,
input corruption. AE, DAE, VAE, beta-VAE and InfoVAE are configurations of this one class."""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from lvmkit.core.contract import FAMILIES, AbstractModel, LossOutput
from lvmkit.core.config import ModelConfig
from lvmkit.models.corruption import CORRUPTIONS
from lvmkit.models.distributions import kl_std_normal, log_normal, log_std_normal, reparameterize
from lvmkit.core.errors import ConfigError
from lvmkit.models.likelihoods import LIKELIHOODS, Likelihood
from lvmkit.models.networks import NETWORKS
from lvmkit.models.regularizers import REGULARIZERS, Regularizer
from lvmkit.models import dec as _dec  # noqa: F401  (registers the "dec" regularizer)


class LatentVariableModel(AbstractModel):
    """Encoder q(z|x) (Gaussian, or deterministic), decoder p(x|z), prior N(0, I).

    The training loss is ``-E_q log p(x|z) + regularizer``; with the KL regularizer at weight
    1 this is the negative ELBO (Kingma & Welling 2013, eq. 3).
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

    # -- training ----------------------------------------------------------------------------
    def loss(self, x: Tensor, step: int = 0) -> LossOutput:
        """The training objective on a batch (the one contract the training loop relies on)."""
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
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n codes z ~ N(0, I): (n, *input_shape)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.likelihood.mean(self.decode(z))

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
        batch; chunks are combined with a running log-sum-exp.
        """
        self._require_posterior("The importance-weighted likelihood")
        if k <= 0 or (chunk is not None and chunk <= 0):
            raise ConfigError(f"The number of importance samples k and the chunk size must be positive; got k={k}, chunk={chunk}.")
        b = x.shape[0]
        mean, logvar = self.encode(x)  # (b, latent)
        # ~1000 decoder rows per chunk keeps temporaries in cache (measured faster than 8192).
        chunk = chunk or max(1, min(k, 1024 // max(b, 1)))
        total = torch.full((b,), -math.inf, device=x.device, dtype=mean.dtype)
        done = 0
        while done < k:
            m = min(chunk, k - done)
            eps = torch.randn(m, *mean.shape, device=x.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * eps  # (m, b, latent)
            params = self.decode(z.reshape(m * b, -1))
            xr = x.unsqueeze(0).expand(m, *x.shape).reshape(m * b, *x.shape[1:])
            log_px = self.likelihood.log_prob(params, xr).view(m, b)
            log_w = log_px + log_std_normal(z) - log_normal(z, mean, logvar)  # (m, b)
            total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
            done += m
        return total - math.log(k)

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Reconstruction error; with a stochastic encoder also the single-sample ELBO and its
        terms and the importance-weighted log p(x) with ``k`` samples, batched over examples."""
        from lvmkit.data import batches

        sq = sum(float(((self.reconstruct(xb) - xb) ** 2).flatten(1).sum()) for xb, _ in batches(split, 256, shuffle=False))
        out: dict = {"recon_sq_error": sq / len(split)}  # per example, summed over dimensions
        if not self.stochastic:
            return out
        parts: dict[str, list[Tensor]] = {}
        for xb, _ in batches(split, 256, shuffle=False):
            for name, v in self.elbo(xb).items():
                parts.setdefault(name, []).append(v)
        out.update({f"test_{name}": float(torch.cat(v).mean()) for name, v in parts.items()})
        t0 = time.perf_counter()
        ll = torch.cat([self.log_likelihood(xb, k) for xb, _ in batches(split, batch_size, shuffle=False)])
        if ll.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out.update({
            "k": k,
            "log_likelihood": float(ll.mean()),
            "nll": -float(ll.mean()),
            "nll_stderr": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0,
            "iw_seconds": seconds,
            "iw_examples_per_second": len(ll) / seconds if seconds > 0 else float("inf"),
        })
        return out


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...]) -> AbstractModel:
    """Build the model a config describes (its kind's family decides which builder)."""
    return FAMILIES.get(cfg.family)(cfg, tuple(input_shape))


@FAMILIES.register("autoencoder")
def build_autoencoder(cfg: ModelConfig, input_shape: tuple[int, ...]) -> LatentVariableModel:
    """Compose an autoencoder-family model from its config: the one place names become parts."""
    out = 2 * cfg.latent_dim if cfg.stochastic else cfg.latent_dim
    encoder, decoder = NETWORKS.get(cfg.network)(cfg, tuple(input_shape), out)
    model = LatentVariableModel(
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


__all__ = ["LatentVariableModel", "LossOutput", "build_autoencoder", "build_model"]
