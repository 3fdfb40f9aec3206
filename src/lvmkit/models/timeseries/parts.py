"""Parts the time-series families share: vector fields, recognition networks, the masked
Gaussian likelihood and the held-out error metrics. Names from the config are resolved through
:data:`VECTOR_FIELDS` and :data:`RECOGNITIONS`."""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from lvmkit.models.parts.distributions import log_normal
from lvmkit.core.errors import ConfigError, LvmkitWarning
from lvmkit.models.parts.likelihoods import LIKELIHOODS, Likelihood
from lvmkit.models.parts.networks import _dense_stack
from lvmkit.models.timeseries.ode import ODESolver
from lvmkit.core.registry import Registry
from lvmkit.data.packing import HELD_OUT, OBSERVED, channels, compact, feature_units
from lvmkit.models.timeseries.gru import gru_sequence

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.data.scaling import Scaler


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Dense layers with ``activation`` between them, none after the last."""
    return nn.Sequential(*_dense_stack(list(sizes), activation, False))


# -- vector fields: f(t, y), autonomous --------------------------------------------------------
class MLPField(nn.Module):
    """dy/dt = MLP(y) (the latent dynamics of Chen et al. 2018: 4-20-20-4 with ELU)."""

    def __init__(self, dim: int, hidden: list[int], activation: str) -> None:
        super().__init__()
        self.net = mlp([dim, *hidden, dim], activation)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)

    def per_sample_vjp(self, t: Tensor, y: Tensor, a: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """f(y), a^T df/dy and a^T df/dtheta per sample, the latter one (B, *shape) tensor per
        parameter: the inputs and output gradients of each Linear layer give its per-sample
        weight gradient as an outer product, which is ~3x cheaper than vmap over vjp."""
        with torch.enable_grad():
            y = y.detach().requires_grad_()
            inputs, outputs, h = [], [], y
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    inputs.append(h)
                    h = layer(h)
                    outputs.append(h)
                else:
                    h = layer(h)
            g_y, *g_out = torch.autograd.grad(h, [y, *outputs], a)
        grads = []
        for x_in, g in zip(inputs, g_out):
            grads += [g[:, :, None] * x_in[:, None, :], g]  # weight (B, out, in), bias (B, out)
        return h.detach(), g_y, grads


class LinearField(nn.Module):
    """dy/dt = A y + b (seed report eq. 26); A is ``weight``, b is ``bias``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return y @ self.weight.T + self.bias

    def per_sample_vjp(self, t: Tensor, y: Tensor, a: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """See :meth:`MLPField.per_sample_vjp`: here in closed form."""
        return self.forward(t, y), a @ self.weight, [a[:, :, None] * y[:, None, :], a]


class SumField(nn.Module):
    """dy/dt = sum of fields, e.g. ``"linear+mlp"``: A y + b + MLP(y). The linear part carries
    rotations and growth beyond the states seen in training, where an MLP alone flattens out."""

    def __init__(self, *fields: nn.Module) -> None:
        super().__init__()
        self.fields = nn.ModuleList(fields)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return sum(f(t, y) for f in self.fields)

    def per_sample_vjp(self, t: Tensor, y: Tensor, a: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """See :meth:`MLPField.per_sample_vjp`: the parts' results summed, their parameter
        gradients in parameter order."""
        parts = [f.per_sample_vjp(t, y, a) for f in self.fields]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), [g for p in parts for g in p[2]])


#: ``model.vector_field`` -> ``build(dim, cfg) -> nn.Module``
VECTOR_FIELDS: Registry[Callable[..., nn.Module]] = Registry("vector field")
VECTOR_FIELDS.register("mlp")(lambda dim, cfg: MLPField(dim, list(cfg.ode_hidden), cfg.activation))
VECTOR_FIELDS.register("linear")(lambda dim, cfg: LinearField(dim))
VECTOR_FIELDS.register("linear+mlp")(lambda dim, cfg: SumField(LinearField(dim), MLPField(dim, list(cfg.ode_hidden),
                                                                                          cfg.activation)))


# -- recognition networks: observed rows -> hidden state at the series origin -----------------
def time_gaps(origin: Tensor, t: Tensor) -> Tensor:
    """Time since the previous observation (for the first: since the origin), (B, K)."""
    return t - torch.cat([origin[:, None], t[:, :-1]], dim=1)


