"""Test NLL of a trained run by importance sampling (issue 2 protocol), with a paired estimate.

The importance-weighted estimate with k = 5000 costs 5000 decoder passes per example, so on a
CPU it is computed on the first ``--max-examples`` test images. The ELBO is computed on the
whole test split; the per-example gap (IW estimate - ELBO) has a small variance, so
NLL_full ~= -(mean ELBO over all) - (mean gap over the subset) is a precise estimate of the
full-test-set NLL; both numbers are reported, with standard errors.

    python benchmarks/nll_eval.py RUN --k 5000 --max-examples 1000 --json benchmarks/results/nll_fashion.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import lvmkit
from lvmkit.data import batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--max-examples", type=int, default=1000)
    ap.add_argument("--elbo-samples", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = lvmkit.Run.open(args.run)
    model, test = run.load_model(), run.data().test
    torch.manual_seed(0)
    t0 = time.perf_counter()
    elbo = torch.cat([torch.stack([model.elbo(xb)["elbo"] for _ in range(args.elbo_samples)]).mean(0)
                      for xb, _ in batches(test, 500, shuffle=False)])
    sub = test.x[: args.max_examples]
    t1 = time.perf_counter()
    iw = torch.cat([model.log_likelihood(sub[i : i + 20], args.k) for i in range(0, len(sub), 20)])
    iw_s = time.perf_counter() - t1
    gap = iw - elbo[: len(sub)]
    se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
    metrics = run.read_metrics()
    res = {
        "run": str(run.path), "data": run.config.data.name, "binarize": run.config.data.binarize,
        "model": run.config.model.model_dump(), "epochs": metrics[-1]["epoch"],
        "best_epoch": min(metrics, key=lambda m: m["val_loss"])["epoch"],
        "train_hours": sum(m["seconds"] for m in metrics) / 3600,
        "n_test": len(test), "k": args.k, "n_iw": len(sub),
        "neg_elbo_full": float(-elbo.mean()), "neg_elbo_full_se": se(elbo),
        "nll_subset": float(-iw.mean()), "nll_subset_se": se(iw), "neg_elbo_subset": float(-elbo[: len(sub)].mean()),
        "gap_subset": float(gap.mean()), "gap_subset_se": se(gap),
        "nll_full_paired": float(-elbo.mean() - gap.mean()),
        "nll_full_paired_se": math.sqrt(se(elbo) ** 2 + se(gap) ** 2),
        "iw_seconds": iw_s, "eval_seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
