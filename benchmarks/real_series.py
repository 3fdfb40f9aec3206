"""A real series (issue 10, item 5): the latent ODE against linear interpolation, a Gaussian
process and a seasonal-naive forecast on El Nino sea-surface temperatures.

Protocol:
- data: ``statsmodels.datasets.elnino``, monthly sea-surface temperature (deg C) of the Nino 1+2
  region, Jan 1950 - Dec 2010 (732 months); time in months since Jan 1950;
- windows of 48 consecutive months. Training: windows starting every 2 months within 1950-1994
  (247 windows, written as one long-format CSV and trained through ``lvmkit.train`` with
  ``data.name = "series-csv"``, ``holdout_fraction = 0.6``, ``extrapolate_fraction = 0.25``,
  ``data.time_scale = 2`` (two months per unit of model time, so a season is about 2 pi units and
  the latent rotation it needs is O(1)), values standardised by the source's default
  ``series-standard`` scaler); test: windows starting every 6 months within 1995-2010 (25
  windows, none overlapping a training month), thinned by the same :func:`lvmkit.data.series.hold_out`;
- thinning: the last 25% of each window's span (the final 12 months) is held out for
  extrapolation, and of the other months 60% are held out at random (40% kept, about 14
  observed months per window); held-out months after a window's last observed month count as
  extrapolation, the others as interpolation (:class:`lvmkit.timeseries.HeldOutErrors`);
- methods, on exactly the same held-out points, each seeing only its window's observed months:
  latent ODE (12-d latent, recognition GRU with 32 units run backwards, dynamics linear + MLP
  32-32 ELU, decoder 12-32-1, learned sigma from 0.3, KL warm-up 300 steps, dopri5 rtol 1e-3
  atol 1e-4; Adam 5e-3 with a cosine decay, batches of 32, 1500 steps; the checkpoint of the
  best validation loss, the validation split being 10% of the training windows; the
  posterior-mean trajectory predicted through ``model.predict`` on the run's scaling and scored
  by ``evaluate_split(..., scaler=)``);
  linear interpolation (``np.interp``; past the last observation it holds the last value);
  a Gaussian process per window (scikit-learn, constant * RBF + constant * ExpSineSquared with
  the period fixed at 12 months + white noise, ``normalize_y``, 3 optimizer restarts);
  seasonal naive (the observed value of the same calendar month nearest in time, earlier months
  first; where the window never observed that month, linear interpolation as above);
- metric: RMSE in deg C; the latent ODE's median over the training seeds (the baselines are
  deterministic).

Run (from the repository root; statsmodels lives in .venv-bench only):
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/real_series.py --seeds 0 1 2 \\
        --json benchmarks/results/real_series.json
    # variants tried: --latent-dim 6, --max-steps 2000 / 3000, --time-scale 12, --recognition ode-rnn
    # short check of the script (not a measurement): --max-steps 20 --seeds 0
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import lvmkit
from lvmkit.data.series import hold_out
from lvmkit.models.timeseries import HELD_OUT, OBSERVED, feature_units, pack

from _common import _version, machine_info, write_json

WINDOW, TRAIN_MONTHS = 48, 540            # 1950-1994 for training, 1995-2010 for testing
TRAIN_STRIDE, TEST_STRIDE = 2, 6
HOLDOUT, EXTRAPOLATE, SEASON = 0.6, 0.25, 12
TEST_SEED = 12345                          # the test windows' thinning (the same for every method and seed)


def elnino() -> np.ndarray:
    """Monthly SST (732,) in deg C, Jan 1950 onwards."""
    import statsmodels.api as sm

    frame = sm.datasets.elnino.load_pandas().data
    return frame.drop(columns="YEAR").to_numpy(dtype=np.float64).reshape(-1)


def cut(values: np.ndarray, lo: int, hi: int, stride: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Windows of WINDOW months whose months all lie in [lo, hi): (months, values (W, 1))."""
    return [(np.arange(s, s + WINDOW, dtype=np.float64), values[s : s + WINDOW, None])
            for s in range(lo, hi - WINDOW + 1, stride)]


def write_long_csv(path: Path, windows) -> None:
    lines = ["id,month,sst"] + [f"w{i:03d},{int(t)},{v[0]:.2f}" for i, (ts, vs) in enumerate(windows) for t, v in zip(ts, vs)]
    path.write_text("\n".join(lines) + "\n")


# -- baselines: each sees one window's observed months ----------------------------------------------
def linear(t_obs, v_obs, t_q):
    return np.interp(t_q, t_obs, v_obs)  # holds the end values outside the observed range


