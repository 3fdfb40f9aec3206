"""The simulator against Onsager's infinite lattice, L = 64 away from T_c (issue 24).

At each temperature, ``lvmkit.data.ising.simulate_temperature`` (update "auto": Wolff within
15% of T_c, Metropolis elsewhere; burn-in from the measured autocorrelation time) gives the
energy per spin with its blocking error; the goal is |e - u_Onsager| < 3 sigma + 1e-3, with

    u(T) = -coth(2 beta) [1 + (2 / pi) (2 tanh^2(2 beta) - 1) K(k)],  k = 2 sinh(2 beta) / cosh^2(2 beta)

(Onsager 1944; K the complete elliptic integral of the first kind, scipy's ellipk(k^2)), and
below T_c the spontaneous magnetization m = (1 - sinh(2 beta)^-4)^(1/8) (Yang 1952) beside
<|m|> (finite-size corrections at L = 64 are exponentially small away from T_c).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ising_onsager.py --json benchmarks/results/ising_onsager.json
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import math
import time

import torch
from scipy.special import ellipk

from _common import machine_info, write_json
from lvmkit.data import ising


def onsager_energy(t: float) -> float:
    b = 1.0 / t
    k = 2.0 * math.sinh(2 * b) / math.cosh(2 * b) ** 2
    return -1.0 / math.tanh(2 * b) * (1.0 + 2.0 / math.pi * (2.0 * math.tanh(2 * b) ** 2 - 1.0) * float(ellipk(k * k)))


def yang_magnetization(t: float) -> float:
    return (1.0 - math.sinh(2.0 / t) ** -4) ** 0.125 if t < ising.T_C else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--temperatures", default="1.5,2.0,2.6,3.0,3.5")
    p.add_argument("--chains", type=int, default=50)
    p.add_argument("--production", type=int, default=2000, help="production steps per chain")
    p.add_argument("--json", default="benchmarks/results/ising_onsager.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for t in [float(v) for v in a.temperatures.split(",")]:
        t0 = time.perf_counter()
        r = ising.simulate_temperature(a.size, t, a.chains, chains=a.chains, production=a.production, seed=0)
        o = r.observables
        u = onsager_energy(t)
        diff = o["energy"] - u
        row = {"temperature": t, "update": r.update, "energy": o["energy"], "energy_error": o["energy_error"],
               "onsager": u, "difference": diff, "z": diff / o["energy_error"],
               "within_goal": abs(diff) < 3 * o["energy_error"] + 1e-3, "abs_magnetization": o["abs_magnetization"],
               "abs_magnetization_error": o["abs_magnetization_error"], "yang": yang_magnetization(t),
               "burn_in": r.burn_in, "production": r.production, "tau_energy_sweeps": r.tau_energy * r.sweeps_per_step,
               "tau_abs_magnetization_sweeps": r.tau_abs_magnetization * r.sweeps_per_step, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"T = {t}: ({r.update}) e = {o['energy']:.5f} +- {o['energy_error']:.1e}, Onsager {u:.5f}, diff {diff:+.1e} "
              f"({row['z']:+.1f} sigma) {'ok' if row['within_goal'] else 'MISSED'}; |m| {o['abs_magnetization']:.4f} "
              f"(Yang {row['yang']:.4f}) [{row['seconds']:.0f} s]", flush=True)
    write_json(a.json, {"size": a.size, "chains": a.chains, "production": a.production, "rows": rows,
                        "all_within_goal": all(r["within_goal"] for r in rows), "machine": machine_info()})


if __name__ == "__main__":
    main()
