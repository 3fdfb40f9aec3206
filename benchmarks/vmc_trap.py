"""Issue 25: variational Monte Carlo in harmonic traps, from random weights, through `lvmkit vmc`.

Cases (each one run of the bundled config, then `lvmkit evaluate` for the blocking error):
  ho_1d        one particle, 1-D, omega = 1      (configs/vmc_ho_1d.toml)         goal |E - 0.5| < 1e-4, var < 1e-6
  ho_2p2d      two particles, 2-D, no repulsion  (vmc_ho_1d.toml, P = 2, D = 2)   goal |E - 2| < 1e-4, var < 1e-6
  dots_rbm     two electrons, 2-D, omega = 1     (vmc_dots_2e.toml, no Jastrow)   goal E <= 3.09
  dots_jastrow the same with the Pade-Jastrow factor (vmc_dots_2e.toml)         goal |E - 3| < 1e-3

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vmc_trap.py [--cases ho_1d,ho_2p2d] [--out benchmarks/results/vmc_trap.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_info, write_json  # noqa: E402

CONFIGS = REPO / "src" / "lvmkit" / "configs"
CASES = {
    "ho_1d": ("vmc_ho_1d.toml", [], lambda r: abs(r["energy"] - 0.5) < 1e-4 and r["variance"] < 1e-6,
              "|E - 0.5| < 1e-4 and variance < 1e-6"),
    "ho_2p2d": ("vmc_ho_1d.toml", ["model.particles=2", "model.dims=2", "model.hidden=4"],
                lambda r: abs(r["energy"] - 2.0) < 1e-4 and r["variance"] < 1e-6, "|E - 2| < 1e-4 and variance < 1e-6"),
    "dots_rbm": ("vmc_dots_2e.toml", ["model.jastrow=false"], lambda r: r["energy"] <= 3.09, "E <= 3.09"),
    "dots_jastrow": ("vmc_dots_2e.toml", [], lambda r: abs(r["energy"] - 3.0) < 1e-3, "|E - 3| < 1e-3"),
}


def run_case(name: str, folder: Path, extra: list[str]) -> dict:
    import lvmkit
    from lvmkit.training.vmc import load_vmc_config, vmc

    config, overrides, goal, goal_text = CASES[name]
    cfg = load_vmc_config(CONFIGS / config, overrides + extra)
    t0 = time.perf_counter()
    run = vmc(cfg, folder / name, progress=True)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = lvmkit.evaluate(run)
    eval_s = time.perf_counter() - t0
    metrics = run.read_metrics()
    return {"command": " ".join(sys.argv), "config": config, "overrides": overrides + extra, "iterations": len(metrics), "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1), "energy": res["energy"], "energy_error": res["energy_error"],
            "variance": res["variance"], "acceptance": res["acceptance"], "n_samples": res["n_samples"],
            "exact_energy": res.get("exact_energy"), "goal": goal_text, "goal_reached": bool(goal(res)),
            "energy_per_iteration": [round(m["train_energy"], 6) for m in metrics]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--set", action="append", default=[], help="an override for every case")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vmc_trap.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    results = dict(previous.get("cases", {}))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            results[name] = run_case(name, Path(tmp), args.set)
            r = results[name]
            print(f"{name}: E = {r['energy']:.6f} +- {r['energy_error']:.1e}, variance {r['variance']:.2e}, "
                  f"{r['train_seconds']} s; goal {r['goal']}: {'reached' if r['goal_reached'] else 'NOT reached'}", flush=True)
            write_json(out, {"machine": machine_info(), "command": " ".join(sys.argv), "cases": results})


if __name__ == "__main__":
    main()
