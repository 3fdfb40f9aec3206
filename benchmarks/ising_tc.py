"""T_c of the 2-D Ising model from what models learn, per lattice size (issue 24).

1. ``lvmkit.data.ising.simulate`` per size: ``--n`` configurations at each of ``--temperatures``
   (denser near T_c; kept in ``--work``).
2. ``lvmkit.analysis.ising_transition``: unsupervised, the peak of the leading latent's
   susceptibility N (<z^2> - <|z|>^2) / T for PCA (Wetzel 2017) and for the VAE of
   ``configs/ising_vae_L32.toml`` (its codes' first principal component); supervised, the 0.5
   crossing of a logistic probe trained on T < 2.0 and T > 2.5 (Carrasquilla & Melko 2017);
   bootstrap errors over configurations; the fit T_c(L) = T_c + a / L (nu = 1) per estimator.
3. The goal: the extrapolated T_c within 1% of Onsager's 2 / ln(1 + sqrt 2) = 2.2692.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ising_tc.py --json benchmarks/results/ising_tc.json
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import time
from pathlib import Path

import torch

from _common import REPO, machine_info, write_json
from lvmkit.analysis.ising import ising_transition
from lvmkit.data import ising

TEMPS = "1.6,1.8,1.95,2.1,2.15,2.2,2.25,2.3,2.35,2.4,2.45,2.55,2.7,2.85,3.0"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,32")
    p.add_argument("--temperatures", default=TEMPS)
    p.add_argument("--n", default="500", help="configurations per temperature: one number, or one per size")
    p.add_argument("--vae-config", default=str(REPO / "configs" / "ising_vae_L32.toml"))
    p.add_argument("--no-vae", action="store_true")
    p.add_argument("--set", dest="sets", action="append", default=[], help="override of the VAE config")
    p.add_argument("--bootstrap", type=int, default=20)
    p.add_argument("--production", type=int, default=None,
                   help="production steps per chain (default: the simulator's, at least 100 tau); 1: just the kept configurations")
    p.add_argument("--work", default="/tmp/lvmkit-ising-bench")
    p.add_argument("--json", default="benchmarks/results/ising_tc.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    temps = [float(v) for v in a.temperatures.split(",")]
    files, sim_s = [], {}
    sizes = [int(s) for s in a.sizes.split(",")]
    ns = [int(v) for v in a.n.split(",")] if "," in a.n else [int(a.n)] * len(sizes)
    for size, n in zip(sizes, ns):
        t0 = time.perf_counter()
        files.append(ising.simulate(size, temps, n, Path(a.work) / f"tc_L{size}_n{n}", seed=0, progress=True,
                                    **({"production": a.production} if a.production else {})))
        sim_s[size] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ising_transition(files, Path(a.work) / f"tc_{a.sizes.replace(',', '_')}_n{a.n.replace(',', '_')}",
                           vae_config=None if a.no_vae else a.vae_config, vae_overrides=a.sets, bootstrap=a.bootstrap)
    res.update(n=dict(zip(sizes, ns)), production=a.production, temperatures=temps, simulate_seconds=sim_s, analysis_seconds=time.perf_counter() - t0,
               machine=machine_info())
    for name, fit in res["extrapolation"].items():
        fit["within_1pct"] = abs(fit["relative_to_onsager"]) < 0.01
        print(f"{name}: T_c = {fit['t_c']:.4f} +- {fit['t_c_error']:.2g}, a = {fit['a']:.3g} "
              f"({100 * fit['relative_to_onsager']:+.2f}% from Onsager) {'ok' if fit['within_1pct'] else 'NOT REACHED'}")
    write_json(a.json, res)


if __name__ == "__main__":
    main()
