"""Every generative family on the bundled 8x8 digits, one protocol, one table (issues 11, 12).

Trains (or reuses) a VAE, a DCGAN, a DDPM, an RBM and an EBM from the shipped digits configs,
evaluates each family's likelihood where it has one (the estimator named), scores samples with
``lvmkit.quality`` (n samples against the test split, in the features of the classifier lvmkit
trains on digits' own labels; the floor beside them) -- the DDPM with ancestral sampling, DDIM 50
and DDIM 10 -- and writes ``lvmkit.compare``'s page of all runs.

    .venv/bin/python benchmarks/compare_digits.py --reuse ddpm=/tmp/ddpm/digits --json benchmarks/results/compare_digits.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import lvmkit

from _common import REPO, machine_info, write_json

CONFIGS = {"vae": "vae_digits.toml", "gan": "gan_digits.toml", "ddpm": "ddpm_digits.toml", "rbm": "rbm_digits.toml",
           "ebm": "ebm_digits.toml"}
# (label, sampler, steps): the DDPM's samplers; one-pass and chain models use their defaults
SAMPLERS = {"ddpm": [("ancestral 1000", "ancestral", None), ("DDIM 50", "ddim", 50), ("DDIM 10", "ddim", 10)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=2000, help="samples scored per model")
    ap.add_argument("--reuse", default="", help="NAME=RUN,...: use an existing run instead of training")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-compare-digits")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "compare_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reuse = dict(item.split("=", 1) for item in args.reuse.split(",") if item)
    rows, runs = {}, []
    for name, config in CONFIGS.items():
        if name in reuse:
            run = lvmkit.Run.open(reuse[name])
        else:
            out = args.out / name
            run = lvmkit.Run.open(out) if (out / "checkpoints" / "last.pt").is_file() else \
                lvmkit.train(lvmkit.load_config(REPO / "configs" / config), out, progress=False)
        runs.append(run)
        t0 = time.perf_counter()
        ev = lvmkit.evaluate(run, k=1000 if name == "vae" else None)
        ev_seconds = time.perf_counter() - t0
        for label, sampler, steps in SAMPLERS.get(name, [("default", None, None)]):
            q = lvmkit.quality(run, args.n, sampler=sampler, steps=steps, write=label in ("default", "DDIM 50"))
            key = name if label == "default" else f"{name} ({label})"
            rows[key] = {"run": str(run.path), "frechet_distance": q["frechet_distance"], "precision": q["precision"],
                         "recall": q["recall"], "classes_present": q["classes_present"],
                         "sample_seconds_per_1000": q["sample_seconds_per_1000"], "floor": q["floor"],
                         "training_seconds": sum(m["seconds"] for m in run.read_metrics()),
                         "likelihood": {k: ev[k] for k in ("log_likelihood", "log_likelihood_lower", "log_likelihood_upper",
                                                            "estimator", "nll_bound", "nll_bound_se", "bits_per_dim",
                                                            "bound_estimator", "test_elbo") if k in ev},
                         "evaluate_seconds": ev_seconds}
            print(key, {k: rows[key][k] for k in ("frechet_distance", "precision", "recall")}, flush=True)
    page = lvmkit.compare(runs, args.out / "compare")
    write_json(args.json, {"machine": machine_info(), "command": " ".join(["benchmarks/compare_digits.py", *[
        f"--{k}={v}" for k, v in vars(args).items()]]), "n": args.n, "rows": rows, "compare": str(page.get("written", ""))})


if __name__ == "__main__":
    main()
