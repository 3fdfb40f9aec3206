"""Does DEC cluster better than K-means on the codes it started from? (issue 10, item 8)

    OMP_NUM_THREADS=1 python benchmarks/dec_vs_kmeans.py --json benchmarks/results/dec_vs_kmeans.json
    # quick check of the script (not a measurement):
    OMP_NUM_THREADS=1 python benchmarks/dec_vs_kmeans.py --seeds 0 --fashion-epochs 12 --fashion-limit 4000

For every bundled image set (scikit-learn digits; Fashion-MNIST where it is installed) and seed,
one DEC run at the model's default clustering settings (gamma, pretrain_steps, dec_interval,
dec_tol, train.patience). A callback keeps the codes at the end of pretraining, the codes DEC's
own K-means initialisation sees, so "K-means on the pretrained codes" needs no second run:
pretraining must therefore end on an epoch boundary (pretrain_steps a multiple of the steps per
epoch), which the data sizes below are chosen for. Reported, on the test split and on the
training split (DEC's own, transductive protocol): ACC, NMI and ARI of

- ``kmeans_pretrained``: K-means (k = clusters, 10 starts) on the codes after pretraining,
- ``dec``: DEC's own clusters (``lvmkit.cluster(run, k, method="model")``, best checkpoint),
- ``kmeans_dec_codes``: K-means on the final DEC codes.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lvmkit
from lvmkit.core.config import apply_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

# DEC's network (Xie et al. 2016: d-500-500-2000-10) on the 8x8 digits; batch 64 makes an epoch
# of the 1,258 training images 20 steps, so pretraining (1,000 steps) ends on epoch 50.
DIGITS = {"data": {"name": "digits"},
          "model": {"kind": "dec", "latent_dim": 10, "hidden": [500, 500, 2000], "clusters": 10},
          "train": {"epochs": 150, "batch_size": 64, "device": "cpu"}}


def fashion_overrides(limit: int, epochs: int) -> list[str]:
    """configs/dcec_fashion.toml on a subset: DEC's default pretrain_steps (1,000, not the
    file's 4,000) and the default patience, so that early stopping is in play."""
    return [f"data.limit={limit}", f"train.epochs={epochs}", "model.pretrain_steps=1000", "train.patience=10",
            "train.device='cpu'"]


class PretrainedCodes:
    """Callback: the codes of ``splits`` at the end of the epoch whose last step is ``steps``."""

    def __init__(self, steps: int, splits: dict) -> None:
        self.steps, self.splits, self.codes = steps, splits, None

    def on_epoch_end(self, trainer, record) -> None:
        if trainer.step == self.steps:
            model = trainer.model.eval()
            self.codes = {k: model.embed(x).cpu().numpy() for k, x in self.splits.items()}
            model.train()


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    m = lvmkit.cluster_metrics(y, pred)
    return {k: round(m[k], 4) for k in ("acc", "nmi", "ari")}


