"""Integrated autocorrelation times at T_c, Wolff against Metropolis (issue 24).

Per lattice size: chains equilibrated by Wolff steps from an ordered start, then series of E
and |M| from ``--chains`` chains of checkerboard Metropolis (``--metropolis-sweeps`` sweeps) and
of Wolff (``--wolff-steps`` cluster flips), tau_int by Sokal's window
(``lvmkit.core.statistics.autocorrelation_time``), in sweeps (a Wolff step counts as its mean
cluster size / L^2). Critical slowing down: tau ~ L^z with z ~ 2.17 (Metropolis) and z ~ 0.25
(Wolff, in sweeps; Wolff 1989, Coddington & Baillie 1992).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ising_autocorrelation.py --json benchmarks/results/ising_autocorrelation.json
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import time

import numpy as np
import torch

from _common import machine_info, write_json
from lvmkit.core.statistics import autocorrelation_time
from lvmkit.data import ising


def series(rule: ising.Update, spins: torch.Tensor, steps: int, t: float, g: torch.Generator):
    es, ms = [], []
    for _ in range(steps):
        spins = rule.step(spins, 1.0 / t, 0.0, g)
        e, m = ising.energy_magnetization(spins)
        es.append(e)
        ms.append(m.abs())
    return spins, torch.stack(es, 1).double().numpy(), torch.stack(ms, 1).double().numpy()


def measure(name: str, rule, spins, steps, t, g) -> dict:
    t0 = time.perf_counter()
    flipped0 = getattr(rule, "_flipped", 0.0)
    steps0 = getattr(rule, "_steps", 0.0)
    _, e, m = series(rule, spins, steps, t, g)
    n = spins.shape[-1] ** 2
    per_step = 1.0 if name == "metropolis" else (rule._flipped - flipped0) / ((rule._steps - steps0) * n)
    te, tm = autocorrelation_time(e), autocorrelation_time(m)
    return {"steps": steps, "chains": spins.shape[0], "sweeps_per_step": per_step,
            "tau_energy_steps": te.tau, "tau_energy_error_steps": te.error, "tau_abs_m_steps": tm.tau,
            "tau_abs_m_error_steps": tm.error, "converged": bool(te.converged and tm.converged),
            "tau_energy_sweeps": te.tau * per_step, "tau_energy_error_sweeps": te.error * per_step,
            "tau_abs_m_sweeps": tm.tau * per_step, "tau_abs_m_error_sweeps": tm.error * per_step,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,32")
    p.add_argument("--chains", type=int, default=64)
    p.add_argument("--metropolis-sweeps", default="4000,16000", help="per size")
    p.add_argument("--wolff-steps", default="2000,2000", help="per size")
    p.add_argument("--json", default="benchmarks/results/ising_autocorrelation.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    t = ising.T_C
    rows = []
    for size, sweeps, wsteps in zip(*[[int(v) for v in s.split(",")] for s in (a.sizes, a.metropolis_sweeps, a.wolff_steps)]):
        g = torch.Generator().manual_seed(size)
        warm = ising.Wolff(size)
        spins = torch.ones(a.chains, size, size)
        for _ in range(300):
            spins = warm.step(spins, 1.0 / t, 0.0, g)
        row = {"size": size, "metropolis": measure("metropolis", ising.Metropolis(size), spins.clone(), sweeps, t, g),
               "wolff": measure("wolff", ising.Wolff(size), spins.clone(), wsteps, t, g)}
        mt, wt = row["metropolis"], row["wolff"]
        row["ratio_abs_m"] = mt["tau_abs_m_sweeps"] / wt["tau_abs_m_sweeps"]
        row["ratio_energy"] = mt["tau_energy_sweeps"] / wt["tau_energy_sweeps"]
        rows.append(row)
        print(f"L = {size}: tau_int |M| Metropolis {mt['tau_abs_m_sweeps']:.4g} +- {mt['tau_abs_m_error_sweeps']:.2g} sweeps, "
              f"Wolff {wt['tau_abs_m_sweeps']:.3g} +- {wt['tau_abs_m_error_sweeps']:.2g} sweeps ({wt['tau_abs_m_steps']:.3g} clusters of "
              f"{wt['sweeps_per_step']:.3f} N); E {mt['tau_energy_sweeps']:.4g} vs {wt['tau_energy_sweeps']:.3g} sweeps; "
              f"converged {mt['converged']}/{wt['converged']} [{mt['seconds'] + wt['seconds']:.0f} s]", flush=True)
    out = {"temperature": t, "chains": a.chains, "rows": rows, "machine": machine_info()}
    if len(rows) >= 2:  # dynamic exponents from the two largest sizes
        r0, r1 = rows[-2], rows[-1]
        for name in ("metropolis", "wolff"):
            out[f"z_{name}_abs_m"] = float(np.log(r1[name]["tau_abs_m_sweeps"] / r0[name]["tau_abs_m_sweeps"]) /
                                           np.log(r1["size"] / r0["size"]))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
