"""DRAW training throughput and how it grows with the number of glimpses T (issue 13).

One ``model.training_step`` (forward over T steps, backward, Adam, gradient clipping) of the
draw_fashion.toml network (LSTMs of 256, z_t of 100, attention read 2x2 / write 5x5) on a
batch of 100 dynamically binarized-like {0, 1} images of 28x28, for T in --steps. Median of
--reps timed steps after 2 warm-up steps; the loop's shuffling, EMA and logging are not
included. Also the same for read/write ``none`` and ``conv`` at T = 16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/draw_speed.py --json benchmarks/results/draw_speed.json
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import lvmkit
from lvmkit.core.optim import Optimizers

from _common import REPO, machine_info, write_json


def step_seconds(overrides: list[str], batch: int, reps: int, device: str) -> dict:
    cfg = lvmkit.load_config(REPO / "configs" / "draw_fashion.toml", overrides)
    model = lvmkit.build_model(cfg.model, (1, 28, 28)).to(device)
    opt = Optimizers(model.optimizer_groups(), cfg.train, getattr(model, "optimizer_defaults", {}))
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 1, 28, 28, generator=g) < 0.3).float().to(device)
    times = []
    for i in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.training_step(x, i, opt)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"overrides": overrides, "seconds_per_step": s, "examples_per_second": batch / s, "times": times,
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="1,4,16,32,64")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "draw_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"machine": machine_info(), "batch": args.batch, "reps": args.reps, "device": args.device, "rows": {}}
    rows = {f"attention T={t}": [f"model.time_steps={t}"] for t in map(int, args.steps.split(","))}
    rows["none T=16"] = ["model.time_steps=16", "model.read=none", "model.write=none"]
    rows["conv T=16"] = ["model.time_steps=16", "model.read=conv", "model.write=conv"]
    for name, overrides in rows.items():
        r = step_seconds(overrides, args.batch, args.reps, args.device)
        out["rows"][name] = r
        print(f"{name}: {r['seconds_per_step'] * 1000:.1f} ms/step, {r['examples_per_second']:.0f} examples/s", flush=True)
        write_json(args.json, out)


if __name__ == "__main__":
    main()
