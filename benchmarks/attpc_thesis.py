"""The thesis experiment on simulated AT-TPC events (issue 4), end to end with lvmkit's API.

1. Simulate proton (46Ar(p,p)) and carbon (46Ar + 12C elastic) events, and noise-dominated
   "other" events, with attpc-engine (events per second per reaction).
2. Convert them to 128 x 128 x-y projections (events per second): a two-class set (proton,
   carbon) and a three-class set (with other).
3. Train the convolutional autoencoder of configs/attpc_convae_<reg>.toml on each set and
   evaluate its codes with the thesis protocol: logistic-regression probes with few labelled
   events per class (f1 per class, mean over 5 draws), and K-means with k = number of classes
   (ACC, ARI, purity of the proton cluster = share of protons in the cluster most protons
   fall in).

    python benchmarks/attpc_thesis.py --n 1500 --n-other 1000 --json benchmarks/results/attpc_thesis.json
    # the representation of BENCHMARKS.md's best rows: azimuth-aligned, linear charge
    python benchmarks/attpc_thesis.py --align azimuth --intensity linear --json ...
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import lvmkit
from lvmkit import attpc

ROOT = Path(__file__).resolve().parents[1]


def _proton_purity(run, k: int) -> dict:
    res = lvmkit.cluster(run, k, "kmeans", baselines=False)["results"]["latent"]
    conf = np.array(res["confusion"])  # classes x clusters
    proton_cluster = int(conf[0].argmax())
    return {"acc": res["acc"], "ari": res["ari"], "nmi": res["nmi"],
            "proton_cluster_purity": float(conf[0, proton_cluster] / conf[:, proton_cluster].sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500, help="proton and carbon events each")
    ap.add_argument("--n-other", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/lvmkit-attpc")
    ap.add_argument("--regularizers", default="mmd", help="conv AE configs attpc_convae_<reg>.toml to train")
    ap.add_argument("--configs", default="", help="more configs to train on the same events, e.g. attpc_draw "
                    "(configs/NAME.toml; the result key is NAME/SET)")
    ap.add_argument("--projection", default="xy", help="planes of the images, e.g. xy or xy,xz,yz")
    ap.add_argument("--align", default="none", choices=["none", "azimuth"])
    ap.add_argument("--intensity", default="log1p", choices=["log1p", "linear"])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    sim = out / "sim"
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                                "threads": torch.get_num_threads()},
                    "representation": {"projection": args.projection, "align": args.align, "intensity": args.intensity},
                    "simulation": {}, "conversion": {}, "models": {}}
    files = {}
    for reaction, n in (("proton", args.n), ("carbon", args.n), ("other", args.n_other)):
        t0 = time.perf_counter()
        files[reaction] = attpc.simulate(reaction, n, sim, seed=1, overwrite=True)
        dt = time.perf_counter() - t0
        result["simulation"][reaction] = {"events": n, "seconds": dt, "events_per_second": n / dt}
        print(reaction, result["simulation"][reaction], flush=True)
    sets = {"two-class": [files["proton"], files["carbon"]], "three-class": list(files.values())}
    for name, inputs in sets.items():
        stats = attpc.convert(inputs, out / f"{name}.h5", args.projection, align=args.align, intensity=args.intensity)
        result["conversion"][name] = {k: stats[k] for k in ("events", "per_class", "skipped", "seconds", "events_per_second")}
        print(name, result["conversion"][name], flush=True)
    models = {reg: f"attpc_convae_{reg}" for reg in args.regularizers.split(",") if reg}
    models.update({c: c for c in args.configs.split(",") if c})
    for reg, config in models.items():
        for name in sets:
            cfg = lvmkit.load_config(ROOT / f"configs/{config}.toml",
                                     [f"data.path={out / f'{name}.h5'}", *args.sets])
            t0 = time.perf_counter()
            run = lvmkit.train(cfg, out / f"run-{reg}-{name}-{int(time.time())}")
            train_s = time.perf_counter() - t0
            probe = lvmkit.probe(run, [10, 100], 5)["results"]["latent"]
            k = 2 if name == "two-class" else 3
            entry = {"config": f"configs/{config}.toml", "run": str(run.path), "train_seconds": train_s, "epochs": run.read_metrics()[-1]["epoch"],
                     "probe_f1_per_class": {n_: probe[n_]["f1"] for n_ in probe},
                     "probe_macro_f1": {n_: probe[n_]["macro_f1"] for n_ in probe},
                     "clustering": _proton_purity(run, k)}
            result["models"][f"{reg}/{name}"] = entry
            print(reg, name, json.dumps(entry), flush=True)
            lvmkit.write_report(run)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
