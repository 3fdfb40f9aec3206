"""Hyperparameter-search overhead and worker scaling (issue 14).

overhead: one trial run by ``lvmkit search`` (a space whose parameters are all fixed, so the
    trial trains exactly the base experiment) against ``lvmkit.train`` of the same experiment,
    interleaved over --reps rounds; the ratio of wall times (search / direct) per round.
scaling: the same study of --trials trials (random lr, latent size) with 2 worker processes of
    one thread each against 1 worker with 2 threads; the ratio of wall times. Goal: <= 0.6.

Both use the digits conv VAE (the base experiment below, --epochs each), run as they are meant to
be used: a fresh study per measurement, SQLite storage in a temporary folder.

    .venv/bin/python benchmarks/search_scaling.py --json benchmarks/results/search_scaling.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import lvmkit
from lvmkit.core import _toml
from lvmkit.search import run_search

from _common import machine_info, write_json

BASE = {
    "data": {"name": "digits"},
    "model": {"kind": "vae", "network": "conv", "channels": [16, 32], "hidden": [64], "latent_dim": 8},
    "train": {"epochs": 5, "batch_size": 64, "patience": 0, "device": "cpu", "seed": 0, "sample_every": 0},
}


def space_file(folder: Path, params: dict, trials: int, epochs: int) -> Path:
    base = {**BASE, "train": {**BASE["train"], "epochs": epochs}}
    lines = [_toml.dumps(base), "[search]", 'objective = "val_loss"', 'direction = "minimize"', f"trials = {trials}",
             "prune = false", "[search.params]"]
    for name, spec in params.items():
        lines.append(f'"{name}" = {{' + ", ".join(f"{k} = {_toml._value(v)}" for k, v in spec.items()) + "}")
    path = folder / "space.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def overhead(reps: int, epochs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    fixed = {"train.lr": {"type": "fixed", "value": 1e-3}}
    direct, searched = [], []
    for r in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cfg = lvmkit.make_config({**BASE, "train": {**BASE["train"], "epochs": epochs, "lr": 1e-3, "threads": threads}})
            order = ("direct", "search") if r % 2 == 0 else ("search", "direct")
            for who in order:
                t0 = time.perf_counter()
                if who == "direct":
                    lvmkit.train(cfg, tmp / "direct", progress=False)
                    direct.append(time.perf_counter() - t0)
                else:
                    run_search(space_file(tmp, fixed, 1, epochs), trials=1, workers=1, out=tmp / "search")
                    searched.append(time.perf_counter() - t0)
            print(f"overhead round {r}: direct {direct[-1]:.2f} s, search {searched[-1]:.2f} s", flush=True)
    ratios = [s / d for s, d in zip(searched, direct)]
    return {"epochs": epochs, "threads": threads, "direct_seconds": direct, "search_seconds": searched,
            "ratios": ratios, "median_ratio": statistics.median(ratios)}


def scaling(trials: int, epochs: int) -> dict:
    params = {"train.lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
              "model.latent_dim": {"type": "int", "low": 2, "high": 16, "log": True}}
    out = {}
    for name, workers, threads in (("1 worker x 2 threads", 1, 2), ("2 workers x 1 thread", 2, 1)):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            space = space_file(tmp, params, trials, epochs)
            torch.set_num_threads(threads)  # one worker runs in this process; two get cpu_count // 2 each
            t0 = time.perf_counter()
            study = run_search(space, trials=trials, workers=workers, out=tmp / "s")
            wall = time.perf_counter() - t0
            numbers = sorted(t.number for t in study.trials)
            out[name] = {"wall_seconds": wall, "finished": len(numbers), "distinct_numbers": len(set(numbers))}
            print(f"scaling {name}: {wall:.1f} s for {len(numbers)} trials", flush=True)
    out["ratio_two_workers_over_one"] = out["2 workers x 1 thread"]["wall_seconds"] / out["1 worker x 2 threads"]["wall_seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="overhead,scaling")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = {"machine": machine_info(), "base": BASE}
    if "overhead" in args.parts:
        res["overhead"] = overhead(args.reps, args.epochs, 1)
    if "scaling" in args.parts:
        res["scaling"] = scaling(args.trials, args.epochs)
    print(res.get("overhead", {}).get("median_ratio"), res.get("scaling", {}).get("ratio_two_workers_over_one"))
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
