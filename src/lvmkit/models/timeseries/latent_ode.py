"""The latent ODE (Chen et al. 2018 sec. 5; Rubanova et al. 2019): a VAE over whole series.

q(z0 | x) from a recognition network run backwards over the observed rows; z(t) solves
dz/dt = f(z) from z0 at the series origin (its first row); x(t) ~ N(decoder(z(t)), sigma^2).
The loss per series is the negative ELBO (seed report sec. 6.2)::

    -sum_{observed entries} log N(x; decoder(z(t)), sigma^2) + beta_t KL(q(z0|x) || N(0, I))

with beta_t the weight of the KL regularizer (beta and its linear warm-up); a batch's loss is the mean over its
series, each computed on its own time grid, so it does not depend on the batch's other series.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from lvmkit.core.contract import FAMILIES, AbstractModel, Encoder, Family, Forecaster, LatentTrajectory, LossOutput
from lvmkit.models.timeseries.config import TINY_SERIES, LatentODEConfig
from lvmkit.models.parts.distributions import kl_std_normal, reparameterize
from lvmkit.models.parts.likelihoods import Likelihood
from lvmkit.models.timeseries.ode import ODESolver
from lvmkit.models.parts.regularizers import KLRegularizer
from lvmkit.data.packing import channels, series_shape
from lvmkit.models.timeseries.parts import (RECOGNITIONS, SCALE_CHECK_SERIES, VECTOR_FIELDS, gaussian_likelihood,
                                           held_out_scores, masked_log_lik, mlp, observed_rows, warn_if_unscaled)

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.data.scaling import Scaler


class LatentODE(AbstractModel, Encoder, Forecaster, LatentTrajectory):
    """Recognition network -> q(z0), latent vector field, decoder, Gaussian likelihood.

    Args:
        recognition: (origin, times, values, mask, valid) -> hidden (B, H) at the origin.
        to_posterior: hidden -> (mean, logvar) of q(z0), concatenated (B, 2 latent).
        dynamics: the latent vector field f(t, z).
        decoder: z -> mean of x (..., D).
        likelihood: the Gaussian observation model (its ``log_sigma`` fixed or learned).
        solver: integrates the latent dynamics.
        prior_kl: the KL regularizer of the autoencoder family, whose ``weight(step)`` (beta and
            its warm-up) scales each series' KL term.
        input_shape: the packed example shape (T, 1 + 2D) (or (1, T, 1 + 2D)).
    """

    def __init__(self, recognition: nn.Module, to_posterior: nn.Module, dynamics: nn.Module, decoder: nn.Module,
                 likelihood: Likelihood, solver: ODESolver, latent_dim: int, prior_kl: KLRegularizer,
                 input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.recognition = recognition
        self.to_posterior = to_posterior
        self.dynamics = dynamics
        self.decoder = decoder
        self.likelihood = likelihood
        self.solver = solver
        self.latent_dim = latent_dim
        self.prior_kl = prior_kl
        self.input_shape = tuple(input_shape)

    # -- inference and generation ----------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, logvar) of q(z0 | observed rows of x), each (B, latent)."""
        origin, t, v, m, valid = observed_rows(x)
        h = self.recognition(origin, t, v, m, valid)
        mean, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mean, logvar

    def latent_path(self, z0: Tensor, origin: Tensor, times: Tensor) -> Tensor:
        """z at ``times`` (B, n) from z0 (B, latent) at ``origin`` (B,): (B, n, latent)."""
        return self.solver.solve(self.dynamics, z0, times, t_start=origin)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Posterior means of z0 (B, latent): what probes and clustering read."""
        return self.posterior(x)[0]

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """Decoded means at every row of x: (S, B, T, D). ``samples = 0`` gives one trajectory
        from the posterior mean (S = 1); otherwise S = ``samples`` trajectories from z0 ~ q(z0|x)."""
        t, _, _ = channels(x)
        mean, logvar = self.posterior(x)
        s = max(samples, 1)
        if samples:
            eps = torch.randn((s, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
            z0 = reparameterize(mean, logvar, eps).reshape(-1, mean.shape[-1])
        else:
            z0 = mean
        rep = lambda a: a.repeat(s, *([1] * (a.dim() - 1)))  # noqa: E731  (S*B, ...)
        z = self.latent_path(z0, rep(t[:, 0]), rep(t))
        return self.decoder(z).view(s, *t.shape, -1)

    # -- training ----------------------------------------------------------------------------
    def series_loss(self, x: Tensor, step: int | None = None, eps: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-series loss (B,) and per-series terms; ``eps`` (B, latent) fixes the
        reparameterisation noise (default: fresh N(0, I) draws)."""
        origin, t, v, m, valid = observed_rows(x)
        mean, logvar = self.to_posterior(self.recognition(origin, t, v, m, valid)).chunk(2, dim=-1)
        z0 = reparameterize(mean, logvar, eps)
        z = self.latent_path(z0, origin, t)  # (B, K, latent), at the observed rows only
        mu = self.decoder(z)
        log_px = masked_log_lik(self.likelihood, mu, v, m)
        kl = kl_std_normal(mean, logvar)
        weight = self.prior_kl.weight(step)
        sq = ((mu - v) ** 2 * m).flatten(1).sum(1)
        return -log_px + weight * kl, {"recon": -log_px, "kl": kl, "sq_error": sq, "n_obs": m.flatten(1).sum(1)}

    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        before = self.solver.reset_counts()
        per_series, parts = self.series_loss(x, step)
        loss = per_series.mean()
        terms = {"loss": loss.detach(), "recon": parts["recon"].mean().detach(), "kl": parts["kl"].mean().detach(),
                 "mse": (parts["sq_error"].sum() / parts["n_obs"].sum().clamp(min=1)).detach(),
                 "nfe": torch.tensor(float(self.solver.counts.forward))}
        terms["elbo"] = -(terms["recon"] + terms["kl"])
        if self.solver.adjoint:
            # The backward pass runs after loss() returns: its count is the previous step's.
            terms["nfe_backward"] = torch.tensor(float(before.backward))
        if isinstance(self.likelihood.log_sigma, nn.Parameter):
            terms["sigma"] = self.likelihood.log_sigma.detach().exp()
        return LossOutput(loss, terms)

    def update(self, train_x: Tensor, step: int) -> str | None:
        """At step 0, warn when the data's scale dwarfs the likelihood's (:func:`warn_if_unscaled`)."""
        if step == 0:
            x = train_x[:SCALE_CHECK_SERIES]
            with torch.no_grad():
                _, parts = self.series_loss(x, None, eps=x.new_zeros(x.shape[0], self.latent_dim))  # posterior means
            warn_if_unscaled(parts, self.likelihood, "latent-ode")
        return None

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100, scaler: Optional["Scaler"] = None) -> dict:
        """MSE/RMSE of the posterior-mean trajectory at held-out entries, inside the observed
        window (interpolation) and after it (extrapolation), in the data's units when the data
        set's ``scaler`` is given (:func:`held_out_scores`); ``k`` is not used."""
        return held_out_scores(self, split, scaler=scaler)


