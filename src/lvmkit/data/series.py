"""Data sources of packed time series (``data.name``): simulators and a long-format CSV reader.

Every source returns the packed array (N, T, 1 + 2D) described in :mod:`lvmkit.timeseries`
and puts in ``info`` what output needs to undo: ``layout = "series"``, the feature names and
the time normalisation ``t_model = (t - time_offset) / time_scale``. The values' scaling is the
data set's scaler (``Dataset.scaler``, RUN/scaling.json): the simulators' values are O(1) and
stay as they are (``"none"``); the CSV reader standardises each feature (``"series-standard"``,
below), and evaluation, forecasts and figures map predictions back to the data's units.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from lvmkit.core.config import DataConfig
from lvmkit.data import SOURCES, RawData
from lvmkit.core.errors import ConfigError, DataError
from lvmkit.data.scaling import SCALERS, Scaler
from lvmkit.data.packing import HELD_OUT, OBSERVED, pack


def _unscaled(cfg: DataConfig) -> None:
    # The table scalers would min-max scale the whole packed array, times and mask codes included.
    if cfg.scale not in (None, "none") or cfg.binarize != "none":
        raise ConfigError(f"data.name = {cfg.name!r} packs times and mask codes with the values, which data.scale = "
                          f"{cfg.scale!r} / data.binarize = {cfg.binarize!r} would distort; set data.scale = 'none' and "
                          "data.binarize = 'none' (the source normalises time itself).")


@SCALERS.register("series-standard")
def series_standard(x: np.ndarray) -> Scaler:
    """Packed series (..., T, 1 + 2D): value channel j becomes (v - mean_j) / std_j with the
    mean and std over the *observed* entries (code 1) of the training series alone; held-out
    targets are scaled alike but never counted, times and codes stay as they are, and absent
    entries keep their packed 0 (the scaler's ``codes``)."""
    rows = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])  # (series * rows, 1 + 2D)
    d = (rows.shape[1] - 1) // 2
    shift, span = np.zeros(rows.shape[1]), np.ones(rows.shape[1])
    for j in range(d):
        seen = rows[rows[:, 1 + d + j] == OBSERVED, 1 + j]
        if len(seen):
            std = seen.std()
            shift[1 + j], span[1 + j] = seen.mean(), std if std > 0 else 1.0  # a constant feature is only centred
    codes = [-1] + [1 + d + j for j in range(d)] + [-1] * d
    return Scaler("series-standard", shift, span, bounded=False, codes=codes)


def _info(features: list[str], offset: float = 0.0, scale: float = 1.0, **extra) -> dict:
    return {"layout": "series", "features": list(features), "time_offset": float(offset), "time_scale": float(scale),
            **extra}


def _or(value, default):
    return default if value is None else value


# -- Chen et al. 2018 bidirectional spirals ---------------------------------------------------
# The torchdiffeq example: theta in [0, 6 pi] at 500 points, the default of its generator (its
# script sets ntotal = 1000 but does not pass it on; configs/latent_ode_spirals.toml uses 1000).
SPIRAL_POINTS, SPIRAL_STOP = 500, 6 * math.pi


