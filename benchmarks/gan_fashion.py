"""Sample quality on Fashion-MNIST, one protocol for every generator (issues 9, 11 and 12).

Trains the conv VAE (prior samples), the DCGAN, the WGAN-GP, the DDPM and the Langevin EBM from
the shipped configs (with the epoch counts given here, so the whole table fits a CPU budget; the
DDPM with a CPU-sized U-Net, see ``MODELS``), then scores each with
``lvmkit.quality`` (n = 10,000 samples against the 10,000 test images, in the features of the
classifier lvmkit trains on Fashion-MNIST's own training labels). The floor (training images
against test images, same measure) comes with every score.

    .venv/bin/python benchmarks/gan_fashion.py --threads 1 --json benchmarks/results/quality_fashion.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lvmkit

from _common import REPO, machine_info, write_json

MODELS = {
    # warm-up shortened from 10,000 steps so the KL weight reaches 1 within the budget
    "conv VAE (prior samples)": ("convvae_fashion.toml", ["train.patience=0", "model.warmup_steps=2000"]),
    "DCGAN": ("dcgan_fashion.toml", []),
    "WGAN-GP": ("wgan_fashion.toml", []),
    # the config's 4.4 M-parameter U-Net takes ~13 s per step on one CPU thread; this one
    # (0.28 M parameters) takes ~0.5 s at batch 64. A GPU session drops these overrides.
    "DDPM": ("ddpm_fashion.toml", ["model.channels=[16,32,32]", "model.blocks=1", "model.dropout=0.0",
                                   "train.batch_size=64", "train.lr=3e-4", "train.sample_every=1"]),
    "EBM (Langevin)": ("ebm_fashion.toml", []),
}
# Extra rows scored from an already trained model's weights: NAME -> (MODEL, quality kwargs).
VARIANTS = {
    "DDPM": {"DDPM, DDIM 50": {"sampler": "ddim", "steps": 50, "eta": 0.0},
             "DDPM, DDIM 10": {"sampler": "ddim", "steps": 10, "eta": 0.0},
             "DDPM, ancestral 1000": {"sampler": "ancestral"},
             # a short CPU budget: the EMA (decay 0.9995) still holds a share of the first steps'
             # weights (0.9995^4220 = 12% of the initialisation), so the raw weights are scored too
             "DDPM raw weights, DDIM 50": {"sampler": "ddim", "steps": 50, "eta": 0.0, "weights": "raw"},
             "DDPM raw weights, DDIM 10": {"sampler": "ddim", "steps": 10, "eta": 0.0, "weights": "raw"},
             "DDPM raw weights, ancestral 1000": {"sampler": "ancestral", "weights": "raw"}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", default="conv VAE (prior samples)=10,DCGAN=8,WGAN-GP=4,DDPM=7,EBM (Langevin)=3",
                    help="NAME=EPOCHS,... (the configs' own counts need a GPU or hours)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rows", default=None, help="ROW;...: score only these rows of the models run (e.g. "
                    "'DDPM, ancestral 1000'); the others are kept from --json")
    ap.add_argument("--variant-n", default="", help="ROW=N;...: fewer samples for a slow sampler's row "
                    "(e.g. 'DDPM, ancestral 1000=1000'; rows are separated by ';'); the row records its n")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training and scoring)")
    ap.add_argument("--reuse", default="", help="NAME=RUN,...: score an existing run instead of training")
    ap.add_argument("--only", default=None, help="comma-separated model names to (re)run; the others are kept from --json")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-quality")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "quality_fashion.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = dict(item.split("=") for item in args.epochs.split(","))
    results = {"machine": machine_info(), "threads": args.threads, "n": args.n, "models": {}}
    only = args.only.split(",") if args.only else list(MODELS)
    if args.only and args.json.is_file():
        import json

        results["models"] = {k: v for k, v in json.loads(args.json.read_text())["models"].items() if k not in only}
    for name, (config, sets) in MODELS.items():
        if name not in only:
            continue
        cfg = lvmkit.load_config(REPO / "configs" / config,
                                 [*sets, f"train.epochs={epochs[name]}", f"train.threads={args.threads}", f"train.device={args.device}"])
        reuse = dict(item.split("=", 1) for item in args.reuse.split(",") if item)
        t0 = time.perf_counter()
        if name in reuse:
            run = lvmkit.Run.open(reuse[name])
            train_seconds = sum(m["seconds"] for m in run.read_metrics())
        else:
            run = lvmkit.train(cfg, args.out / f"{config.removesuffix('.toml')}-{int(time.time())}", progress=True)
            train_seconds = time.perf_counter() - t0
        variant_n = {k: int(v) for k, v in (item.rsplit("=", 1) for item in args.variant_n.split(";") if item)}
        rows = VARIANTS.get(name, {name: {}})
        if args.rows:
            rows = {r: kw for r, kw in rows.items() if r in args.rows.split(";")}
        for row, kwargs in rows.items():
            n = variant_n.get(row, args.n)
            q = lvmkit.quality(run, n, device=args.device, progress=True, write=False, **kwargs)
            results["models"][row] = {"config": config, "overrides": sets, "epochs": int(epochs[name]),
                                      "train_seconds": round(train_seconds, 1), "run": str(run.path), "n": n, **q}
            print(f"{row}: FD {q['frechet_distance']:.3f} (floor {q['floor']['frechet_distance']:.3f}) "
                  f"precision {q['precision']:.3f} recall {q['recall']:.3f} classes {q['classes_present']}",
                  flush=True)
            order = [r for m in MODELS for r in VARIANTS.get(m, {m: {}})]
            results["models"] = {k: results["models"][k] for k in order if k in results["models"]}
            write_json(args.json, results)


if __name__ == "__main__":
    main()
