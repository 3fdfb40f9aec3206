"""The RNN baseline of Chen et al. 2018 (table 2): a GRU fed the time gaps.

The GRU reads the observed rows in time order, each as (values * mask, mask, time since the
previous observation). The value at time t is predicted from the state after the last
observation before t and the gap to t: x(t) ~ N(head([h, t - t_last]), sigma^2). Training
maximises the likelihood of observations 2..n given the ones before them (the first has
nothing to condition on). Past the last observation the predictions are fed back as if
observed (autoregressive extrapolation); held-out rows inside the observed window are
predicted without being read; rows before a feature's first observation get its value.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from lvmkit.core.contract import FAMILIES, AbstractModel, Family, Forecaster, LossOutput
from lvmkit.models.timeseries.config import TINY_SERIES, RNNConfig
from lvmkit.models.parts.likelihoods import Likelihood
from lvmkit.data.packing import OBSERVED, channels, series_shape
from lvmkit.models.timeseries.gru import gru_sequence
from lvmkit.models.timeseries.parts import (SCALE_CHECK_SERIES, gaussian_likelihood, held_out_scores, masked_log_lik,
                                           mlp, observed_rows, time_gaps, warn_if_unscaled)

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.data.scaling import Scaler


class GRUForecaster(AbstractModel, Forecaster):
    """GRU over (values, mask, gap) and an MLP head on (state, gap to the predicted time).

    Args:
        gru: ``nn.GRU(2D + 1, H, batch_first=True)``.
        head: (B, ..., H + 1) -> (B, ..., D).
        likelihood: the Gaussian observation model.
        input_shape: the packed example shape.
    """

    def __init__(self, gru: nn.GRU, head: nn.Module, likelihood: Likelihood, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.gru = gru
        self.head = head
        self.likelihood = likelihood
        self.input_shape = tuple(input_shape)

    def series_loss(self, x: Tensor, step: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-series negative log-likelihood of observations 2..n (B,) and its terms."""
        origin, t, v, m, valid = observed_rows(x)
        gap = time_gaps(origin, t)[..., None]
        out = gru_sequence(self.gru, torch.cat([v * m, m, gap], dim=-1))  # (B, K, H): state after each row
        before = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out[:, :-1]], dim=1)
        mu = self.head(torch.cat([before, gap], dim=-1))
        target = m.clone()
        target[:, 0] = 0.0  # the first observation is not predicted
        nll = -masked_log_lik(self.likelihood, mu, v, target)
        sq = ((mu - v) ** 2 * target).flatten(1).sum(1)
        return nll, {"sq_error": sq, "n_obs": target.flatten(1).sum(1)}

    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        nll, parts = self.series_loss(x, step)
        loss = nll.mean()
        terms = {"loss": loss.detach(), "recon": loss.detach(),
                 "mse": (parts["sq_error"].sum() / parts["n_obs"].sum().clamp(min=1)).detach()}
        if isinstance(self.likelihood.log_sigma, nn.Parameter):
            terms["sigma"] = self.likelihood.log_sigma.detach().exp()
        return LossOutput(loss, terms)

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """Predicted means at every row of x: (1, B, T, D) (the model is deterministic)."""
        t, v, c = channels(x)
        obs = (c == OBSERVED).to(v.dtype)
        seen = obs.amax(-1) > 0  # (B, T)
        last_seen = torch.where(seen, torch.arange(t.shape[1], device=t.device), -1).amax(1)
        h = v.new_zeros(1, t.shape[0], self.gru.hidden_size)
        t_last = t[:, 0]
        preds = []
        for r in range(t.shape[1]):
            gap = (t[:, r] - t_last)[:, None]
            pred = self.head(torch.cat([h[0], gap], dim=-1))
            preds.append(pred)
            # Observed rows are read; rows after the last observation read the prediction.
            feed_obs, feed_pred = seen[:, r], r > last_seen
            u = torch.where(feed_obs[:, None], torch.cat([v[:, r] * obs[:, r], obs[:, r], gap], -1),
                            torch.cat([pred, torch.ones_like(pred), gap], -1))
            _, h_new = self.gru(u[:, None, :], h)
            step = (feed_obs | feed_pred)
            h = torch.where(step[None, :, None], h_new, h)
            t_last = torch.where(step, t[:, r], t_last)
        out = torch.stack(preds, dim=1)
        # Before a feature's first observation there is no state to predict it from: carry that
        # observed value backwards (rows before it would otherwise get the empty state's guess).
        # Per feature, so a held-out entry in the same row is never read.
        rows = torch.arange(t.shape[1], device=t.device)[None, :, None]
        first_seen = torch.where(obs > 0, rows, t.shape[1]).amin(1, keepdim=True)  # (B, 1, D)
        first = v.gather(1, first_seen.clamp(max=t.shape[1] - 1))
        early = (rows < first_seen) & (first_seen < t.shape[1])
        return torch.where(early, first, out)[None]

    def update(self, train_x: Tensor, step: int) -> str | None:
        """At step 0, warn when the data's scale dwarfs the likelihood's (:func:`warn_if_unscaled`)."""
        if step == 0:
            with torch.no_grad():
                _, parts = self.series_loss(train_x[:SCALE_CHECK_SERIES])
            warn_if_unscaled(parts, self.likelihood, "rnn")
        return None

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100, scaler: Optional["Scaler"] = None) -> dict:
        """MSE/RMSE at held-out entries, interpolation and extrapolation, in the data's units
        when the data set's ``scaler`` is given; ``k`` is not used."""
        return held_out_scores(self, split, scaler=scaler)


def build_rnn(cfg: RNNConfig, input_shape: tuple[int, ...]) -> GRUForecaster:
    """Compose the GRU baseline from its config (``kind = "rnn"``): ``rnn_hidden`` units, a head
    with ``hidden`` layers."""
    _, c = series_shape(input_shape)
    d = (c - 1) // 2
    return GRUForecaster(
        gru=nn.GRU(2 * d + 1, cfg.rnn_hidden, batch_first=True),
        head=mlp([cfg.rnn_hidden + 1, *cfg.hidden, d], cfg.activation),
        likelihood=gaussian_likelihood(cfg, "rnn"),
        input_shape=tuple(input_shape),
    )


FAMILIES.register("rnn")(Family(
    config=RNNConfig, build=build_rnn, model_class=GRUForecaster,
    examples=({"model": {"kind": "rnn", "rnn_hidden": 8, "hidden": [8], "activation": "tanh"}, "data": TINY_SERIES},),
))

__all__ = ["GRUForecaster", "build_rnn"]
