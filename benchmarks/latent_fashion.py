"""Fashion-MNIST latent-space benchmarks of issue 3: one-class anomaly detection, clustering
(K-means on raw pixels, on VAE codes, deep clustering) and few-label probes.

    python benchmarks/latent_fashion.py oneclass --json benchmarks/results/oneclass_fashion.json
    python benchmarks/latent_fashion.py cluster --vae-run RUN --json benchmarks/results/cluster_fashion.json
    python benchmarks/latent_fashion.py probe --vae-run RUN --json benchmarks/results/probe_fashion.json

Every number comes from lvmkit's own commands (one_class, cluster, probe) on the official
test split (10,000 images); wall times are recorded beside them.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import lvmkit

ROOT = Path(__file__).resolve().parents[1]


def _save(path: str | None, obj: dict) -> None:
    obj["machine"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}
    print(json.dumps(obj, indent=2))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["oneclass", "cluster", "probe"])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", default="/tmp/lvmkit-bench")
    ap.add_argument("--vae-run", default=None, help="a trained Fashion-MNIST VAE run (cluster, probe)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--reuse", action="store_true", help="oneclass: score the runs already under --out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    if args.task == "oneclass":
        # One conv AE per normal class; every anomaly score is computed on the same ten runs.
        cfg = lvmkit.load_config(ROOT / "configs/oneclass_fashion.toml", args.sets)
        base = out / "oneclass"
        if args.reuse and (base / "one_class.json").is_file():
            res = json.loads((base / "one_class.json").read_text())
        else:
            res = lvmkit.one_class(cfg, "all", base, score="recon")
        train_s = time.perf_counter() - t0
        by_score = {}
        for name in ("recon", "latent-knn", "recon+knn"):
            aurocs = {str(c): lvmkit.anomaly(base / f"class-{c}", name, write=False)["auroc"] for c in res["classes"]}
            by_score[name] = {"per_class": aurocs, "mean_auroc": sum(aurocs.values()) / len(aurocs)}
        _save(args.json, {"task": "one-class Fashion-MNIST, conv AE per class; AUROC on the 10,000 test images",
                          "config": cfg.to_dict(), "scores": by_score, "train_wall_s": train_s,
                          "wall_s": time.perf_counter() - t0})
    elif args.task == "cluster":
        results = {}
        if args.vae_run:
            r = lvmkit.cluster(args.vae_run, 10, "kmeans")["results"]
            results["kmeans_raw"], results["kmeans_vae_codes"], results["kmeans_pca"] = r["raw"], r["latent"], r["pca"]
        cfg = lvmkit.load_config(ROOT / "configs/dcec_fashion.toml", args.sets)
        run = lvmkit.train(cfg, out / f"dcec-{int(time.time())}")
        r = lvmkit.cluster(run, 10, "model")["results"]
        results["dcec"] = r["latent"]
        results.setdefault("kmeans_raw", r["raw"])
        results["kmeans_dcec_codes"] = lvmkit.cluster(run, 10, "kmeans", baselines=False)["results"]["latent"]
        for v in results.values():
            v.pop("confusion", None)
        _save(args.json, {"task": "clustering Fashion-MNIST test split, k = 10", "dcec_run": str(run.path),
                          "dcec_config": cfg.to_dict(), "results": results, "wall_s": time.perf_counter() - t0})
    else:
        res = lvmkit.probe(args.vae_run, [10, 100, 1000], 5)
        _save(args.json, {"task": "few-label logistic-regression probes, Fashion-MNIST", "vae_run": args.vae_run,
                          **res, "wall_s": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
