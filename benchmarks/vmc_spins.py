"""Issue 25: RBM wave functions (Carleo & Troyer 2017, alpha = 2, SR) on periodic spin chains of
L = 20 sites through `lvmkit vmc`, against exact ground-state energies recomputed here with
scipy's sparse Lanczos (eigsh):

  tfim        H = -sum s^z s^z - h sum s^x at h = 1, all 2^20 states (a matrix-free operator);
              also the free-fermion value the family uses (-25.4909896864)
  heisenberg  H = sum S . S in the S^z = 0 sector (184,756 states); VarBench lists -8.9043865

Goal: relative error of the evaluated energy below 1e-4. Each case runs under a wall-time budget
(train.time_limit) and reports what it reached, the wall time to a relative error of 1e-3 of the
per-iteration energy (for the NetKet comparison, benchmarks/vmc_netket.py), and the blocking error.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vmc_spins.py [--cases tfim,heisenberg] [--time-limit 12m]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_info, write_json  # noqa: E402

CONFIGS = REPO / "src" / "lvmkit" / "configs"


def tfim_exact(length: int, h: float, j: float = 1.0) -> float:
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = 1 << length
    idx = np.arange(n, dtype=np.int64)
    diag = np.zeros(n)
    for i in range(length):
        parallel = ((idx >> i) & 1) == ((idx >> ((i + 1) % length)) & 1)
        diag -= j * np.where(parallel, 1.0, -1.0)
    flips = [(idx ^ (1 << i)).astype(np.int32) for i in range(length)]

    def matvec(v):
        v = np.ravel(v)
        out = diag * v
        for f in flips:
            out -= h * v[f]
        return out

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    return float(eigsh(op, k=1, which="SA", tol=1e-12)[0][0])


def heisenberg_exact(length: int, j: float = 1.0) -> float:
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import eigsh

    states = np.array(sorted(sum(1 << k for k in c) for c in combinations(range(length), length // 2)), dtype=np.int64)
    n = len(states)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    diag = np.zeros(n)
    for i in range(length):
        k = (i + 1) % length
        anti = ((states >> i) & 1) != ((states >> k) & 1)
        diag += 0.25 * j * np.where(anti, -1.0, 1.0)
        src = np.nonzero(anti)[0]
        dst = np.searchsorted(states, states[src] ^ ((1 << i) | (1 << k)))
        rows.append(src), cols.append(dst), vals.append(np.full(len(src), 0.5 * j))
    vals = [diag] + vals
    mat = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    return float(eigsh(mat, k=1, which="SA", tol=1e-12)[0][0])


CASES = {"tfim": ("vmc_tfim_L20.toml", lambda: tfim_exact(20, 1.0)), "heisenberg": ("vmc_heisenberg_L20.toml", lambda: heisenberg_exact(20))}


def time_to(metrics: list[dict], exact: float, rel: float) -> float | None:
    """Wall seconds of training until the per-iteration energy first lies within ``rel`` of exact."""
    total = 0.0
    for m in metrics:
        total += m["seconds"]
        if abs(m["train_energy"] - exact) / abs(exact) < rel:
            return round(total, 1)
    return None


def run_case(name: str, folder: Path, time_limit: str, extra: list[str]) -> dict:
    import lvmkit
    from lvmkit.training.vmc import load_vmc_config, vmc

    config, exact_fn = CASES[name]
    t0 = time.perf_counter()
    exact = exact_fn()
    exact_s = time.perf_counter() - t0
    cfg = load_vmc_config(CONFIGS / config, [f"train.time_limit={time_limit!r}".replace("'", '"'), *extra])
    t0 = time.perf_counter()
    run = vmc(cfg, folder / name, progress=True)
    train_s = time.perf_counter() - t0
    res = lvmkit.evaluate(run)
    metrics = run.read_metrics()
    rel = abs(res["energy"] - exact) / abs(exact)
    return {"command": " ".join(sys.argv), "config": config, "overrides": extra, "time_limit": time_limit, "exact_energy_lanczos": exact,
            "exact_seconds": round(exact_s, 1), "family_exact_energy": res.get("exact_energy"),
            "iterations": len(metrics), "train_seconds": round(train_s, 1), "energy": res["energy"],
            "energy_error": res["energy_error"], "variance": res["variance"], "acceptance": res["acceptance"],
            "n_samples": res["n_samples"], "relative_error": rel, "relative_error_goal": 1e-4, "goal_reached": rel < 1e-4,
            "seconds_to_rel_1e-3": time_to(metrics, exact, 1e-3),
            "energy_per_iteration": [round(m["train_energy"], 5) for m in metrics]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--time-limit", default="12m")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vmc_spins.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    results = dict(previous.get("cases", {}))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            r = results[name] = run_case(name, Path(tmp), args.time_limit, args.set)
            print(f"{name}: exact {r['exact_energy_lanczos']:.10f}; E = {r['energy']:.6f} +- {r['energy_error']:.1e} "
                  f"(relative error {r['relative_error']:.2e}) after {r['iterations']} iterations, {r['train_seconds']} s; "
                  f"goal < 1e-4 {'reached' if r['goal_reached'] else 'NOT reached'}", flush=True)
            write_json(out, {"machine": machine_info(), "command": " ".join(sys.argv), "cases": results})


if __name__ == "__main__":
    main()