def build_latent_ode(cfg: LatentODEConfig, input_shape: tuple[int, ...]) -> LatentODE:
    """Compose a latent ODE from its config (``kind = "latent-ode"``)."""
    _, c = series_shape(input_shape)
    d = (c - 1) // 2
    likelihood = gaussian_likelihood(cfg, "latent-ode")
    solver = ODESolver.from_config(cfg)
    return LatentODE(
        recognition=RECOGNITIONS.get(cfg.recognition)(cfg, d, solver),
        to_posterior=nn.Linear(cfg.rnn_hidden, 2 * cfg.latent_dim),
        dynamics=VECTOR_FIELDS.get(cfg.vector_field)(cfg.latent_dim, cfg),
        decoder=mlp([cfg.latent_dim, *cfg.hidden, d], cfg.activation),
        likelihood=likelihood,
        solver=solver,
        latent_dim=cfg.latent_dim,
        prior_kl=KLRegularizer.from_config(cfg),
        input_shape=tuple(input_shape),
    )


_TINY = {"latent_dim": 4, "rnn_hidden": 8, "ode_hidden": [8], "hidden": [8], "activation": "tanh"}
FAMILIES.register("latent-ode")(Family(
    config=LatentODEConfig, build=build_latent_ode, model_class=LatentODE,
    examples=({"model": {"kind": "latent-ode", **_TINY}, "data": TINY_SERIES},
              {"model": {"kind": "latent-ode", "recognition": "ode-rnn", "ode_solver": "rk4", "ode_step": 0.1, **_TINY},
               "data": TINY_SERIES},
              {"model": {"kind": "latent-ode", "ode_adjoint": True, "learn_sigma": True, **_TINY}, "data": TINY_SERIES}),
))

__all__ = ["LatentODE", "build_latent_ode"]
