"""Chen et al. 2018 table 2 on lvmkit: latent ODE and the RNN baseline on bidirectional spirals.

Protocol (as close to the paper's sec. 5.1 as its text allows):
- data: ``data.name = "spirals"``, 1000 series (70% train, 10% validation, 20% test, split by
  the training seed), half clockwise; each a window of 100 consecutive points of its curve
  (the torchdiffeq example's curves: theta in [0, 6 pi] at 1000 points as its script sets,
  a = 0, b = 0.3), of which n = 30, 50 or 100 random points are observed with Gaussian noise
  (std 0.1, the example's default argument; the paper does not state it); the next 100 points
  are the extrapolation targets, with the same noise; every series (window and extrapolation)
  stays 100 points away from both ends of the curve, as the example keeps its windows;
- models: ``configs/latent_ode_spirals.toml`` (4-d latent, recognition GRU with 25 units fed
  the time gaps, dynamics 4-20-20-4 ELU, decoder 4-20-2, dopri5 rtol 1e-3 atol 1e-4) and
  ``configs/rnn_spirals.toml`` (GRU with 25 units fed the time gaps, autoregressive past the
  last observation); both 2000 epochs of 7 batches of 100 (14,000 steps), Adam lr 0.01 with a
  cosine decay towards 1e-4, the checkpoint of the best validation loss evaluated;
- metric: RMSE over all extrapolation targets of the test series (``extrap_rmse`` of
  ``lvmkit evaluate``, posterior-mean trajectory), against the noisy held-out values, so it
  cannot fall below the noise std 0.1; the paper reports latent ODE 0.1642 / 0.1502 / 0.1346
  and RNN 0.3937 / 0.3202 / 0.1813 (n = 30 / 50 / 100). Interpolation RMSE (held-out points
  inside the window, n < 100) is reported too.

Run (from the repository root; ~0.06-0.09 s per latent ODE step and ~0.02-0.05 s per RNN
step on one core, so about 1.5 hours for the six runs; split them over processes with
--observed / --kinds):
    .venv/bin/python benchmarks/latent_ode_table2.py --json benchmarks/results/latent_ode_table2.json
    # short validation of the script (not a measurement):
    .venv/bin/python benchmarks/latent_ode_table2.py --max-steps 30 --n-series 100 --observed 30
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import lvmkit

from _common import REPO, machine_info, write_json

PAPER = {"latent-ode": {30: 0.1642, 50: 0.1502, 100: 0.1346}, "rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813}}
CONFIGS = {"latent-ode": "latent_ode_spirals.toml", "rnn": "rnn_spirals.toml"}


def run_one(kind: str, n_obs: int, seed: int, args, root: Path) -> dict:
    overrides = [f"data.observed_points={n_obs}", f"train.seed={seed}", f"train.threads={args.threads}"]
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.n_series:
        overrides.append(f"data.n_series={args.n_series}")
    cfg = lvmkit.load_config(REPO / "configs" / CONFIGS[kind], overrides)
    t0 = time.perf_counter()
    run = lvmkit.train(cfg, root / f"{kind}-{n_obs}-{seed}", progress=args.progress)
    seconds = time.perf_counter() - t0
    ev = lvmkit.evaluate(run)
    metrics = run.read_metrics()
    steps = metrics[-1]["step"] if metrics else 0
    train_seconds = sum(m["train_seconds"] for m in metrics)
    out = {"kind": kind, "observed": n_obs, "seed": seed, "extrap_rmse": ev.get("extrap_rmse"),
           "interp_rmse": ev.get("interp_rmse"), "test_loss": ev.get("test_loss"), "steps": steps,
           "epochs": metrics[-1]["epoch"] if metrics else 0, "seconds": seconds,
           "seconds_per_step": train_seconds / max(steps, 1), "run": str(run.path)}
    print(f"{kind:>10} n={n_obs:<3} seed {seed}: extrapolation RMSE {out['extrap_rmse']:.4f}"
          f"  (paper {PAPER[kind][n_obs]:.4f}); {steps} steps, {out['seconds_per_step'] * 1000:.0f} ms/step", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--observed", type=int, nargs="+", default=[30, 50, 100])
    p.add_argument("--kinds", nargs="+", default=["latent-ode", "rnn"], choices=list(CONFIGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-steps", type=int, default=None, help="cap training (for checking the script)")
    p.add_argument("--n-series", type=int, default=None, help="fewer series (for checking the script)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, default=None, help="keep run directories here (default: a temporary folder)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        results = [run_one(kind, n, s, args, root) for n in args.observed for kind in args.kinds for s in args.seeds]
    print("\n| model | " + " | ".join(f"{n}/100" for n in args.observed) + " |")
    print("|---|" + "---|" * len(args.observed))
    for kind in args.kinds:
        cells = []
        for n in args.observed:
            vals = [r["extrap_rmse"] for r in results if r["kind"] == kind and r["observed"] == n]
            mean = sum(vals) / len(vals)
            cells.append(f"{mean:.4f}" + (f" (+- {torch.tensor(vals).std().item():.4f})" if len(vals) > 1 else ""))
        print(f"| lvmkit {kind} | " + " | ".join(cells) + " |")
        print(f"| paper {kind} | " + " | ".join(f"{PAPER[kind][n]:.4f}" for n in args.observed) + " |")
    if args.json:
        write_json(args.json, {"protocol": "Chen et al. 2018 table 2 (see script docstring)", "results": results,
                               "paper": PAPER, "argv": sys.argv, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
