"""Two processes (torchrun, gloo, one thread each) against one process with two threads (issue 15).

Trains the same experiment both ways through the CLI (``--epochs`` of the conv autoencoder of ae_fashion.toml, deterministic so the weights can agree, on
Fashion-MNIST's first ``--limit`` images by default), reads each run's per-epoch
``train_seconds`` and compares the medians, and checks that the final weights agree.

    .venv/bin/python benchmarks/ddp_cpu.py --json benchmarks/results/ddp_cpu.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import lvmkit
from lvmkit.core.checkpoint import load_checkpoint

from _common import REPO, machine_info, write_json

BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "ae_fashion.toml"))
    ap.add_argument("--limit", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sets = [f"data.limit={args.limit}", f"train.epochs={args.epochs}", "train.patience=0", "train.sample_every=0",
            "train.device=cpu"]
    res = {"machine": machine_info(), "config": args.config, "overrides": sets, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, cmd, threads in (
            ("1 process x 1 thread", [str(BIN / "lvmkit"), "train"], 1),
            ("1 process x 2 threads", [str(BIN / "lvmkit"), "train"], 2),
            ("2 processes x 1 thread", [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "lvmkit", "train"], 1),
        ):
            out = Path(tmp) / name.replace(" ", "_")
            full = [*cmd, args.config, "--out", str(out), "--quiet", *[a for s in sets + [f"train.threads={threads}"]
                                                                      for a in ("--set", s)]]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            subprocess.run(full, check=True, env=env, capture_output=True, text=True)
            metrics = lvmkit.Run.open(out).read_metrics()
            per_epoch = [m["train_seconds"] for m in metrics]
            runs[name] = {"command": full, "train_seconds_per_epoch": per_epoch,
                          "train_loss": [m["train_loss"] for m in metrics], "val_loss": [m["val_loss"] for m in metrics],
                          "median_epoch_seconds": statistics.median(per_epoch)}
            print(name, [round(t, 1) for t in per_epoch], [round(m["val_loss"], 5) for m in metrics], flush=True)
        w = {name: load_checkpoint(Path(tmp) / name.replace(" ", "_") / "checkpoints" / "last.pt")["model"] for name in runs}
        diff = lambda a, b: max(float((w[a][k] - w[b][k]).abs().max()) for k in w[a])  # noqa: E731
        # float summation order alone (1 vs 2 threads in one process) is the yardstick: Adam
        # amplifies 1e-7 differences over a few hundred steps
        res["max_abs_weight_difference"] = diff("1 process x 2 threads", "2 processes x 1 thread")
        res["max_abs_weight_difference_1_vs_2_threads"] = diff("1 process x 1 thread", "1 process x 2 threads")
    res["runs"] = runs
    res["ratio_two_processes_over_one"] = (runs["2 processes x 1 thread"]["median_epoch_seconds"]
                                           / runs["1 process x 2 threads"]["median_epoch_seconds"])
    res["load_after"] = os.getloadavg()
    print(f"2 processes / 1 process epoch time: {res['ratio_two_processes_over_one']:.2f}; "
          f"max |weight difference| {res['max_abs_weight_difference']:.2e} (1 vs 2 threads in one process: "
          f"{res['max_abs_weight_difference_1_vs_2_threads']:.2e})", flush=True)
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    main()
