"""Ising simulator speed, L = 32 at T_c (issue 24): lattice sweeps per second of lvmkit's
checkerboard Metropolis over 1,000 chains and of its Wolff cluster updates over 1,000 chains,
against a plain NumPy single-chain Metropolis loop (typewriter order, one site at a time, the
acceptance exp(-beta dE) looked up in a table), all in one process on one thread. A Wolff step
counts as (flipped sites) / L^2 sweeps, measured after equilibration from an ordered start.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ising_speed.py --json benchmarks/results/ising_speed.json
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import math
import time

import numpy as np
import torch

from _common import machine_info, write_json
from lvmkit.data import ising


def numpy_metropolis(size: int, temperature: float, sweeps: int, seed: int = 0) -> tuple[float, np.ndarray]:
    """A plain single-chain Metropolis loop: sweeps per second and the final lattice."""
    rng = np.random.default_rng(seed)
    s = rng.choice(np.array([-1, 1], dtype=np.int64), (size, size))
    accept = {d: math.exp(-d / temperature) for d in (4, 8)}  # dE in {-8, -4, 0, 4, 8}
    t0 = time.perf_counter()
    for _ in range(sweeps):
        u = rng.random((size, size))
        for i in range(size):
            for j in range(size):
                d_e = 2 * s[i, j] * (s[(i + 1) % size, j] + s[i - 1, j] + s[i, (j + 1) % size] + s[i, j - 1])
                if d_e <= 0 or u[i, j] < accept[d_e]:
                    s[i, j] = -s[i, j]
    return sweeps / (time.perf_counter() - t0), s


def torch_rate(rule: ising.Update, spins: torch.Tensor, t: float, steps: int, warm: int, g: torch.Generator) -> dict:
    beta = 1.0 / t
    for _ in range(warm):
        spins = rule.step(spins, beta, 0.0, g)
    flipped_before = getattr(rule, "_flipped", None)
    t0 = time.perf_counter()
    for _ in range(steps):
        spins = rule.step(spins, beta, 0.0, g)
    dt = time.perf_counter() - t0
    chains, n = spins.shape[0], spins.shape[-1] ** 2
    if flipped_before is None:  # Metropolis: one sweep per step
        sweeps = steps
    else:
        sweeps = (rule._flipped - flipped_before) / (chains * n)  # per chain
    return {"chains": chains, "steps": steps, "seconds": dt, "sweeps_per_chain": sweeps,
            "sweeps_per_second": chains * sweeps / dt, "steps_per_second_per_chain": steps / dt,
            "mean_cluster_fraction": sweeps / steps if flipped_before is not None else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--chains", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--numpy-sweeps", type=int, default=20)
    p.add_argument("--json", default="benchmarks/results/ising_speed.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    t = ising.T_C
    g = torch.Generator().manual_seed(0)
    random = 2.0 * torch.randint(0, 2, (a.chains, a.size, a.size), generator=g).float() - 1.0
    metro = torch_rate(ising.Metropolis(a.size), random, t, a.steps, 10, g)
    ordered = torch.ones(a.chains, a.size, a.size)
    wolff = torch_rate(ising.Wolff(a.size), ordered, t, a.steps, 200, g)
    np_rate, _ = numpy_metropolis(a.size, t, a.numpy_sweeps)
    res = {"size": a.size, "temperature": t, "metropolis_checkerboard": metro, "wolff": wolff,
           "numpy_single_chain_metropolis": {"sweeps": a.numpy_sweeps, "sweeps_per_second": np_rate},
           "ratio_metropolis_to_numpy": metro["sweeps_per_second"] / np_rate,
           "ratio_wolff_to_numpy": wolff["sweeps_per_second"] / np_rate, "machine": machine_info()}
    print(f"L = {a.size} at T_c: checkerboard Metropolis x {a.chains} chains {metro['sweeps_per_second']:.4g} sweeps/s; "
          f"Wolff x {a.chains} chains {wolff['sweeps_per_second']:.4g} sweeps/s (cluster {wolff['mean_cluster_fraction']:.3f} N); "
          f"NumPy loop {np_rate:.4g} sweeps/s; ratios {res['ratio_metropolis_to_numpy']:.0f}x, {res['ratio_wolff_to_numpy']:.0f}x")
    write_json(a.json, res)


if __name__ == "__main__":
    main()
