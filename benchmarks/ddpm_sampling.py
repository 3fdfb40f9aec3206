"""DDPM sampling and training throughput on a CPU, and DDIM against diffusers' DDIMScheduler (issue 11).

All contenders share one process, one thread and the same network weights:

1. lvmkit DDIM-50 (eta 0) against lvmkit's ancestral sampler (all T = 1000 steps): samples/s
   for ``--n`` samples, median over ``--reps`` rounds (ancestral: ``--ancestral-reps``).
2. The same DDIM-50 driven by Hugging Face diffusers' ``DDIMScheduler`` (linear betas 1e-4 ..
   0.02, clip_sample, set_alpha_to_one, steps_offset 0, set_timesteps(50)) calling the SAME
   network (``model.denoise`` predicts eps) on the SAME initial noise: samples/s and the largest
   absolute difference between the two sample sets in [-1, 1] units.
3. Training throughput (examples/s) of ``model.training_step`` (lvmkit's ``Optimizers``: Adam
   2e-4, grad clip 1, as configs/ddpm_digits.toml) at batch 64 for 8x8 digits ([32, 64]) and
   28x28 Fashion-MNIST shapes (default_channels), random data, median over ``--train-steps``
   steps after ``--warmup`` steps. The training loop's EMA update and data shuffling are not
   included (the step only).

Within each round the contenders take turns, so the machine's load hits all of them alike.

    .venv-bench/bin/python benchmarks/ddpm_sampling.py --json benchmarks/results/ddpm_sampling.json
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import sys
import time

import torch

import lvmkit
from lvmkit.core.optim import Optimizers
from lvmkit.models.diffusion.ddpm import default_channels
from lvmkit.models.diffusion.samplers import DDIM, Ancestral

from _common import REPO, _version, machine_info, write_json


def load_model(run_dir: str):
    try:
        run = lvmkit.Run.open(run_dir)
        model = run.load_model("last")
        meta = {"weights": f"{run_dir} checkpoint 'last' (EMA weights)",
                "epochs_done": len(run.read_metrics())}
        return model, meta
    except Exception as err:  # noqa: BLE001 - fall back to an untrained model of the same config
        cfg = lvmkit.load_config(REPO / "configs" / "ddpm_digits.toml")
        torch.manual_seed(0)
        model = lvmkit.build_model(cfg.model, (1, 8, 8))
        return model, {"weights": f"untrained, built from configs/ddpm_digits.toml ({err})"}


@torch.no_grad()
def diffusers_ddim(model, n: int, seed: int, steps: int = 50):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          clip_sample=True, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(steps)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *model.input_shape), generator=g)  # the first draw, as lvmkit's sampler makes it
    for t in sched.timesteps:
        eps, _ = model.denoise(x, torch.full((n,), int(t), dtype=torch.long))
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-1.0, 1.0)  # [-1, 1]; lvmkit maps the same x to [0, 1] and clamps


def lvmkit_sample(model, n: int, seed: int, sampler):
    return model.sample(n, generator=torch.Generator().manual_seed(seed), sampler=sampler) * 2 - 1  # -> [-1, 1]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def train_throughput(shape, channels, batch: int, warmup: int, steps: int) -> dict:
    # configs/ddpm_digits.toml's model and optimizer, with the widths given (None: default_channels)
    cfg = lvmkit.make_config({"model": {"kind": "ddpm", "timesteps": 1000, "schedule": "linear", "target": "eps",
                                        "loss": "simple", "variance": "fixed-small", "channels": channels},
                              "train": {"batch_size": batch, "lr": 2e-4, "grad_clip": 1.0, "device": "cpu"}})
    torch.manual_seed(0)
    model = lvmkit.build_model(cfg.model, shape)
    model.train()
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    x = torch.rand(batch, *shape)
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        model.training_step(x, s, opt)
        dt = time.perf_counter() - t0
        if s >= warmup:
            times.append(dt)
    params = sum(p.numel() for p in model.parameters())
    med = statistics.median(times)
    return {"shape": list(shape), "channels": list(cfg.model.channels or default_channels(shape)),
            "parameters": params, "batch": batch, "step_seconds": times, "median_step_seconds": med,
            "examples_per_s": batch / med}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="/tmp/ddpm/digits")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ancestral-reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model, meta = load_model(args.run)
    model.eval()
    print(meta, flush=True)
    ddim, anc = DDIM(50, 0.0), Ancestral()
    # warm-up (one small call each)
    lvmkit_sample(model, 4, 0, DDIM(5, 0.0))
    diffusers_ddim(model, 4, 0, 5)

    rows = {"lvmkit_ddim50": [], "diffusers_ddim50": [], "lvmkit_ancestral1000": []}
    diffs = []
    for r in range(args.reps):
        seed = 100 + r
        order = ["lvmkit", "diffusers"] if r % 2 == 0 else ["diffusers", "lvmkit"]
        outs = {}
        for who in order:
            if who == "lvmkit":
                dt, outs[who] = timed(lambda: lvmkit_sample(model, args.n, seed, ddim))
                rows["lvmkit_ddim50"].append(dt)
            else:
                dt, outs[who] = timed(lambda: diffusers_ddim(model, args.n, seed))
                rows["diffusers_ddim50"].append(dt)
            print(f"round {r} {who} DDIM-50: {dt:.2f} s", flush=True)
        diffs.append(float((outs["lvmkit"] - outs["diffusers"]).abs().max()))
        if r < args.ancestral_reps:
            dt, _ = timed(lambda: lvmkit_sample(model, args.n, seed, anc))
            rows["lvmkit_ancestral1000"].append(dt)
            print(f"round {r} lvmkit ancestral-1000: {dt:.2f} s", flush=True)

    med = {k: statistics.median(v) if v else float("nan") for k, v in rows.items()}
    sps = {k: args.n / v for k, v in med.items()}
    print("training throughput ...", flush=True)
    train = {"digits_8x8": train_throughput((1, 8, 8), [32, 64], 64, args.warmup, args.train_steps),
             "fashion_28x28": train_throughput((1, 28, 28), None, 64, args.warmup, args.train_steps)}

    # the pinned one-step comparison test, run under this interpreter
    import subprocess
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_diffusion.py", "-k", "diffusers"],
                          capture_output=True, text=True, cwd=REPO)
    test_line = ((test.stdout + test.stderr).strip().splitlines() or [""])[-1]

    result = {
        "machine": {**machine_info(), "diffusers": _version("diffusers"),
                    "load_avg_at_end": os.getloadavg(), "note": "2 shared cores, other jobs running (load 3-4)"},
        "command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]),
        "weights": meta, "n_samples": args.n,
        "sampling_seconds": rows, "median_seconds": med, "samples_per_s": sps,
        "ratio_ddim_over_ancestral_samples_per_s": sps["lvmkit_ddim50"] / sps["lvmkit_ancestral1000"],
        "ratio_lvmkit_over_diffusers_ddim_samples_per_s": sps["lvmkit_ddim50"] / sps["diffusers_ddim50"],
        # per round (the two ran back to back): diffusers seconds / lvmkit seconds
        "paired_ratios_lvmkit_over_diffusers": [d / l for l, d in zip(rows["lvmkit_ddim50"], rows["diffusers_ddim50"])],
        "max_abs_diff_lvmkit_vs_diffusers_ddim_minus1_1": diffs,
        "training": train,
        "pytest_diffusers": {"returncode": test.returncode, "summary": test_line},
    }
    print({k: result[k] for k in ("samples_per_s", "ratio_ddim_over_ancestral_samples_per_s",
                                   "ratio_lvmkit_over_diffusers_ddim_samples_per_s",
                                   "paired_ratios_lvmkit_over_diffusers",
                                   "max_abs_diff_lvmkit_vs_diffusers_ddim_minus1_1", "pytest_diffusers")})
    for k, v in train.items():
        print(k, v["channels"], v["parameters"], f"{v['examples_per_s']:.1f} ex/s")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