def spiral_curves(a: float = 0.0, b: float = 0.3, points: int = SPIRAL_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two noise-free spirals of the torchdiffeq latent ODE example: times (points,) over
    [0, 6 pi], clockwise (points, 2) with r = a + 50 b / (6 pi + 1 - t), counter-clockwise
    (points, 2) with r = a + b t, centred at x = -5 and x = +5."""
    ts = np.linspace(0.0, SPIRAL_STOP, points)
    zs = SPIRAL_STOP + 1.0 - ts
    r = a + b * 50.0 / zs
    cw = np.stack([r * np.cos(zs) - 5.0, r * np.sin(zs)], axis=1)
    r = a + b * ts
    cc = np.stack([r * np.cos(ts) + 5.0, r * np.sin(ts)], axis=1)
    return ts, cw, cc


@SOURCES.register("spirals")
def spirals(cfg: DataConfig) -> RawData:
    """Chen et al. 2018 sec. 5.1: ``n_series`` (1000) spirals, half clockwise, each a window
    of ``window_points`` (100) consecutive points of its curve (``curve_points`` (500) points
    over theta in [0, 6 pi], as the example runs; its script meant 1000, which the configs use)
    starting at a random point, of
    which a random subset of ``observed_points`` (all) is observed with Gaussian noise of std
    ``obs_noise`` (0.1); the rest of the window is held out (interpolation targets) and so are
    the next ``extrapolate_points`` (100) points (extrapolation targets), with the same noise.
    Series stay ``window_points`` points (or, on a short curve, half the spare points) away
    from both ends of the curve. Times run from 0 at each window's start. Label: 0 clockwise, 1 counter-clockwise. The
    simulator's seed is fixed (0), so every run sees the same series."""
    _unscaled(cfg)
    n, window = _or(cfg.n_series, 1000), _or(cfg.window_points, 100)
    n_obs, n_ext, noise = _or(cfg.observed_points, window), _or(cfg.extrapolate_points, 100), _or(cfg.obs_noise, 0.1)
    points = _or(cfg.curve_points, SPIRAL_POINTS)
    if window + n_ext > points:
        raise ConfigError(f"Each spiral has {points} points (data.curve_points), fewer than data.window_points + data.extrapolate_points "
                          f"= {window + n_ext}; lower one of them.")
    if n_obs > window:
        raise ConfigError(f"data.observed_points = {n_obs} exceeds data.window_points = {window}; observe at most the whole window.")
    ts, cw, cc = spiral_curves(points=points)
    rng = np.random.default_rng(0)
    length = window + n_ext
    # The example starts windows at least window_points from either end of the curve; here the
    # whole series, extrapolation included, keeps that margin at both ends (near the end the
    # clockwise spiral's radius 50 b / (6 pi + 1 - t) blows up, far beyond any training window):
    # its last point is at most points - 1 - margin.
    margin = min(window, (points - length) // 2)
    lo, hi = margin, points - length - margin
    x = np.zeros((n, length, 5), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        i0 = int(rng.integers(lo, hi + 1))
        ccw = bool(rng.random() > 0.5)
        curve = cc if ccw else cw
        vals = curve[i0 : i0 + length] + rng.normal(0.0, noise, size=(length, 2))
        codes = np.full((length, 2), HELD_OUT)
        seen = np.sort(rng.choice(window, size=n_obs, replace=False))
        codes[seen] = OBSERVED
        x[i] = pack([ts[i0 : i0 + length] - ts[i0]], [vals], [codes])[0]
        y[i] = int(ccw)
    return RawData(x, y, scale="none", origin=f"spirals (Chen et al. 2018; {n} series, {n_obs} of {window} observed, noise {noise:g})",
                   class_names=["clockwise", "counter-clockwise"], info=_info(["x", "y"]))


# -- the seed report's toy problems -------------------------------------------------------------
@SOURCES.register("circle")
def circle(cfg: DataConfig) -> RawData:
    """Seed report sec. 5.1.1: x(0) = (1, 0), dx/dt = (-y, x); each of ``n_series`` (12,800)
    series observes x(0) and x(t_stop), t_stop ~ U(0, 2 pi), plus one held-out point at
    another time ~ U(0, 2 pi); noise std ``obs_noise`` (0) on the non-initial points."""
    _unscaled(cfg)
    n, noise = _or(cfg.n_series, 12_800), _or(cfg.obs_noise, 0.0)
    rng = np.random.default_rng(0)
    x = np.zeros((n, 3, 5), dtype=np.float32)
    for i in range(n):
        t_stop, t_held = rng.uniform(0.0, 2 * math.pi, size=2)
        while t_held == t_stop:
            t_held = rng.uniform(0.0, 2 * math.pi)
        rows = sorted([(0.0, OBSERVED), (t_stop, OBSERVED), (t_held, HELD_OUT)])
        t = np.array([r[0] for r in rows])
        vals = np.stack([np.cos(t), np.sin(t)], axis=1)
        vals[t > 0] += rng.normal(0.0, noise, size=(int((t > 0).sum()), 2))
        codes = np.repeat(np.array([[r[1]] for r in rows]), 2, axis=1)
        x[i] = pack([t], [vals], [codes])[0]
    return RawData(scale="none", x=x, origin=f"circle (seed report sec. 5.1.1; {n} series)", info=_info(["x", "y"]))


@SOURCES.register("cubic-spiral")
def cubic_spiral(cfg: DataConfig) -> RawData:
    """Seed report fig. 19 (the torchdiffeq ode_demo): dy/dt = (y^3) A with A = [[-0.1, 2],
    [-2, -0.1]], y(0) = (2, 0), t in [0, 25] at 1000 points. Each of ``n_series`` (1000) series
    observes ``window_points`` (10) consecutive points from a random start, noise ``obs_noise``
    (0), and holds out the next ``extrapolate_points`` (10)."""
    from scipy.integrate import solve_ivp

    _unscaled(cfg)
    n, window = _or(cfg.n_series, 1000), _or(cfg.window_points, 10)
    n_ext, noise = _or(cfg.extrapolate_points, 10), _or(cfg.obs_noise, 0.0)
    a = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    ts = np.linspace(0.0, 25.0, 1000)
    if window + n_ext > len(ts):
        raise ConfigError(f"The cubic spiral has {len(ts)} points, fewer than data.window_points + data.extrapolate_points.")
    sol = solve_ivp(lambda t, y: (y**3) @ a, (0.0, 25.0), [2.0, 0.0], t_eval=ts, rtol=1e-10, atol=1e-12)
    curve = sol.y.T
    rng = np.random.default_rng(0)
    length = window + n_ext
    x = np.zeros((n, length, 5), dtype=np.float32)
    for i in range(n):
        i0 = int(rng.integers(0, len(ts) - length + 1))
        vals = curve[i0 : i0 + length] + rng.normal(0.0, noise, size=(length, 2))
        codes = np.full((length, 2), HELD_OUT)
        codes[:window] = OBSERVED
        x[i] = pack([ts[i0 : i0 + length]], [vals], [codes])[0]
    return RawData(scale="none", x=x, origin=f"cubic spiral (seed report fig. 19; {n} windows)", info=_info(["x", "y"]))


# -- long-format CSV -----------------------------------------------------------------------------
def read_long_csv(path: str | Path, id_column: str = "id", time_column: str = "time",
                  features: list[str] | None = None) -> tuple[list[str], list[str], list[np.ndarray], list[np.ndarray]]:
    """Read series from a CSV with one row per (series, time): an id column, a time column and
    feature columns; empty (or NA/NaN) cells are missing values.

    Returns:
        feature names, series ids (in order of first appearance), per series its times (n,)
        and values (n, D) with NaN where missing. Rows with every feature missing are dropped.

    Raises:
        DataError: the file is missing or unreadable, lacks the id or time column or a named
            feature, holds a non-numeric or infinite entry, or a series' times do not increase.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CSV file {str(p)!r} does not exist; check data.path (or --input).")
    with open(p, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"CSV file {str(p)!r} is empty; it needs a header row with {id_column!r}, {time_column!r} and feature columns.") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{str(p)!r} is not a readable CSV file ({err}).") from None
        for col, key in ((id_column, "data.id_column"), (time_column, "data.time_column")):
            if col not in header:
                raise DataError(f"CSV file {str(p)!r} has no {key.split('.')[1].replace('_', ' ')} {col!r} (its columns: "
                                f"{', '.join(header)}); rename the column or set {key}.")
        if features is None:
            features = [h for h in header if h not in (id_column, time_column)]
        missing = [c for c in features if c not in header]
        if missing or not features:
            raise DataError(f"CSV file {str(p)!r} lacks the feature column(s) {missing or 'of any kind'} (its columns: "
                            f"{', '.join(header)}); fix data.features.")
        i_id, i_t = header.index(id_column), header.index(time_column)
        i_f = [header.index(c) for c in features]
        series: dict[str, tuple[list[float], list[list[float]]]] = {}
        try:
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < len(header):
                    raise DataError(f"Line {line} of {str(p)!r} has {len(row)} fields, the header {len(header)}; fix the row.")
                sid = row[i_id].strip()
                t = _number(row[i_t], p, line, time_column, allow_missing=False)
                vals = [_number(row[j], p, line, header[j]) for j in i_f]
                if all(math.isnan(v) for v in vals):
                    continue
                ts, vs = series.setdefault(sid, ([], []))
                if ts and t <= ts[-1]:
                    raise DataError(f"Series {sid!r} in {str(p)!r} has non-increasing times ({t:g} after {ts[-1]:g}, line "
                                    f"{line}); sort each series by time and merge rows that share a time.")
                ts.append(t)
                vs.append(vals)
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{str(p)!r} is not a readable CSV file ({err}).") from None
    if not series:
        raise DataError(f"CSV file {str(p)!r} holds no rows with values; add data rows below the header.")
    ids = list(series)
    return (list(features), ids, [np.asarray(series[s][0]) for s in ids],
            [np.asarray(series[s][1], dtype=np.float64).reshape(-1, len(features)) for s in ids])


def _number(text: str, path: Path, line: int, column: str, allow_missing: bool = True) -> float:
    s = text.strip()
    if s in ("", "NA", "NaN", "nan", "null"):
        if allow_missing:
            return math.nan
        raise DataError(f"Line {line} of {str(path)!r} has no {column!r}; every row needs a time.")
    try:
        v = float(s)
    except ValueError:
        raise DataError(f"Line {line} of {str(path)!r} has {s!r} in column {column!r}, not a number; fix the entry.") from None
    if math.isinf(v):
        raise DataError(f"Line {line} of {str(path)!r} has an infinite {column!r}; fix the entry.")
    return v


def hold_out(times: list[np.ndarray], values: list[np.ndarray], holdout_fraction: float, extrapolate_fraction: float,
             seed: int = 0) -> list[np.ndarray]:
    """Codes per series: rows in the last ``extrapolate_fraction`` of a series' time span and a
    random ``holdout_fraction`` of the others become held-out targets, keeping at least two
    observed rows per series; present values are 1 (observed) or 2 (held out), missing 0."""
    rng = np.random.default_rng(seed)
    out = []
    for t, v in zip(times, values):
        present = ~np.isnan(v)
        held = np.zeros(len(t), dtype=bool)
        if extrapolate_fraction > 0:
            held |= t > t[0] + (1.0 - extrapolate_fraction) * (t[-1] - t[0])
        if holdout_fraction > 0:
            held |= rng.random(len(t)) < holdout_fraction
        rows = np.nonzero(present.any(1))[0]
        keep = [r for r in rows if not held[r]]
        for r in rows:  # at least two observed rows, the earliest ones first
            if len(keep) >= 2:
                break
            if r not in keep:
                keep.append(r)
                held[r] = False
        codes = np.where(present, np.where(held[:, None], HELD_OUT, OBSERVED), 0.0)
        out.append(codes)
    return out


@SOURCES.register("series-csv")
def csv_source(cfg: DataConfig) -> RawData:
    """Long-format CSV at ``data.path``: columns ``data.id_column``, ``data.time_column`` and
    ``data.features`` (default: all others).

    Time: model time is (t - t_min) / ``data.time_scale``, t_min the file's earliest time and
    the scale defaulting to the longest series' span, so every series lies within one unit of
    model time (the longest exactly) whatever the file's time units. Values: each feature is
    standardised over the observed values of the training series (``series-standard``), unless
    ``data.scale = "none"`` keeps them as given. ``holdout_fraction`` / ``extrapolate_fraction``
    choose held-out targets (see :func:`hold_out`)."""
    if cfg.scale not in (None, "none") or cfg.binarize != "none":
        raise ConfigError(f"data.name = 'series-csv' standardises each feature over the observed training values itself "
                          f"(times and mask codes stay as they are), so data.scale = {cfg.scale!r} / data.binarize = "
                          f"{cfg.binarize!r} cannot apply; leave data.scale unset (or 'none' to keep the values as given) "
                          "and data.binarize = 'none'.")
    if not cfg.path:
        raise DataError("data.name = 'series-csv' needs data.path, the CSV file to read; set it with --set data.path=FILE.")
    features, ids, times, values = read_long_csv(cfg.path, cfg.id_column, cfg.time_column, cfg.features)
    offset = float(min(t[0] for t in times))
    longest = max(float(t[-1] - t[0]) for t in times)
    scale = cfg.time_scale or (longest if longest > 0 else 1.0)
    codes = hold_out(times, values, cfg.holdout_fraction, cfg.extrapolate_fraction)
    x = pack([(t - offset) / scale for t in times], values, codes, names=ids)
    return RawData(scale=cfg.scale or "series-standard", x=x, origin=str(cfg.path), info=_info(features, offset, scale))


__all__ = ["csv_source", "cubic_spiral", "circle", "hold_out", "read_long_csv", "series_standard", "spiral_curves", "spirals"]