def seasonal_naive(t_obs, v_obs, t_q):
    out, fallback = np.empty(len(t_q)), 0
    for i, t in enumerate(t_q):
        same = np.nonzero((np.round(t_obs - t) % SEASON) == 0)[0]
        if len(same):
            # nearest in time; at equal distance the earlier one (one season before, not after)
            j = same[np.argmin(np.abs(t_obs[same] - t) + 1e-3 * (t_obs[same] > t))]
            out[i] = v_obs[j]
        else:  # that month never observed in the window: the linear baseline
            out[i] = np.interp(t, t_obs, v_obs)
            fallback += 1
    return out, fallback


def gaussian_process(t_obs, v_obs, t_q):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, ExpSineSquared, WhiteKernel

    kernel = (ConstantKernel(1.0) * RBF(length_scale=24.0, length_scale_bounds=(3.0, 1e3))
              + ConstantKernel(1.0) * ExpSineSquared(length_scale=1.0, periodicity=SEASON, periodicity_bounds="fixed")
              + WhiteKernel(0.1, noise_level_bounds=(1e-4, 1.0)))
    gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(t_obs[:, None], v_obs)
    return gp.predict(t_q[:, None])


def test_set(values: np.ndarray):
    """The test windows, their codes (hold_out, as the series-csv source draws them) and, per
    window, its observed months, held-out months and whether each is extrapolation."""
    windows = cut(values, TRAIN_MONTHS, len(values), TEST_STRIDE)
    codes = hold_out([w[0] for w in windows], [w[1] for w in windows], HOLDOUT, EXTRAPOLATE, seed=TEST_SEED)
    points = []
    for (t, v), c in zip(windows, codes):
        obs, held = c[:, 0] == OBSERVED, c[:, 0] == HELD_OUT
        last = t[obs].max()
        points.append({"t_obs": t[obs], "v_obs": v[obs, 0], "t_q": t[held], "v_q": v[held, 0], "extrap": t[held] > last})
    return windows, codes, points


def rmse(points, preds) -> dict:
    out = {}
    for kind, sel in (("interp", lambda p: ~p["extrap"]), ("extrap", lambda p: p["extrap"])):
        err = np.concatenate([(pr - p["v_q"])[sel(p)] for p, pr in zip(points, preds)])
        out[f"{kind}_rmse"], out[f"{kind}_points"] = float(np.sqrt(np.mean(err**2))), int(len(err))
    return out


def baselines(points) -> dict:
    t0 = time.perf_counter()
    lin = [linear(p["t_obs"], p["v_obs"], p["t_q"]) for p in points]
    naive = [seasonal_naive(p["t_obs"], p["v_obs"], p["t_q"]) for p in points]
    gp = [gaussian_process(p["t_obs"], p["v_obs"], p["t_q"]) for p in points]
    return {"linear": rmse(points, lin), "gaussian-process": rmse(points, gp),
            "seasonal-naive": {**rmse(points, [n[0] for n in naive]),
                               "fallback_points": int(sum(n[1] for n in naive))},
            "baseline_seconds": time.perf_counter() - t0}


# -- the latent ODE through lvmkit ---------------------------------------------------------------------
def config(args, csv: Path, seed: int) -> lvmkit.ExperimentConfig:
    return lvmkit.make_config({
        "data": {"name": "series-csv", "path": str(csv), "id_column": "id", "time_column": "month",
                 "holdout_fraction": HOLDOUT, "extrapolate_fraction": EXTRAPOLATE, "time_scale": args.time_scale,
                 "val_fraction": 0.1, "test_fraction": 0.05},
        "model": {"kind": "latent-ode", "latent_dim": args.latent_dim, "recognition": args.recognition,
                  "rnn_hidden": 32, "vector_field": args.vector_field, "ode_hidden": [32, 32], "hidden": [32],
                  "activation": "elu", "likelihood": "gaussian", "sigma": 0.3, "learn_sigma": True,
                  "warmup_steps": 300, "ode_solver": "dopri5", "ode_rtol": 1e-3, "ode_atol": 1e-4},
        "train": {"epochs": 10_000, "max_steps": args.max_steps, "batch_size": 32, "lr": 5e-3, "lr_schedule": "cosine",
                  "grad_clip": 10.0, "patience": 0, "seed": seed, "device": "cpu", "threads": args.threads},
        "eval": {"k": 1},
    })