class GRURecognition(nn.Module):
    """A GRU run backwards in time over the observations, each fed with its values, its mask
    and its time gap (Chen et al. 2018 sec. 5.1; the gaps make it aware of irregular times)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRU(2 * dim + 1, hidden, batch_first=True)

    def forward(self, origin: Tensor, t: Tensor, v: Tensor, m: Tensor, valid: Tensor) -> Tensor:
        u = torch.cat([v * m, m, time_gaps(origin, t)[..., None]], dim=-1) * valid[..., None]
        n = valid.sum(1)
        k = torch.arange(t.shape[1], device=t.device)[None, :]
        rev = torch.where(k < n[:, None], n[:, None] - 1 - k, k)  # each series' own rows, last first
        out = gru_sequence(self.gru, u.gather(1, rev[..., None].expand_as(u)))  # (B, K, hidden)
        last = (n - 1).clamp(min=0)[:, None, None].expand(-1, 1, self.hidden)
        return out.gather(1, last).squeeze(1)


class ODERNNRecognition(nn.Module):
    """ODE-RNN run backwards (Rubanova et al. 2019, alg. 1): between observations the hidden
    state follows dh/dt = MLP(h); at each observation a GRU cell takes values and mask. One
    solve per observation step, so slower than :class:`GRURecognition`."""

    def __init__(self, dim: int, hidden: int, field: nn.Module, solver: ODESolver) -> None:
        super().__init__()
        self.cell = nn.GRUCell(2 * dim, hidden)
        self.field = field
        self.solver = solver

    def forward(self, origin: Tensor, t: Tensor, v: Tensor, m: Tensor, valid: Tensor) -> Tensor:
        h = v.new_zeros(v.shape[0], self.cell.hidden_size)
        for k in range(t.shape[1] - 1, -1, -1):
            upd = self.cell(torch.cat([v[:, k] * m[:, k], m[:, k]], dim=-1), h)
            h = torch.where(valid[:, k, None], upd, h)
            t_prev = t[:, k - 1] if k > 0 else origin
            # Rows whose target time equals their start are left where they are.
            target = torch.where(valid[:, k], t_prev, t[:, k])
            h = self.solver.solve(self.field, h, target[:, None], t_start=t[:, k])[:, 0]
        return h


#: ``model.recognition`` -> ``build(cfg, dim, solver) -> module``
RECOGNITIONS: Registry[Callable[..., nn.Module]] = Registry("recognition network")
RECOGNITIONS.register("gru")(lambda cfg, dim, solver: GRURecognition(dim, cfg.rnn_hidden))
RECOGNITIONS.register("ode-rnn")(lambda cfg, dim, solver: ODERNNRecognition(
    dim, cfg.rnn_hidden, MLPField(cfg.rnn_hidden, list(cfg.ode_hidden), cfg.activation), solver))


# -- likelihood --------------------------------------------------------------------------------
def gaussian_likelihood(cfg, family: str) -> Likelihood:
    """The Gaussian of ``lvmkit.likelihoods`` (fixed or learned sigma): the only one a family of
    real-valued series can use, so another name is an error rather than ignored."""
    if cfg.likelihood != "gaussian":
        raise ConfigError(f"The {family} family models real-valued series with a Gaussian likelihood, but "
                          f"model.likelihood = {cfg.likelihood!r}; set model.likelihood = 'gaussian'.")
    return LIKELIHOODS.get("gaussian").from_config(cfg)


def masked_log_lik(likelihood: Likelihood, mean: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """sum over present entries of log N(x; mean, sigma^2), per series (B,). Entries with mask 0
    contribute exactly nothing (their values are never read into the sum)."""
    logvar = (2.0 * likelihood.log_sigma).expand_as(mean)
    per_entry = log_normal(x.unsqueeze(-1), mean.unsqueeze(-1), logvar.unsqueeze(-1))  # (B, K, D)
    return torch.where(mask > 0, per_entry, torch.zeros_like(per_entry)).flatten(1).sum(1)


def observed_rows(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """origin (B,), and the observed rows moved to the front: times (B, K), values (B, K, D),
    observed mask (B, K, D) float, valid (B, K)."""
    t, v, c = channels(x)
    obs = (c == OBSERVED).to(v.dtype)
    tc, valid, (vc, mc) = compact(t, obs.amax(-1) > 0, v, obs)
    return t[:, 0], tc, vc, mc, valid


# -- metrics -----------------------------------------------------------------------------------
class HeldOutErrors:
    """Squared errors at held-out entries, split at each series' last observed time:
    interpolation (at or before it) and extrapolation (after it). Accumulates over batches.
    ``span`` (D,) maps scaled errors to the data's units (per feature, ``scaled * span``);
    None keeps the units the model sees."""

    def __init__(self, span: Tensor | None = None) -> None:
        self.sums = {"interp": 0.0, "extrap": 0.0}
        self.counts = {"interp": 0, "extrap": 0}
        self.span = span

    def add(self, pred: Tensor, x: Tensor) -> None:
        t, v, c = channels(x)
        seen = (c == OBSERVED).any(-1)
        last = torch.where(seen, t, torch.full_like(t, -math.inf)).amax(1)
        held = c == HELD_OUT
        after = (t > last[:, None])[..., None]
        se = (pred - v) ** 2
        if self.span is not None:
            se = se * self.span.to(se) ** 2
        for name, sel in (("interp", held & ~after), ("extrap", held & after)):
            self.sums[name] += float(torch.where(sel, se, torch.zeros_like(se)).sum())
            self.counts[name] += int(sel.sum())

    def result(self) -> dict:
        out: dict = {}
        for name in ("interp", "extrap"):
            n = self.counts[name]
            out[f"{name}_points"] = n
            if n:
                out[f"{name}_mse"] = self.sums[name] / n
                out[f"{name}_rmse"] = math.sqrt(self.sums[name] / n)
        return out


def held_out_scores(model, split, batch_size: int = 256, scaler: Optional["Scaler"] = None) -> dict:
    """:class:`HeldOutErrors` of ``model.predict`` (first trajectory) over a split: MSE/RMSE in
    the data's units when ``scaler`` (the data set's, :class:`lvmkit.data.scaling.Scaler`) is
    given, with the scaled ones beside them as ``*_mse_scaled`` / ``*_rmse_scaled`` where the
    two differ; otherwise in the units the model sees."""
    d = (split.x.shape[-1] - 1) // 2
    _, span = feature_units(scaler, d)
    scaled = HeldOutErrors()
    units = HeldOutErrors(torch.as_tensor(span)) if scaler is not None and not np.all(span == 1.0) else None
    for start in range(0, len(split), batch_size):
        xb = split.x[start : start + batch_size]
        pred = model.predict(xb)[0]
        scaled.add(pred, xb)
        if units is not None:
            units.add(pred, xb)
    if units is None:
        return scaled.result()
    return {**units.result(), **{f"{k}_scaled": v for k, v in scaled.result().items() if not k.endswith("_points")}}


# -- the scale check -------------------------------------------------------------------------------
#: How far the first loss may exceed what the likelihood implies for unit-scale data before
#: :func:`warn_if_unscaled` speaks: two orders of magnitude.
LOSS_SCALE_RATIO = 100.0


def warn_if_unscaled(parts: dict[str, Tensor], likelihood: Likelihood, family: str) -> None:
    """Warn (:class:`~lvmkit.LvmkitWarning`) when an untrained model's squared error per
    observed value (``parts`` of its ``series_loss``: ``sq_error``, ``n_obs``) is
    ``LOSS_SCALE_RATIO`` times or more above the unit scale its Gaussian likelihood assumes, and
    so is its loss: the squared error over 2 sigma^2 then dwarfs what sigma implies, training
    spends its steps on the data's offset and scale, and the errors come out large. Families
    call it from ``update`` at step 0, on a few training series, without random draws (so
    training's random stream is untouched)."""
    msq = float(parts["sq_error"].sum() / parts["n_obs"].sum().clamp(min=1))
    sigma = float(likelihood.log_sigma.detach().exp())
    # -log N(r; 0, sigma^2) per value, for residuals of mean square r2.
    nll = lambda r2: 0.5 * math.log(2 * math.pi * sigma**2) + r2 / (2 * sigma**2)  # noqa: E731
    if math.isfinite(msq) and msq >= LOSS_SCALE_RATIO and nll(msq) >= LOSS_SCALE_RATIO * abs(nll(1.0)):
        warnings.warn(
            f"The {family} model's first loss is {nll(msq) / abs(nll(1.0)):.3g} times what its Gaussian likelihood "
            f"(sigma = {sigma:.3g}) implies for data of unit scale: its squared error per observed value is {msq:.3g}, "
            "so the series' values are far from O(1) in the units the model sees. Leave data.scale unset so "
            "data.name = 'series-csv' standardises each feature (data.scale = 'none' turns that off), or check the "
            "data's units.", LvmkitWarning, stacklevel=2)


#: Training series the step-0 scale check reads.
SCALE_CHECK_SERIES = 64


__all__ = ["GRURecognition", "HeldOutErrors", "held_out_scores", "LinearField", "MLPField", "ODERNNRecognition", "RECOGNITIONS", "SumField",
           "VECTOR_FIELDS", "LOSS_SCALE_RATIO", "SCALE_CHECK_SERIES", "gaussian_likelihood", "masked_log_lik", "mlp", "observed_rows", "time_gaps",
           "warn_if_unscaled"]
