"""Adjoint (seminorm backsolve) against backpropagation through the solver: time and peak
memory of one gradient as the horizon grows.

Protocol:
- problem: a batch of ``--batch`` (256) states of dimension 4 under a latent-ODE-sized vector
  field, lvmkit's MLPField 4-20-20-4 (ELU) set to a slowly damped rotation (period 2 pi) plus
  small random weights (see ``field``), so the solution oscillates and dopri5 needs steps in proportion to the
  horizon; every series is evaluated at 10 equally spaced times up to the horizon
  T = 10, 100, 1000 (``--horizons``), its own grid shifted by a per-series offset in [0, 0.1);
  loss = sum of squares of the solution; float32, rtol 1e-5, atol 1e-6, ``max_steps`` 100,000;
- measured per (gradient mode, horizon), each in a fresh subprocess so that the peak is its own:
  wall time of forward + backward (best of ``--reps``), the increase of the process's peak
  resident memory (ru_maxrss) over its value just before the first gradient, the number of
  vector-field evaluations forward and backward, and the relative difference of the
  parameter gradients from the direct ones.

Run (from the repository root; minutes on one core for T up to 1000):
    .venv/bin/python benchmarks/latent_ode_adjoint.py --json benchmarks/results/latent_ode_adjoint.json
    # short validation of the script (not a measurement):
    .venv/bin/python benchmarks/latent_ode_adjoint.py --horizons 10 30 --batch 32 --reps 1
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from _common import machine_info, write_json

DIM = 4


def field() -> nn.Module:
    """lvmkit's MLPField 4-20-20-4 (ELU) set to dy/dt ~ A y with A a slowly damped rotation of
    period 2 pi in two planes: large hidden biases keep the ELUs in their linear range near the
    solution, and small random weights on top make the field nonlinear."""
    from lvmkit.models.timeseries import MLPField

    g = torch.Generator().manual_seed(0)
    f = MLPField(DIM, [20, 20], "elu")
    A = torch.tensor([[-0.001, -1.0], [1.0, -0.001]]).kron(torch.eye(2))
    l1, l2, l3 = (m for m in f.net if isinstance(m, nn.Linear))
    with torch.no_grad():
        for layer in (l1, l2, l3):
            layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, generator=g))
        l1.weight[:DIM] += torch.eye(DIM)
        l1.bias.fill_(10.0)
        l2.weight += torch.eye(20)
        l2.bias.zero_()
        l3.weight[:, :DIM] += A
        l3.bias.copy_(-10.0 * A.sum(1))
    return f


def solver_for(mode: str):
    from lvmkit import ODESolver

    return ODESolver("dopri5", rtol=1e-5, atol=1e-6, max_steps=100_000, adjoint=(mode == "adjoint"))


def case(mode: str, horizon: float, batch: int, reps: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    f = field()
    warm = solver_for(mode)
    ys = warm.solve(f, torch.randn(2, DIM), torch.tensor([[0.1], [0.2]]), torch.zeros(2))
    (ys**2).sum().backward()  # first use of autograd and torch.func outside the peak
    y0 = torch.randn(batch, DIM)
    offset = torch.rand(batch) * 0.1
    t_eval = offset[:, None] + torch.linspace(horizon / 10, horizon, 10)[None, :]
    solver = solver_for(mode)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(reps):
        f.zero_grad()
        solver.reset_counts()
        t0 = time.perf_counter()
        ys = solver.solve(f, y0, t_eval, t_start=offset)
        (ys**2).sum().backward()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = torch.cat([p.grad.flatten() for p in f.parameters()])
    return {"mode": mode, "horizon": horizon, "batch": batch, "seconds": min(times), "peak_rss_increase_mb": (peak - before) / 1024,
            "nfe_forward": solver.counts.forward, "nfe_backward": solver.counts.backward, "grad": grad.tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--horizons", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--case", nargs=2, metavar=("MODE", "HORIZON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(case(args.case[0], float(args.case[1]), args.batch, args.reps)))
        return 0
    results = []
    for horizon in args.horizons:
        pair = {}
        for mode in ("direct", "adjoint"):
            out = subprocess.run([sys.executable, __file__, "--case", mode, str(horizon), "--batch", str(args.batch),
                                  "--reps", str(args.reps)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            pair[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        gd, ga = torch.tensor(pair["direct"].pop("grad")), torch.tensor(pair["adjoint"].pop("grad"))
        pair["adjoint"]["grad_rel_diff"] = float((ga - gd).norm() / gd.norm())
        for mode in ("direct", "adjoint"):
            r = pair[mode]
            print(f"T = {horizon:>6g}  {mode:>7}: {r['seconds']:8.3f} s, peak memory +{r['peak_rss_increase_mb']:8.1f} MB, "
                  f"nfe forward {r['nfe_forward']}, backward {r['nfe_backward']}"
                  + (f", gradient rel. diff {r['grad_rel_diff']:.2e}" if mode == "adjoint" else ""), flush=True)
            results.append(r)
    if args.json:
        write_json(args.json, {"protocol": "see benchmarks/latent_ode_adjoint.py docstring", "results": results,
                               "argv": sys.argv, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
