"""``lvmkit forecast``: predictions of a trained time-series run for new series, with bands.

The input is a long-format CSV like the training data (the run's id and time columns and its
feature names), in the data's own units; every value in it is read as observed. The run's
scaler (RUN/scaling.json) maps the values to the units the model sees and its predictions back,
so the output is in the data's units. Each series is predicted on a regular
grid from its first time to ``until`` plus its own times; the latent ODE draws ``samples``
trajectories from the posterior q(z0 | series) and reports their mean and 5-95% band (the
spread of the posterior, without observation noise); the RNN and neural ODE are
deterministic, so their band has zero width.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError, DataError
from lvmkit.core.contract import Forecaster, require
from lvmkit.runs.run import Run
from lvmkit.data.packing import HELD_OUT, OBSERVED, channels, feature_units, pack, with_queries
from lvmkit.models.timeseries.bands import predict_bands
from lvmkit.data.series import read_long_csv


def forecast(run: Run | str | Path, input_path: str | Path, until: float, *, out: str | Path | None = None,
             points: int = 100, samples: int = 100, seed: int = 0, device: str = "cpu") -> dict:
    """Forecast the series of ``input_path`` up to time ``until`` (in the CSV's time units).

    Writes ``out`` (default RUN/forecast.csv): one row per series, time and feature with the
    observed value (empty on grid rows), the predicted mean and the 5-95% band; and the same
    path with suffix .png: the first six series, observations and predictions.

    Raises:
        ConfigError: the run is not a time-series model, or ``points``/``samples`` are not positive.
        DataError: the CSV is malformed (see :func:`read_long_csv`) or ``until`` precedes a
            series' first time.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    if points < 2 or samples < 1:
        raise ConfigError(f"--points must be at least 2 and --samples at least 1; got {points} and {samples}.")
    info = run.data().info
    if info.get("layout") != "series":
        raise ConfigError(f"lvmkit forecast needs a run trained on time series (data.name = 'spirals', 'series-csv', ...); "
                          f"{str(run.path)!r} was trained on {run.config.data.name!r}.")
    model = run.load_model("best", device)
    require(model, Forecaster, "lvmkit forecast")
    dcfg = run.config.data
    names, ids, times, values = read_long_csv(input_path, dcfg.id_column, dcfg.time_column, info["features"])
    offset, scale = info["time_offset"], info["time_scale"]
    rows_t, rows_v, rows_c = [], [], []
    for sid, t, v in zip(ids, times, values):
        if until <= t[0]:
            raise DataError(f"--until {until:g} is not after the first time ({t[0]:g}) of series {sid!r}; choose a later time.")
        grid = np.linspace(t[0], until, points)
        grid = grid[~np.isin(grid, t)]
        tt = np.concatenate([t, grid])
        order = np.argsort(tt, kind="stable")
        vv = np.concatenate([v, np.zeros((len(grid), v.shape[1]))])[order]
        cc = np.concatenate([np.where(np.isnan(v), 0.0, OBSERVED), np.full((len(grid), v.shape[1]), HELD_OUT)])[order]
        rows_t.append((tt[order] - offset) / scale)
        rows_v.append(vv)
        rows_c.append(cc)
    packed = pack(rows_t, rows_v, rows_c, names=ids)  # the data's units
    scaler = run.data().scaler
    x = torch.from_numpy(scaler.transform(packed)).to(device)
    with torch.no_grad():
        bands = predict_bands(model, x, samples, seed)
    shift, span = feature_units(scaler, len(names))
    mean, lo, hi = (a.cpu().numpy() * span + shift for a in bands)  # span > 0 keeps the quantiles' order
    out = Path(out) if out is not None else run.path / "forecast.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    xn = packed
    d = len(names)
    n_rows = 0
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([dcfg.id_column, dcfg.time_column, "feature", "observed", "mean", "lower", "upper"])
        for i, sid in enumerate(ids):
            k = len(rows_t[i])
            for r in range(k):
                t_orig = xn[i, r, 0] * scale + offset
                for j, name in enumerate(names):
                    obs = f"{xn[i, r, 1 + j]:.6g}" if xn[i, r, 1 + d + j] == OBSERVED else ""
                    w.writerow([sid, f"{t_orig:.6g}", name, obs, f"{mean[i, r, j]:.6g}", f"{lo[i, r, j]:.6g}", f"{hi[i, r, j]:.6g}"])
                    n_rows += 1
    png = out.with_suffix(".png")
    from lvmkit.report.timeseries import forecast_figure

    fig = forecast_figure(xn, mean, lo, hi, names, ids, offset, scale, known=np.zeros(mean.shape, bool))
    fig.savefig(png, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {"csv": str(out), "figure": str(png), "series": len(ids), "rows": n_rows, "until": until}


__all__ = ["forecast"]
