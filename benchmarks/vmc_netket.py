"""Issue 25: the same RBM (alpha = 2, real parameters), sampler and optimiser in NetKet, on the
periodic TFIM (h = 1) and Heisenberg chains of L = 20, for the side-by-side with
benchmarks/vmc_spins.py: final relative error and wall time to 1e-3 relative error.

NetKet is a comparison target, never a dependency: it lives in its own environment,

    python3 -m venv .venv-netket && .venv-netket/bin/pip install netket      # jax on the CPU
    taskset -c 0 .venv-netket/bin/python benchmarks/vmc_netket.py [--cases tfim,heisenberg] [--time-limit 480]

Settings matched to configs/vmc_{tfim,heisenberg}_L20.toml: 1000 chains, one sample per chain
per iteration (a sweep of L moves apart), SGD with lr 0.05, SR with diagonal shift 0.01.
Differences: NetKet's exchange move swaps neighbouring sites (lvmkit's any two sites), and
its RBM uses a bias on the visible units and the hidden units as lvmkit's does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXACT = {"tfim": -25.49098968636475, "heisenberg": -8.904386529876438}  # recomputed by benchmarks/vmc_spins.py


def run_case(name: str, iterations: int, time_limit: float) -> dict:
    import jax
    import netket as nk
    import numpy as np

    length = 20
    graph = nk.graph.Chain(length, pbc=True)
    if name == "tfim":
        hilbert = nk.hilbert.Spin(0.5, N=length)
        ham = nk.operator.Ising(hilbert, graph, h=1.0, J=-1.0)  # NetKet's H = J sum s^z s^z - h sum s^x
        units = 1.0
        sampler = nk.sampler.MetropolisLocal(hilbert, n_chains=1000, sweep_size=length)
    else:
        hilbert = nk.hilbert.Spin(0.5, N=length, total_sz=0)
        ham = nk.operator.Heisenberg(hilbert, graph)  # sign_rule: the Marshall rule on bipartite graphs
        units = 0.25  # NetKet's H = J sum sigma . sigma (Pauli matrices) = 4 sum S . S
        sampler = nk.sampler.MetropolisExchange(hilbert, graph=graph, n_chains=1000, sweep_size=length)
    model = nk.models.RBM(alpha=2, param_dtype=float)
    vs = nk.vqs.MCState(sampler, model, n_samples=1000, n_discard_per_chain=0, seed=0, sampler_seed=1)
    opt = nk.optimizer.Sgd(learning_rate=0.05 * units)  # the same step: the SR direction scales with H
    try:
        driver = nk.driver.VMC_SR(ham, opt, diag_shift=0.01, variational_state=vs)
        kind = "VMC_SR"
    except (AttributeError, TypeError):
        driver = nk.driver.VMC(ham, opt, variational_state=vs, preconditioner=nk.optimizer.SR(diag_shift=0.01))
        kind = "VMC + SR preconditioner"
    exact = EXACT[name]
    trace: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def callback(step, log_data, drv):
        e = units * float(np.real(log_data["Energy"].mean))
        trace.append((time.perf_counter() - t0, e))
        return time.perf_counter() - t0 < time_limit

    driver.run(n_iter=iterations, callback=callback, show_progress=False, out=None)
    train_s = time.perf_counter() - t0
    vs.n_samples = 50000  # the evaluation lvmkit evaluate makes: 50 samples of each of 1000 chains
    est = vs.expect(ham)
    energy = units * float(np.real(est.mean))
    to_1e3 = next((round(t, 1) for t, e in trace if abs(e - exact) / abs(exact) < 1e-3), None)
    return {"driver": kind, "iterations": len(trace), "train_seconds": round(train_s, 1), "energy": energy,
            "energy_error": units * float(est.error_of_mean), "relative_error": abs(energy - exact) / abs(exact),
            "seconds_to_rel_1e-3": to_1e3, "netket": nk.__version__, "jax": jax.__version__,
            "energy_per_iteration": [round(e, 5) for _, e in trace]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="tfim,heisenberg")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--time-limit", type=float, default=480.0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vmc_netket.json"))
    args = ap.parse_args()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    results = dict(previous.get("cases", {}))
    for name in args.cases.split(","):
        r = results[name] = run_case(name, args.iterations, args.time_limit)
        print(f"netket {name}: E = {r['energy']:.6f} +- {r['energy_error']:.1e} (relative error {r['relative_error']:.2e}) "
              f"after {r['iterations']} iterations, {r['train_seconds']} s; 1e-3 reached at {r['seconds_to_rel_1e-3']} s",
              flush=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"command": " ".join(sys.argv), "cpus": os.sched_getaffinity(0).__len__(),
                                   "cases": results}, indent=2) + "\n")
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
