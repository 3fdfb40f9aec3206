"""Neural ODE regression (seed report sec. 5.1): fit a vector field to observed trajectories.

Each series starts from its first observed row, y(t0) = x(t0), and y(t) solves dy/dt = f(y)
in data space. With a fixed sigma the loss is the squared error of the seed's circular example
up to scale: -sum_{observed entries} log N(x; y(t), sigma^2). ``vector_field = "linear"``
gives f(y) = A y + b, whose A recovers [[0, -1], [1, 0]] on the circle data; ``"mlp"`` fits
the spiral of the seed's figure 19.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from lvmkit.core.contract import FAMILIES, AbstractModel, Family, Forecaster, LossOutput
from lvmkit.models.timeseries.config import TINY_SERIES, NeuralODEConfig
from lvmkit.core.errors import DataError
from lvmkit.models.parts.likelihoods import Likelihood
from lvmkit.models.timeseries.ode import ODESolver
from lvmkit.data.packing import channels, series_shape
from lvmkit.models.timeseries.parts import (SCALE_CHECK_SERIES, VECTOR_FIELDS, gaussian_likelihood, held_out_scores,
                                           masked_log_lik, observed_rows, warn_if_unscaled)

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.data.scaling import Scaler


class NeuralODERegression(AbstractModel, Forecaster):
    """A vector field in data space, integrated from each series' first observation.

    Args:
        field: f(t, y) on (B, D).
        likelihood: the Gaussian observation model.
        solver: the ODE solver.
        input_shape: the packed example shape.
    """

    def __init__(self, field: nn.Module, likelihood: Likelihood, solver: ODESolver, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.field = field
        self.likelihood = likelihood
        self.solver = solver
        self.input_shape = tuple(input_shape)

    @staticmethod
    def _start(t: Tensor, v: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """The first observed row's time and values; every value must be present there."""
        if bool((m[:, 0] == 0).any()):
            n = int((m[:, 0] == 0).any(-1).sum())
            raise DataError(f"neural-ode starts each series from its first observed row, but {n} series miss values "
                            "there; drop those rows or impute them.")
        return t[:, 0], v[:, 0]

    def trajectory(self, y0: Tensor, t0: Tensor, times: Tensor) -> Tensor:
        """y at ``times`` (B, n) from y0 at t0; times before t0 are reached backwards: (B, n, D)."""
        ys = self.solver.solve(self.field, y0, torch.maximum(times, t0[:, None]), t_start=t0)
        before = times < t0[:, None]
        if bool(before.any()):
            back = self.solver.solve(self.field, y0, torch.minimum(times, t0[:, None]).flip(1), t_start=t0).flip(1)
            ys = torch.where(before[..., None], back, ys)
        return ys

    def series_loss(self, x: Tensor, step: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-series negative log-likelihood (B,) and its terms."""
        _, t, v, m, valid = observed_rows(x)
        t0, y0 = self._start(t, v, m)
        mu = self.trajectory(y0, t0, t)
        sq = ((mu - v) ** 2 * m).flatten(1).sum(1)
        return -masked_log_lik(self.likelihood, mu, v, m), {"sq_error": sq, "n_obs": m.flatten(1).sum(1)}

    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        before = self.solver.reset_counts()
        nll, parts = self.series_loss(x, step)
        loss = nll.mean()
        terms = {"loss": loss.detach(), "recon": loss.detach(),
                 "mse": (parts["sq_error"].sum() / parts["n_obs"].sum().clamp(min=1)).detach(),
                 "nfe": torch.tensor(float(self.solver.counts.forward))}
        if self.solver.adjoint:
            terms["nfe_backward"] = torch.tensor(float(before.backward))  # the previous step's backward pass
        return LossOutput(loss, terms)

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """The trajectory at every row of x: (1, B, T, D) (the model is deterministic)."""
        t, _, _ = channels(x)
        _, to, vo, mo, _ = observed_rows(x)
        t0, y0 = self._start(to, vo, mo)
        return self.trajectory(y0, t0, t)[None]

    def update(self, train_x: Tensor, step: int) -> str | None:
        """At step 0, warn when the data's scale dwarfs the likelihood's (:func:`warn_if_unscaled`)."""
        if step == 0:
            with torch.no_grad():
                _, parts = self.series_loss(train_x[:SCALE_CHECK_SERIES])
            warn_if_unscaled(parts, self.likelihood, "neural-ode")
        return None

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100, scaler: Optional["Scaler"] = None) -> dict:
        """MSE/RMSE at held-out entries, interpolation and extrapolation, in the data's units
        when the data set's ``scaler`` is given; ``k`` is not used. A linear field's A and b are
        those of the scaled data."""
        out = held_out_scores(self, split, scaler=scaler)
        if hasattr(self.field, "weight") and self.field.weight.dim() == 2:
            out["A"] = self.field.weight.tolist()
            out["b"] = self.field.bias.tolist()
        return out


def build_neural_ode(cfg: NeuralODEConfig, input_shape: tuple[int, ...]) -> NeuralODERegression:
    """Compose neural ODE regression from its config (``kind = "neural-ode"``)."""
    _, c = series_shape(input_shape)
    d = (c - 1) // 2
    return NeuralODERegression(
        field=VECTOR_FIELDS.get(cfg.vector_field)(d, cfg),
        likelihood=gaussian_likelihood(cfg, "neural-ode"),
        solver=ODESolver.from_config(cfg),
        input_shape=tuple(input_shape),
    )


FAMILIES.register("neural-ode")(Family(
    config=NeuralODEConfig, build=build_neural_ode, model_class=NeuralODERegression,
    examples=({"model": {"kind": "neural-ode", "ode_hidden": [8], "activation": "tanh"}, "data": TINY_SERIES},
              {"model": {"kind": "neural-ode", "vector_field": "linear"}, "data": TINY_SERIES}),
))

__all__ = ["NeuralODERegression", "build_neural_ode"]