def latent_ode(args, csv: Path, seed: int, root: Path, windows, codes, points) -> dict:
    t0 = time.perf_counter()
    run = lvmkit.train(config(args, csv, seed), root / f"latent-ode-{seed}", progress=args.progress)
    seconds = time.perf_counter() - t0
    data, model = run.data(), run.load_model("best")
    scaler, info = data.scaler, data.info
    packed = pack([(t - info["time_offset"]) / info["time_scale"] for t, _ in windows], [v for _, v in windows], codes)
    x = torch.from_numpy(scaler.transform(packed))
    # lvmkit's own scoring, in deg C ...
    scored = model.evaluate_split(lvmkit.Split(x, None), k=1, scaler=scaler)
    # ... and the same predictions at the points the baselines are scored on (a cross-check).
    shift, span = feature_units(scaler, 1)
    pred = model.predict(x)[0].numpy()[..., 0] * span[0] + shift[0]  # (windows, months) in deg C
    preds = [pred[i][codes[i][:, 0] == HELD_OUT] for i in range(len(windows))]
    mine = rmse(points, preds)
    for k in ("interp_rmse", "extrap_rmse"):
        assert abs(mine[k] - scored[k]) < 1e-3 * scored[k], (k, mine[k], scored[k])
    metrics = run.read_metrics()
    best = min(metrics, key=lambda m: m["val_loss"])
    out = {"seed": seed, **mine, "seconds": seconds, "steps": metrics[-1]["step"], "best_epoch": best["epoch"],
           "best_val_loss": best["val_loss"], "sigma": metrics[-1].get("train_sigma"),
           "scaler": {"mean": float(shift[0]), "std": float(span[0])}, "run": str(run.path)}
    print(f"latent ODE seed {seed}: interpolation {out['interp_rmse']:.3f}, extrapolation {out['extrap_rmse']:.3f} deg C "
          f"({out['steps']} steps, {seconds:.0f} s, best epoch {best['epoch']})", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="training seeds (none: the baselines alone)")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument("--latent-dim", type=int, default=12)
    p.add_argument("--recognition", default="gru", choices=["gru", "ode-rnn"])
    p.add_argument("--vector-field", default="linear+mlp", choices=["mlp", "linear", "linear+mlp"])
    p.add_argument("--time-scale", type=float, default=2.0, help="months per unit of model time (data.time_scale)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, default=None, help="keep run directories here (default: a temporary folder)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    values = elnino()
    windows, codes, points = test_set(values)
    base = baselines(points)
    print(f"{len(windows)} test windows; " + ", ".join(f"{k}: interpolation {v['interp_rmse']:.3f}, extrapolation "
                                                       f"{v['extrap_rmse']:.3f}" for k, v in base.items() if isinstance(v, dict)),
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        csv = root / "elnino_train_windows.csv"
        train_windows = cut(values, 0, TRAIN_MONTHS, TRAIN_STRIDE)
        write_long_csv(csv, train_windows)
        runs = [latent_ode(args, csv, s, root, windows, codes, points) for s in args.seeds]
    med = {k: statistics.median(r[k] for r in runs) if runs else None for k in ("interp_rmse", "extrap_rmse")}
    n_i, n_e = base["linear"]["interp_points"], base["linear"]["extrap_points"]
    print(f"\n| method | interpolation RMSE (deg C, {n_i} points) | extrapolation RMSE (deg C, {n_e} points) |")
    print("|---|---|---|")
    spread = lambda k: f" ({min(r[k] for r in runs):.3f}-{max(r[k] for r in runs):.3f})" if len(runs) > 1 else ""  # noqa: E731
    if runs:
        print(f"| latent ODE (median of {len(runs)} seeds) | {med['interp_rmse']:.3f}{spread('interp_rmse')} | "
              f"{med['extrap_rmse']:.3f}{spread('extrap_rmse')} |")
    for name in ("linear", "gaussian-process", "seasonal-naive"):
        print(f"| {name} | {base[name]['interp_rmse']:.3f} | {base[name]['extrap_rmse']:.3f} |")
    if args.json:
        write_json(args.json, {"protocol": "El Nino SST windows (see script docstring)", "train_windows": len(train_windows),
                               "test_windows": len(windows), "latent_ode": {"config": config(args, Path("CSV"), 0).model_dump(),
                                                                          "runs": runs, "median": med},
                               "baselines": base, "argv": sys.argv,
                               "machine": {**machine_info(), **{d: _version(d) for d in ("scikit-learn", "statsmodels")}}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