def one_run(name: str, cfg: lvmkit.ExperimentConfig, out: Path) -> dict:
    data = lvmkit.load_data(cfg.data, cfg.train.seed)
    k, steps = cfg.model.clusters, cfg.model.pretrain_steps
    per_epoch = math.ceil(len(data.train) / cfg.train.batch_size)
    if steps % per_epoch:
        raise SystemExit(f"{name}: pretrain_steps = {steps} is not a multiple of the {per_epoch} steps per epoch; "
                         "choose the data size or batch size so that pretraining ends on an epoch boundary.")
    splits = {"train": data.train.x, "test": data.test.x}
    labels = {"train": data.train.y.numpy(), "test": data.test.y.numpy()}
    grab = PretrainedCodes(steps, splits)
    t0 = time.perf_counter()
    run = lvmkit.train(cfg, out, progress=False, callbacks=[grab])
    seconds = time.perf_counter() - t0
    if grab.codes is None:
        raise SystemExit(f"{name}: the run ended before pretraining did ({steps} steps).")
    model = run.load_model("best")
    ckpt = lvmkit.load_checkpoint(run.checkpoints / "last.pt")
    metrics = run.read_metrics()
    res: dict = {}
    for split in ("train", "test"):
        codes = model.embed(splits[split]).numpy()
        km0 = lvmkit.CLUSTERERS.get("kmeans")(k, cfg.train.seed).fit_predict(grab.codes[split])
        km1 = lvmkit.CLUSTERERS.get("kmeans")(k, cfg.train.seed).fit_predict(codes)
        dec = model.regularizer.predict(torch.as_tensor(codes)).numpy()
        res[split] = {"n": len(codes), "kmeans_pretrained": _metrics(labels[split], km0),
                      "dec": _metrics(labels[split], dec), "kmeans_dec_codes": _metrics(labels[split], km1)}
    # the public entry point gives the same test numbers for DEC's clusters
    api = lvmkit.cluster(run, k, method="model", baselines=False, write=False)["results"]["latent"]
    assert abs(api["acc"] - res["test"]["dec"]["acc"]) < 1e-4, (api["acc"], res["test"]["dec"])
    clustering = [m for m in metrics if m["step"] > steps]
    res.update({
        "seconds": round(seconds, 1), "steps": metrics[-1]["step"], "epochs": len(metrics),
        "clustering_steps": metrics[-1]["step"] - steps, "target_refreshes": int(model.regularizer.refreshes),
        # A stop asked for at an epoch's first step leaves no record in last.pt (train.py).
        "stopped": ckpt["state"]["stopped"] or ("stopped at an epoch's first step (DEC converged)"
                                                if len(metrics) < cfg.train.epochs else "ran all epochs"),
        "dec_kl_first_last": [round(clustering[0]["train_dec_kl"], 4), round(clustering[-1]["train_dec_kl"], 4)] if clustering else None,
        "recon_end_of_pretraining": round(next(m for m in metrics if m["step"] == steps)["train_recon"], 3),
        "dec_term_share_first_epoch": round(cfg.model.gamma * int(np.prod(data.shape)) * clustering[0]["train_dec_kl"]
                                            / clustering[0]["train_loss"], 4) if clustering else None,
    })
    r = res["test"]
    print(f"{name} seed {cfg.train.seed}: test ACC kmeans(pretrained) {r['kmeans_pretrained']['acc']:.3f} -> DEC "
          f"{r['dec']['acc']:.3f} (NMI {r['kmeans_pretrained']['nmi']:.3f} -> {r['dec']['nmi']:.3f}); "
          f"{res['clustering_steps']} clustering steps, {res['stopped']}; {seconds:.0f} s", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sets", nargs="+", default=["digits", "fashion-mnist"])
    # 14,222 images: 1,422 validation, 12,800 training = 100 steps of 128, 2,844 test images.
    ap.add_argument("--fashion-limit", type=int, default=14222)
    ap.add_argument("--fashion-epochs", type=int, default=30)
    ap.add_argument("--set", dest="sets_", action="append", default=[], metavar="KEY=VALUE",
                    help="a dotted override for every run (e.g. model.gamma=0.0015625 to compare a weight)")
    ap.add_argument("--out", default="/tmp/lvmkit-bench/dec_vs_kmeans")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results: dict = {}
    configs: dict = {}
    for name in args.sets:
        if name == "fashion-mnist" and not FASHION.is_dir():
            print(f"skipping fashion-mnist: {FASHION} is not installed", flush=True)
            continue
        for seed in args.seeds:
            if name == "digits":
                cfg = lvmkit.make_config(apply_overrides(DIGITS, [f"train.seed={seed}", *args.sets_]))
            else:
                cfg = lvmkit.load_config(ROOT / "configs/dcec_fashion.toml",
                                         [*fashion_overrides(args.fashion_limit, args.fashion_epochs), f"train.seed={seed}",
                                          *args.sets_])
            configs[name] = cfg.to_dict()
            results.setdefault(name, {})[str(seed)] = one_run(name, cfg, Path(args.out) / f"{name}-{seed}-{time.time_ns()}")
    summary = {}
    for name, by_seed in results.items():
        runs = list(by_seed.values())
        summary[name] = {split: {f"{what}_{m}_mean": round(float(np.mean([r[split][what][m] for r in runs])), 4)
                                 for what in ("kmeans_pretrained", "dec", "kmeans_dec_codes") for m in ("acc", "nmi")}
                         for split in ("test", "train")}
        summary[name]["dec_beats_kmeans_pretrained_acc_and_nmi"] = [
            r["test"]["dec"]["acc"] > r["test"]["kmeans_pretrained"]["acc"]
            and r["test"]["dec"]["nmi"] > r["test"]["kmeans_pretrained"]["nmi"] for r in runs]
    obj = {"task": "DEC's own clusters vs K-means on its pretrained codes, k = 10 (issue 10, item 8)",
           "command": " ".join(sys.argv), "configs": configs, "summary": summary, "results": results,
           "machine": machine_info(), "wall_s": round(time.perf_counter() - t0, 1)}
    if args.json:
        write_json(args.json, obj)
    import json

    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
