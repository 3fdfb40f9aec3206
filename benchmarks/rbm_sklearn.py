"""lvmkit's RBM against scikit-learn's BernoulliRBM on a CPU (issue 12).

Both trainers run the same algorithm when lvmkit is set to persistent CD-1 with plain SGD:
sklearn's ``BernoulliRBM._fit`` keeps persistent hidden samples, takes one Gibbs step, and moves
W, a, b by lr x (positive - negative statistics) / batch with p(h | x) on both sides, which is
exactly the gradient of lvmkit's free-energy surrogate F(x).mean() - F(x_neg).mean(). So lvmkit
runs with momentum 0, weight decay 0 and no gradient clipping (sklearn has none of them).

1. ``speed``: one epoch over the binarized Fashion-MNIST training images (threshold 0.5), 256
   hidden units, batch 100, learning rate 0.01; epoch wall time, ``--rounds`` rounds with the two
   trainers taking turns (order alternating), medians. sklearn gets float32 input (it keeps
   float32; float64 input costs it more, measured once as well).
2. ``likelihood``: 500 hidden units, one epoch (or ``--cd25-limit`` images for CD-25) each of
   lvmkit CD-1, CD-25, PCD-1 and sklearn's BernoulliRBM, all at learning rate ``--ll-lr``; test
   log-likelihood (nats per example, mean over the first ``--test`` binarized test images) by
   lvmkit's AIS (``ais_log_z``, ``--ais-runs`` runs, ``--ais-temperatures`` temperatures, base
   model = log-odds of the training pixels' means as lvmkit's RBM sets it), with the bounds from
   log Z's +- 3 sigma bounds. sklearn's weights are loaded into an lvmkit ``RBMEnergy``
   (W = components_.T, a = intercept_visible_, b = intercept_hidden_).
3. ``digits``: scikit-learn's example "Restricted Boltzmann Machine features for digit
   classification" (BernoulliRBM(n_components=100, learning_rate=0.06, n_iter=10, batch 10,
   random_state=0) + LogisticRegression(C=6000); digits scaled to [0, 1], nudged by 1-pixel
   shifts, 80/20 split, random_state=0), the same pipeline with lvmkit's RBM (100 hidden, PCD-1,
   SGD 0.06, batch 10, 10 epochs; its binary units train on fresh Bernoulli draws of the grey
   levels each epoch, i.e. dynamic binarization; features p(h | x) of the grey levels, as
   sklearn's transform), and LogisticRegression(C=100) on raw pixels (the example's baseline).

    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/rbm_sklearn.py --json benchmarks/results/rbm_sklearn.json
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lvmkit
from lvmkit.core.optim import Optimizers
from lvmkit.data import read_idx
from lvmkit.models.energy.boltzmann import RBMEnergy, ais_log_z

from _common import REPO, _version, machine_info, write_json

FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion(threshold: float = 0.5):
    xtr = read_idx(FASHION / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    xte = read_idx(FASHION / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    return (xtr > threshold).astype(np.float32), (xte > threshold).astype(np.float32)


# -- lvmkit --------------------------------------------------------------------------------------
def lvmkit_rbm(n_visible: int, hidden: int, cd_steps: int, persistent: bool, lr: float, batch: int, seed: int):
    cfg = lvmkit.make_config({"model": {"kind": "rbm", "hidden": hidden, "cd_steps": cd_steps, "persistent": persistent},
                              "train": {"batch_size": batch, "lr": lr, "momentum": 0.0, "weight_decay": 0.0,
                                        "grad_clip": 0.0, "device": "cpu", "seed": seed}})
    torch.manual_seed(seed)
    model = lvmkit.build_model(cfg.model, (n_visible,))
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    return model, opt


def lvmkit_epochs(model, opt, x: torch.Tensor, batch: int, epochs: int, seed: int, dynamic: bool = False) -> float:
    """Plain loop over model.training_step (shuffled mini-batches); returns wall seconds."""
    g = torch.Generator().manual_seed(seed)
    step = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        xe = (torch.rand(x.shape, generator=g) < x).float() if dynamic else x
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            model.training_step(xe[perm[i : i + batch]], step, opt)
            step += 1
    return time.perf_counter() - t0


def sklearn_rbm(hidden: int, lr: float, batch: int, n_iter: int, seed: int):
    from sklearn.neural_network import BernoulliRBM

    return BernoulliRBM(n_components=hidden, learning_rate=lr, batch_size=batch, n_iter=n_iter, random_state=seed)


def timed_fit(rbm, x) -> float:
    t0 = time.perf_counter()
    rbm.fit(x)
    return time.perf_counter() - t0


def energy_from_sklearn(rbm) -> RBMEnergy:
    layer = RBMEnergy(rbm.components_.shape[1], rbm.n_components)
    with torch.no_grad():
        layer.W.copy_(torch.as_tensor(rbm.components_.T, dtype=torch.float32))
        layer.a.copy_(torch.as_tensor(rbm.intercept_visible_, dtype=torch.float32))
        layer.b.copy_(torch.as_tensor(rbm.intercept_hidden_, dtype=torch.float32))
    return layer


# -- 1. speed --------------------------------------------------------------------------------------
def bench_speed(args, xtr: np.ndarray) -> dict:
    x = torch.from_numpy(xtr)
    times = {"lvmkit_pcd1": [], "sklearn_float32": []}
    for r in range(args.rounds):
        order = ["lvmkit", "sklearn"] if r % 2 == 0 else ["sklearn", "lvmkit"]
        for who in order:
            if who == "lvmkit":
                model, opt = lvmkit_rbm(784, 256, 1, True, 0.01, 100, seed=r)
                dt = lvmkit_epochs(model, opt, x, 100, 1, seed=r)
                times["lvmkit_pcd1"].append(dt)
            else:
                dt = timed_fit(sklearn_rbm(256, 0.01, 100, 1, seed=r), xtr)
                times["sklearn_float32"].append(dt)
            print(f"speed round {r} {who}: {dt:.2f} s/epoch", flush=True)
    t64 = timed_fit(sklearn_rbm(256, 0.01, 100, 1, seed=0), xtr.astype(np.float64))
    print(f"speed sklearn float64 input (once): {t64:.2f} s/epoch", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"hidden": 256, "batch": 100, "lr": 0.01, "n_train": len(xtr), "epoch_seconds": times,
            "median_epoch_seconds": med, "sklearn_float64_epoch_seconds_once": t64,
            "speedup_lvmkit_over_sklearn_float32": med["sklearn_float32"] / med["lvmkit_pcd1"],
            "speedup_lvmkit_over_sklearn_float64": t64 / med["lvmkit_pcd1"]}


# -- 2. likelihood ---------------------------------------------------------------------------------
def base_visible(xtr: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(xtr).double().mean(0)
    return torch.log((m + 1e-3) / (1 - m + 1e-3)).float()  # as lvmkit's RBM._set_base


def score(layer: RBMEnergy, base: torch.Tensor, xte: torch.Tensor, args, seed: int) -> dict:
    with torch.no_grad():
        neg_f = float((-layer.double().free_energy(xte.double())).mean())
        layer.float()
    r = ais_log_z(layer, base, args.ais_runs, args.ais_temperatures, torch.Generator().manual_seed(seed))
    return {"mean_neg_free_energy": neg_f, "log_z": r.log_z, "log_z_lower": r.lower, "log_z_upper": r.upper,
            "log_likelihood": neg_f - r.log_z, "log_likelihood_lower": neg_f - r.upper,
            "log_likelihood_upper": neg_f - r.lower, "ais_seconds": r.seconds}


def bench_likelihood(args, xtr: np.ndarray, xte_np: np.ndarray) -> dict:
    x = torch.from_numpy(xtr)
    xte = torch.from_numpy(xte_np[: args.test])
    base = base_visible(xtr)
    lr, out = args.ll_lr, {}
    specs = [("lvmkit CD-1", 1, False, len(x)), ("lvmkit PCD-1", 1, True, len(x)),
             ("lvmkit CD-25", 25, False, min(args.cd25_limit, len(x)))]
    wanted = args.ll_models.split(",") if args.ll_models else [s[0] for s in specs] + ["sklearn"]
    for name, k, pers, n in specs:
        if name not in wanted:
            continue
        model, opt = lvmkit_rbm(784, 500, k, pers, lr, 100, seed=args.seed)
        dt = lvmkit_epochs(model, opt, x[:n], 100, 1, seed=args.seed)
        print(f"likelihood: trained {name} on {n} images in {dt:.1f} s", flush=True)
        out[name] = {"train_images": n, "train_seconds": dt, **score(model.layer, base, xte, args, seed=1)}
        print(f"  {name}: {out[name]['log_likelihood']:.2f} nats ({out[name]['ais_seconds']:.0f} s AIS)", flush=True)
    if "sklearn" not in wanted:
        return {"hidden": 500, "batch": 100, "lr": lr, "epochs": 1, "test_images": len(xte), "ais_runs": args.ais_runs,
                "ais_temperatures": args.ais_temperatures, "models": out}
    rbm = sklearn_rbm(500, lr, 100, 1, seed=0)
    dt = timed_fit(rbm, xtr)
    print(f"likelihood: trained sklearn BernoulliRBM in {dt:.1f} s", flush=True)
    out["sklearn BernoulliRBM (PCD-1)"] = {"train_images": len(xtr), "train_seconds": dt,
                                          **score(energy_from_sklearn(rbm), base, xte, args, seed=1)}
    print(f"  sklearn: {out['sklearn BernoulliRBM (PCD-1)']['log_likelihood']:.2f} nats", flush=True)
    return {"hidden": 500, "batch": 100, "lr": lr, "epochs": 1, "test_images": len(xte), "ais_runs": args.ais_runs,
            "ais_temperatures": args.ais_temperatures, "base": "log-odds of the training pixels' means (+1e-3)",
            "models": out}


# -- 3. digits features ----------------------------------------------------------------------------
def nudge_dataset(X, Y):
    """sklearn's example: the 8x8 images shifted by 1 pixel left, right, down and up."""
    from scipy.ndimage import convolve

    directions = [[[0, 1, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
                  [[0, 0, 0], [0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 1, 0]]]

    def shift(x, w):
        return convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()

    X = np.concatenate([X] + [np.apply_along_axis(shift, 1, X, vector) for vector in directions])
    Y = np.concatenate([Y for _ in range(5)], axis=0)
    return X, Y


def bench_digits(args) -> dict:
    from sklearn import datasets, linear_model
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import BernoulliRBM
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import minmax_scale

    X, Y = datasets.load_digits(return_X_y=True)
    X = np.asarray(X, "float32")
    X, Y = nudge_dataset(X, Y)
    X = minmax_scale(X, feature_range=(0, 1))
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.2, random_state=0)
    logistic = linear_model.LogisticRegression(max_iter=10000)
    rbm = BernoulliRBM(random_state=0, n_components=100, learning_rate=0.06, n_iter=10)
    logistic.C = 6000
    res = {}

    def report(name, pred, seconds):
        res[name] = {"accuracy": accuracy_score(Y_test, pred), "macro_f1": f1_score(Y_test, pred, average="macro"),
                     "seconds": seconds}
        print(f"digits {name}: acc {res[name]['accuracy']:.4f} macro F1 {res[name]['macro_f1']:.4f} ({seconds:.1f} s)",
              flush=True)

    t0 = time.perf_counter()
    pipe = Pipeline(steps=[("rbm", rbm), ("logistic", clone(logistic))]).fit(X_train, Y_train)
    report("sklearn BernoulliRBM + logistic (C=6000)", pipe.predict(X_test), time.perf_counter() - t0)

    t0 = time.perf_counter()
    model, opt = lvmkit_rbm(64, 100, 1, True, 0.06, 10, seed=0)
    lvmkit_epochs(model, opt, torch.as_tensor(X_train, dtype=torch.float32), 10, 10, seed=0, dynamic=True)
    feats = lambda a: model.embed(torch.as_tensor(a, dtype=torch.float32)).numpy()  # noqa: E731
    clf = clone(logistic).fit(feats(X_train), Y_train)
    report("lvmkit RBM (PCD-1, dynamic binarization) + logistic (C=6000)", clf.predict(feats(X_test)),
           time.perf_counter() - t0)

    t0 = time.perf_counter()
    raw = clone(logistic)
    raw.C = 100.0
    raw.fit(X_train, Y_train)
    report("raw pixels + logistic (C=100)", raw.predict(X_test), time.perf_counter() - t0)
    return {"n_train": len(X_train), "n_test": len(X_test), "results": res}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="speed,likelihood,digits")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="training images (default: all 60,000)")
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--ll-lr", type=float, default=0.05)
    p.add_argument("--cd25-limit", type=int, default=60000)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-temperatures", type=int, default=2000)
    p.add_argument("--ll-models", default=None, help="comma-separated likelihood rows, e.g. 'lvmkit PCD-1,sklearn' "
                   "(default: all)")
    p.add_argument("--seed", type=int, default=0, help="training seed of the likelihood rows")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    xtr, xte = fashion()
    if args.limit:
        xtr = xtr[: args.limit]
    result = {"machine": {**machine_info(), "scikit-learn": _version("scikit-learn"), "scipy": _version("scipy"),
                          "note": "2 shared cores, other jobs running (load 3-4); one thread everywhere"},
              "command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]),
              "binarization": "Fashion-MNIST pixels / 255 > 0.5 (static)"}
    if "digits" in parts:
        result["digits"] = bench_digits(args)
    if "speed" in parts:
        result["speed"] = bench_speed(args, xtr)
        print({k: v for k, v in result["speed"].items() if "median" in k or "speedup" in k}, flush=True)
    if "likelihood" in parts:
        result["likelihood"] = bench_likelihood(args, xtr, xte)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
