"""Fashion-MNIST density benchmark: train a VAE, then estimate test NLL by importance sampling.

Protocol (ANCHORS.md): dynamic binarization in training; the test set binarized once with a
fixed seed; NLL = -mean log p(x) with the importance-weighted estimate, k = 5000.

    python benchmarks/nll_fashion.py --config configs/convvae_fashion.toml \
        --set train.device=cuda --k 5000 --json benchmarks/results/nll_fashion.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import lvmkit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/convvae_fashion.toml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--out", default=None, help="run directory")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--eval-batch", type=int, default=20)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cfg = lvmkit.load_config(args.config, args.sets)
    t0 = time.perf_counter()
    run = lvmkit.train(cfg, args.out, progress=True)
    train_s = time.perf_counter() - t0
    metrics = run.read_metrics()
    t1 = time.perf_counter()
    res = lvmkit.evaluate(run, args.k, batch_size=args.eval_batch, max_examples=args.max_examples)
    eval_s = time.perf_counter() - t1

    summary = {
        "run": str(run.path),
        "config": cfg.to_dict(),
        "epochs_run": metrics[-1]["epoch"],
        "best_epoch": min(metrics, key=lambda m: m["val_loss"])["epoch"],
        "train_wall_s": train_s,
        "eval_wall_s": eval_s,
        "nll": res.get("nll"),
        "nll_stderr": res.get("nll_stderr"),
        "test_elbo": res.get("test_elbo"),
        "k": args.k,
        "n_test": res["n_test"],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "torch": torch.__version__,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
