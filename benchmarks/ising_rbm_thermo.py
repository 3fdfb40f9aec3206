"""RBM thermodynamics of the 2-D Ising model (Torlai & Melko, PRB 94, 165134, 2016; issue 24).

1. ``lvmkit.data.ising.simulate``: ``--n`` configurations of the L x L lattice at each of
   ``--temperatures`` (kept in ``--work``: a rerun reads the finished temperatures).
2. ``lvmkit.analysis.ising_thermo`` with ``configs/ising_rbm_L8.toml`` (n_hidden = n_visible,
   PCD-10; ``--set`` overrides it): one RBM per temperature, then ``--chains`` Gibbs chains of
   ``--steps`` steps, ``--keep`` states each, the first quarter dropped; E, |M|, C and chi of the
   samples by the simulator's estimator, with errors.
3. The goals: E and |M| within 2% of the simulator's at every T; C and chi within 10% away
   from T_c (|T - T_c| > 0.15 T_c, where the simulator switches to Wolff).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ising_rbm_thermo.py --json benchmarks/results/ising_rbm_thermo_L8.json
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
from lvmkit.analysis.ising import format_thermo, ising_thermo
from lvmkit.data import ising


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--temperatures", default="1.0:3.5:10", help="START:STOP:COUNT or comma-separated")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--config", default=str(REPO / "configs" / "ising_rbm_L8.toml"))
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--chains", type=int, default=500)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--keep", type=int, default=200)
    p.add_argument("--work", default="/tmp/lvmkit-ising-bench")
    p.add_argument("--json", default="benchmarks/results/ising_rbm_thermo_L8.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.temperatures.count(":") == 2:
        lo, hi, k = a.temperatures.split(":")
        temps = [float(lo) + i * (float(hi) - float(lo)) / (int(k) - 1) for i in range(int(k))]
    else:
        temps = [float(v) for v in a.temperatures.split(",")]
    work = Path(a.work) / f"L{a.size}_n{a.n}"
    t0 = time.perf_counter()
    data = ising.simulate(a.size, temps, a.n, work / "sim", seed=0, progress=True)
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tag = "_".join(s.replace("=", "-").replace(".", "") for s in a.sets) or "default"
    res = ising_thermo(data, work / f"thermo_{tag}", a.config, overrides=a.sets, chains=a.chains, steps=a.steps,
                       keep=a.keep, progress=True)
    thermo_s = time.perf_counter() - t0
    for line in format_thermo(res):
        print(line)
    goals = []
    for r in res["rows"]:
        away = abs(r["temperature"] - ising.T_C) > 0.15 * ising.T_C
        d = r["relative_difference"]
        goals.append({"temperature": r["temperature"], "away_from_t_c": away,
                      "energy_within_2pct": abs(d["energy"]) < 0.02,
                      "abs_magnetization_within_2pct": abs(d["abs_magnetization"]) < 0.02,
                      "specific_heat_within_10pct": (abs(d["specific_heat"]) < 0.10) if away else None,
                      "susceptibility_within_10pct": (abs(d["susceptibility"]) < 0.10) if away else None})
    summary = {k: sum(1 for g in goals if g[k]) for k in ("energy_within_2pct", "abs_magnetization_within_2pct",
                                                           "specific_heat_within_10pct", "susceptibility_within_10pct")}
    summary["temperatures"] = len(goals)
    summary["away_from_t_c"] = sum(1 for g in goals if g["away_from_t_c"])
    print("goals met (of", len(goals), "T; C and chi of", summary["away_from_t_c"], "away from T_c):", summary)
    res.update(goals=goals, goal_summary=summary, n=a.n, overrides=a.sets, simulate_seconds=sim_s, thermo_seconds=thermo_s,
               machine=machine_info())
    write_json(a.json, res)


if __name__ == "__main__":
    main()
