"""Training step time of the DDPM: lvmkit's loop against diffusers' unconditional training loop
with a U-Net of the same size (issue 22).

Both train on the same Fashion-MNIST images (``--limit`` of them, in [0, 1] mapped to [-1, 1]),
batch 64, AdamW 3e-4 with a cosine schedule after 200 warm-up steps, gradient clipping at 1,
an EMA of the weights (decay 0.999, updated every step), eps-prediction and the plain MSE, 1000
linear-schedule timesteps, in this process, one after the other:

- lvmkit: ``lvmkit.train`` on ``configs/ddpm_fashion_cpu.toml`` as a user calls it (min-SNR
  weighting off so that the loss is the same plain MSE, EMA from the first step); epoch time =
  the run's ``train_seconds`` (shuffling, the step, clipping, EMA).
- diffusers: the loop of diffusers' examples/unconditional_image_generation/train_unconditional.py
  without accelerate (one CPU process): ``UNet2DModel`` with block_out_channels (16, 32, 32),
  one layer per block, self-attention at 7x7 (single head: attention_head_dim 32) and GroupNorm of
  8 groups, as lvmkit's U-Net; ``DDPMScheduler.add_noise``, ``F.mse_loss``, ``clip_grad_norm_``,
  AdamW, ``get_scheduler("cosine")``, ``EMAModel.step``; a DataLoader over a TensorDataset.

The two networks are the same size, not the same code: their parameter counts are reported. The
epoch time is the median over epochs 2..E of ``--rounds`` rounds, the two taking turns; the ratio
is diffusers / lvmkit (above 1: lvmkit is faster).

    .venv-bench/bin/python benchmarks/ddpm_train_speed.py --threads 2 --json benchmarks/results/ddpm_train_speed.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lvmkit

from _common import REPO, machine_info, write_json

BATCH, LR, WARMUP, DECAY = 64, 3e-4, 200, 0.999


def config(args):
    cfg = lvmkit.load_config(REPO / "configs" / "ddpm_fashion_cpu.toml", [
        f"train.epochs={args.epochs}", f"train.threads={args.threads}", "train.device=cpu", "train.ema_start=0",
        "train.sample_every=0", f"data.limit={args.limit}", "data.val_fraction=0.01"])
    # the plain MSE as diffusers' loop has it, and no wall-time budget
    raw = cfg.model_dump()
    raw["model"]["min_snr_gamma"], raw["train"]["time_limit"] = None, None
    return lvmkit.make_config(raw)


def run_lvmkit(args, workdir: Path) -> tuple[list[float], int]:
    run = lvmkit.train(config(args), workdir / "lvmkit", progress=False, report=False)
    params = sum(p.numel() for p in run.load_model().parameters())
    return [m["train_seconds"] for m in run.read_metrics()], params


def run_diffusers(args) -> tuple[list[float], int]:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    cfg = config(args)
    data = lvmkit.load_data(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                        block_out_channels=(16, 32, 32), norm_num_groups=8, attention_head_dim=32,
                        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    loader = DataLoader(TensorDataset(data.train.x), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=WARMUP,
                                 num_training_steps=len(loader) * args.epochs)
    ema = EMAModel(model.parameters(), decay=DECAY, use_ema_warmup=True)
    times = []
    for _ in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        for (x,) in loader:
            clean = 2 * x - 1
            noise = torch.randn_like(clean)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
            noisy = scheduler.add_noise(clean, noise, t)
            loss = F.mse_loss(model(noisy, t).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            ema.step(model.parameters())
        times.append(time.perf_counter() - t0)
    return times, sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=3200, help="Fashion-MNIST training images used")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "ddpm_train_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"machine": machine_info(), "threads": args.threads, "epochs": args.epochs, "limit": args.limit, "batch": BATCH}
    raw: dict[str, list[float]] = {"diffusers": [], "lvmkit": []}
    params = {}
    for r in range(args.rounds):  # alternate the contenders, so load changes hit both
        with tempfile.TemporaryDirectory() as tmp:
            times, params["diffusers"] = run_diffusers(args)
            raw["diffusers"] += times[1:]
            times, params["lvmkit"] = run_lvmkit(args, Path(tmp))
            raw["lvmkit"] += times[1:]
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in raw.items()}
    res.update(epoch_seconds=raw, rounds=args.rounds, parameters=params, median_epoch_seconds=med,
               ratio_diffusers_over_lvmkit=med["diffusers"] / med["lvmkit"])
    for k, v in med.items():
        print(f"{k:>10}: {v:.2f} s/epoch, {params[k]:,} parameters")
    print(f"diffusers / lvmkit = {res['ratio_diffusers_over_lvmkit']:.3f}")
    write_json(args.json, res)


if __name__ == "__main__":
    main()
