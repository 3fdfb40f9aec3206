"""Training step time of the DCGAN: lvmkit's loop against a plain PyTorch loop of the same
networks, written as pytorch/examples' dcgan/main.py writes it (issue 9).

Both train the generator and discriminator that ``configs/dcgan_fashion.toml`` builds (same
init, Adam 2e-4 / betas (0.5, 0.999), batch 128) on the same Fashion-MNIST images, in this
process, one after the other:

- lvmkit: ``lvmkit.train`` as a user calls it (the family's ``training_step``: D on real and on
  G(z) made without a graph, then G's step through a frozen D); epoch time = the run's
  ``train_seconds`` (the training pass: shuffling, both steps, clipping, EMA when on).
  Measured with EMA on (the config's 0.999) and off.
- plain: the example's loop: DataLoader over a TensorDataset, D on real, D on fake.detach(),
  step D, then G's loss on D(fake) reusing the same fake batch, step G; BCE on logits.

The reported epoch time is the median over epochs 2..E (epoch 1 of each run is a warm-up) of
``--rounds`` rounds, the contenders taking turns within each round; the ratio is plain / lvmkit
(above 1: lvmkit is faster).

    .venv/bin/python benchmarks/dcgan_speed.py --threads 1 --epochs 5 --json benchmarks/results/dcgan_speed.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lvmkit

from _common import REPO, machine_info, write_json

BATCH = 128


def config(args, ema: float):
    return lvmkit.load_config(REPO / "configs" / "dcgan_fashion.toml", [
        f"train.epochs={args.epochs}", f"train.threads={args.threads}", "train.device=cpu", f"train.ema_decay={ema}",
        "train.sample_every=0", f"data.limit={args.limit}", "data.val_fraction=0.01"])


def run_lvmkit(args, workdir: Path, ema: float) -> list[float]:
    run = lvmkit.train(config(args, ema), workdir / f"lvmkit-ema{ema}", progress=False)
    return [m["train_seconds"] for m in run.read_metrics()]


def run_plain(args) -> list[float]:
    cfg = config(args, 0.0)
    data = lvmkit.load_data(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    gan = lvmkit.build_model(cfg.model, data.shape)  # the same networks and initialisation
    net_g, net_d, nz = gan.generator, gan.discriminator, gan.latent_dim
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(TensorDataset(data.train.x), batch_size=BATCH, shuffle=True)
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for (real,) in loader:
            b = real.shape[0]
            real_label, fake_label = torch.full((b,), 1.0), torch.full((b,), 0.0)
            net_d.zero_grad()
            err_d_real = criterion(net_d(real), real_label)
            err_d_real.backward()
            fake = net_g(torch.randn(b, nz))
            err_d_fake = criterion(net_d(fake.detach()), fake_label)
            err_d_fake.backward()
            opt_d.step()
            net_g.zero_grad()
            err_g = criterion(net_d(fake), real_label)
            err_g.backward()
            opt_g.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=12800, help="Fashion-MNIST training images used")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "dcgan_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"machine": machine_info(), "threads": args.threads, "epochs": args.epochs, "limit": args.limit, "batch": BATCH}
    raw: dict[str, list[float]] = {"plain": [], "lvmkit (EMA 0.999)": [], "lvmkit (no EMA)": []}
    for r in range(args.rounds):  # alternate the contenders, so load changes hit all of them
        with tempfile.TemporaryDirectory() as tmp:
            raw["plain"] += run_plain(args)[1:]
            raw["lvmkit (EMA 0.999)"] += run_lvmkit(args, Path(tmp), 0.999)[1:]
            raw["lvmkit (no EMA)"] += run_lvmkit(args, Path(tmp), 0.0)[1:]
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in raw.items()}
    res["epoch_seconds"] = raw  # warm-up epochs left out
    res["rounds"] = args.rounds
    res["median_epoch_seconds"] = med
    res["ratio_plain_over_lvmkit"] = {k: med["plain"] / v for k, v in med.items() if k != "plain"}
    for k, v in med.items():
        print(f"{k:>20}: {v:.2f} s/epoch" + ("" if k == "plain" else f"  (plain / lvmkit = {med['plain'] / v:.3f})"))
    write_json(args.json, res)


if __name__ == "__main__":
    main()
