"""The GPU measurements of issue 22 in one short run: every family's training examples per
second in fp32 and bf16 (the loop's autocast), then a DDPM trained on Fashion-MNIST for a fixed
wall time and its Frechet distance (DDIM 50, EMA weights, n = 10,000 against the test set).

    bash benchmarks/gpu.sh --out DIR          # on a machine with CUDA: under 8 minutes
    bash benchmarks/gpu.sh --dry-run          # the same code on the CPU in seconds (the test suite)

Writes DIR/gpu_bench.json.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from _common import REPO, machine_info, write_json
from profile_steps import CASES, _setup

import lvmkit


def throughput(name: str, device: str, precision: str, seconds: float) -> dict:
    torch.manual_seed(0)
    cfg, model, opt, ema, x = _setup(name)
    model.to(device)
    x = x.to(device)
    if ema is not None:
        ema.load_state_dict(model.state_dict())
    batch = cfg.train.batch_size
    gen = torch.Generator(device="cpu").manual_seed(1)
    cast = (torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())

    def step(s: int) -> None:
        xb = x.index_select(0, torch.randint(0, len(x), (batch,), generator=gen).to(device))
        with cast:
            model.training_step(xb, s, opt)
        if ema is not None:
            ema.update(model, s)

    step(0)  # warm-up: kernels chosen, memory allocated
    if device == "cuda":
        torch.cuda.synchronize()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 2:
        step(steps + 1)
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"family": name, "precision": precision, "batch_size": batch, "steps": steps,
            "examples_per_second": batch * steps / wall, "ms_per_step": 1e3 * wall / steps}


def ddpm_run(device: str, minutes: float, dry: bool, out: Path) -> dict:
    if dry:  # digits (bundled), a tiny U-Net, seconds
        sets = ["model.channels=[16,32]", "model.sample_steps=5", "train.ema_decay=0.99", "train.batch_size=256"]
        config, n = REPO / "configs/ddpm_digits.toml", 100
    else:
        sets, config, n = ["model.sample_steps=50", "train.precision=bf16"], REPO / "configs/ddpm_fashion.toml", 10_000
    cfg = lvmkit.load_config(config, [*sets, f"train.device={device}", f"train.time_limit={60 * minutes}",
                                      "train.epochs=1000", "train.sample_every=0"])
    t0 = time.perf_counter()
    run = lvmkit.train(cfg, out / "ddpm", progress=False)
    train_seconds = time.perf_counter() - t0
    q = lvmkit.quality(run, n=n, device=device, sampler="ddim", steps=cfg.model.sample_steps, write=True)
    return {"config": str(config.relative_to(REPO)), "overrides": sets, "time_limit_minutes": minutes,
            "train_seconds": train_seconds, "steps": run.read_metrics()[-1]["step"] if run.read_metrics() else 0,
            "frechet_distance": q["frechet_distance"], "n": n, "weights": q.get("weights"),
            "sampler": q.get("sampler")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="on the CPU, seconds per measurement (for the tests)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"))
    ap.add_argument("--seconds", type=float, default=None, help="per family and precision (default 8; dry run 0.2)")
    ap.add_argument("--ddpm-minutes", type=float, default=None, help="DDPM training budget (default 5; dry run 0.1)")
    ap.add_argument("--families", default=",".join(CASES))
    args = ap.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device is visible; run it on a GPU machine, or pass --dry-run.")
    device = "cpu" if dry else "cuda"
    seconds = args.seconds if args.seconds is not None else (0.2 if dry else 8.0)
    minutes = args.ddpm_minutes if args.ddpm_minutes is not None else (0.1 if dry else 5.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    families = ["vae", "rbm"] if dry and args.families == ",".join(CASES) else args.families.split(",")
    rows = []
    for name in families:
        for precision in ("fp32", "bf16"):
            row = throughput(name, device, precision, seconds)
            rows.append(row)
            print(f"{name:11s} {precision} {row['examples_per_second']:10.0f} examples/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ddpm = ddpm_run(device, minutes, dry, Path(tmp))
    print(f"ddpm {minutes} min: FD {ddpm['frechet_distance']:.1f} after {ddpm['steps']} steps", flush=True)
    info = machine_info()
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    write_json(out / "gpu_bench.json", {"machine": info, "dry_run": dry, "device": device, "throughput": rows,
                                        "ddpm": ddpm})


if __name__ == "__main__":
    main()
