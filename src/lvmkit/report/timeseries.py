"""Report sections of the time-series families, appended to :data:`lvmkit.report.page.SECTIONS`:
trajectories with observations, posterior mean and band (in the data's units); latent trajectories coloured by
label (seed report fig. 21c); function evaluations per iteration. Each returns None for
other families."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lvmkit.report import page as _report  # noqa: E402
from lvmkit.core.contract import Encoder, Forecaster, LatentTrajectory  # noqa: E402
from lvmkit.data.packing import HELD_OUT, OBSERVED, channels, feature_units, with_queries  # noqa: E402
from lvmkit.models.timeseries.bands import predict_bands  # noqa: E402

_SHOWN = 6


def forecast_figure(x: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str],
                    ids: list[str] | None = None, offset: float = 0.0, scale: float = 1.0,
                    known: np.ndarray | None = None) -> Figure:
    """Up to six series against time: observations (dots), held-out values (crosses), predicted
    mean (line) and 5-95% band, the last observation marked by a dotted line. Values, means and
    bands are drawn as given (pass them in the data's units); ``known`` (B, T, D) marks the
    held-out entries whose values are known (default: held-out entries with a nonzero value),
    as opposed to query rows."""
    n = min(len(x), _SHOWN)
    d = len(names)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.9), squeeze=False)
    colors = plt.get_cmap("tab10")
    for i, ax in enumerate(axes[0]):
        t = x[i, :, 0] * scale + offset
        codes = x[i, :, 1 + d :]
        rows = (codes != 0).any(1)
        for j, name in enumerate(names):
            col = colors(j % 10)
            ax.fill_between(t[rows], lo[i, rows, j], hi[i, rows, j], color=col, alpha=0.2, lw=0)
            ax.plot(t[rows], mean[i, rows, j], "-", color=col, lw=1.2, label=f"{name} predicted")
            obs, held = codes[:, j] == OBSERVED, codes[:, j] == HELD_OUT
            ax.plot(t[obs], x[i, obs, 1 + j], "o", color=col, ms=3, label=f"{name} observed")
            target = held & (x[i, :, 1 + j] != 0 if known is None else known[i, :, j])
            if target.any():
                ax.plot(t[target], x[i, target, 1 + j], "x", color=col, ms=3, alpha=0.6, label=f"{name} held out")
        seen = codes.max(1) == OBSERVED
        if seen.any():
            ax.axvline(t[seen].max(), ls=":", color="grey", lw=0.8)
        ax.set_title(f"series {ids[i] if ids else i}", fontsize=9)
        ax.set_xlabel("time")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _dense(x: torch.Tensor, points: int = 200) -> torch.Tensor:
    t, _, c = channels(x)
    rows = (c != 0).any(-1)
    lo = t[:, 0]
    hi = torch.where(rows, t, lo[:, None]).amax(1)
    frac = torch.linspace(0.0, 1.0, points, dtype=t.dtype, device=t.device)
    return with_queries(x, lo[:, None] + (hi - lo)[:, None] * frac[None, :])


def _trajectories(ctx) -> str | None:
    if not isinstance(ctx.model, Forecaster) or len(ctx.test) == 0:
        return None
    x = _dense(ctx.test.x[:_SHOWN])
    with torch.no_grad():
        bands = predict_bands(ctx.model, x, 50, ctx.run.config.train.seed)
    info, scaler = ctx.data.info, ctx.data.scaler
    d = bands[0].shape[-1]
    shift, span = feature_units(scaler, d)
    mean, lo, hi = (a.cpu().numpy() * span + shift for a in bands)  # the data's units
    xs = x.cpu().numpy().reshape(x.shape[0], x.shape[-2], x.shape[-1])
    # The dense grid's query rows hold 0 in the scaled data; the test split's targets do not.
    known = (xs[..., 1 + d :] == HELD_OUT) & (xs[..., 1 : 1 + d] != 0)
    names = info.get("features") or [f"x{j}" for j in range(d)]
    fig = forecast_figure(scaler.inverse(xs), mean, lo, hi, names, None, info.get("time_offset", 0.0),
                          info.get("time_scale", 1.0), known=known)
    band = "5-95% band of 50 posterior trajectories" if isinstance(ctx.model, Encoder) else "deterministic model: no band"
    caption = (f"test series in the data's units: observations (dots), held-out values (crosses), predicted mean (line), "
               f"{band}; dotted: last observation")
    return _report._section("Trajectories", ctx.figure("trajectories", fig, caption))


def _latent_paths(ctx) -> str | None:
    # A forecaster with codes (the latent ODE) shows its latent paths.
    if not (isinstance(ctx.model, Forecaster) and isinstance(ctx.model, Encoder) and isinstance(ctx.model, LatentTrajectory)) \
            or len(ctx.test) == 0:
        return None
    x = ctx.test.x[:100]
    t, _, _ = channels(x)
    with torch.no_grad():
        z0 = ctx.model.embed(x)
        z = ctx.model.latent_path(z0, t[:, 0], t).cpu().numpy()  # (B, T, latent)
    labels = None if ctx.test.y is None else ctx.test.y[:100].cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    cmap = plt.get_cmap("coolwarm")
    classes = [None] if labels is None else list(np.unique(labels))
    for k, cls in enumerate(classes):
        sel = np.ones(len(z), bool) if cls is None else labels == cls
        color = cmap(k / max(len(classes) - 1, 1))
        name = "series" if cls is None else (ctx.data.class_names[cls] if ctx.data.class_names else str(cls))
        for i, path in enumerate(z[sel]):
            second = path[:, 1] if path.shape[1] > 1 else t[sel][i].cpu().numpy()
            ax.plot(path[:, 0], second, "-", color=color, lw=0.7, alpha=0.6, label=name if i == 0 else None)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2" if z.shape[2] > 1 else "time")
    ax.legend(fontsize=7)
    fig.tight_layout()
    caption = (f"latent trajectories of {len(z)} test series from their posterior-mean z0, first two of "
               f"{z.shape[2]} latent dimensions" + ("" if labels is None else ", coloured by label (seed report fig. 21c)"))
    return _report._section("Latent trajectories", ctx.figure("latent_trajectories", fig, caption))


def _nfe(ctx) -> str | None:
    if not isinstance(ctx.model, Forecaster) or not any("train_nfe" in m for m in ctx.metrics):
        return None
    epochs = [m["epoch"] for m in ctx.metrics]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for key, label in (("train_nfe", "forward, training"), ("val_nfe", "forward, validation"),
                       ("train_nfe_backward", "backward (adjoint), training")):
        ys = [m.get(key) for m in ctx.metrics]
        if any(y is not None for y in ys):
            ax.plot(epochs, ys, marker="o" if len(epochs) < 30 else None, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("function evaluations per iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    solver = ctx.run.config.model
    caption = (f"vector-field evaluations per iteration (epoch means; {solver.ode_solver}, rtol {solver.ode_rtol:g}, "
               f"atol {solver.ode_atol:g}{', adjoint' if solver.ode_adjoint else ''})")
    return _report._section("Function evaluations", ctx.figure("nfe", fig, caption))


_report.SECTIONS.extend([_trajectories, _latent_paths, _nfe])

__all__ = ["forecast_figure"]
