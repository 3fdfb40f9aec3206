"""Every speed comparison of BENCHMARKS.md that has a peer, one process per comparison, one table.

``make bench`` runs this under ``.venv-bench`` (the peers Pythae, torchdiffeq, diffusers and
scikit-learn live there, never in lvmkit's own environment). Each benchmark script already puts
lvmkit and its peers side by side in one process, taking turns; this script runs the scripts one
after the other as subprocesses, with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``OPENBLAS_NUM_THREADS`` set to the script's thread count, each writing ``RESULTS/<name>.json``.
It then reads those files and prints one table (lvmkit's number, the peer's, and the speed-up:
above 1 means lvmkit is faster) and writes ``RESULTS/bench_summary.json`` with the machine, the
package versions and the exact command lines.

    .venv-bench/bin/python benchmarks/bench.py                      # the recorded protocols: ~30 min
    .venv-bench/bin/python benchmarks/bench.py --quick --only rbm_sklearn_speed
    .venv/bin/python benchmarks/bench.py --summary-only             # table of the stored results
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_RESULTS = HERE / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PEER_PACKAGES = ("pythae", "torchdiffeq", "diffusers", "scikit-learn", "scipy", "statsmodels")
QUICK_NOTE = "--quick: a smoke check of the scripts at tiny sizes; the numbers mean nothing"


@dataclass(frozen=True)
class Row:
    """One lvmkit-against-peer number. ``lower_is_better``: times (s/epoch); else rates."""

    comparison: str
    lvmkit: float
    peer: float
    unit: str
    lower_is_better: bool
    note: str = ""

    @property
    def speedup(self) -> float:
        """Above 1: lvmkit faster (peer time / lvmkit time, or lvmkit rate / peer rate)."""
        num, den = (self.peer, self.lvmkit) if self.lower_is_better else (self.lvmkit, self.peer)
        return num / den if den else math.nan


# -- one extractor per script: its JSON layout -> rows ----------------------------------------------
def _throughput(d: dict) -> list[Row]:
    r = d["results"]
    lv = r["lvmkit"]["median_epoch_seconds"]
    note = _peak_note(r["lvmkit"], d)
    return [Row(f"784-400-20 VAE epoch vs {peer}", lv, r[peer]["median_epoch_seconds"], "s/epoch", True, note)
            for peer in ("pythae", "plain") if "median_epoch_seconds" in r.get(peer, {})]


def _peak_note(result: dict, d: dict) -> str:
    """lvmkit's share of the matmul peak the script measured (issue 15 asks for it), if recorded."""
    share, peak = result.get("fraction_of_matmul_peak"), d.get("matmul", {}).get("gflops_best")
    return f"lvmkit at {share:.0%} of the matmul peak ({peak:.0f} GFLOP/s)" if share is not None and peak else ""


def _iw_eval(d: dict) -> list[Row]:
    m = d["modes"]
    lv = m["batched"]["examples_per_second"]
    names = {"hand-written": "per-example loop (Pythae style)", "one at a time": "one example per call"}
    note = _peak_note(m["batched"], d)
    return [Row(f"IW log p(x) k={d['k']}, batched vs {text}", lv, m[mode]["examples_per_second"], "examples/s",
                False, note) for mode, text in names.items() if mode in m]


def _latent_ode_speed(d: dict) -> list[Row]:
    r = d["results"]
    names = {"same-model": "same model on torchdiffeq", "example": "torchdiffeq example"}
    return [Row(f"latent ODE iteration vs {text}", r["lvmkit"]["seconds_per_iter"], r[name]["seconds_per_iter"],
                "s/iter", True) for name, text in names.items() if name in r]


def _dcgan_speed(d: dict) -> list[Row]:
    med = d["median_epoch_seconds"]
    return [Row(f"DCGAN epoch, {name} vs pytorch/examples", med[name], med["plain"], "s/epoch", True)
            for name in med if name != "plain"]


def _ddpm_sampling(d: dict) -> list[Row]:
    med = d["median_seconds"]
    paired = [x for x in d.get("paired_ratios_lvmkit_over_diffusers", []) if not math.isnan(x)]
    note = f"median paired ratio {statistics.median(paired):.2f} over {len(paired)} rounds" if paired else ""
    return [Row("DDIM-50 sampling vs diffusers DDIMScheduler", med["lvmkit_ddim50"], med["diffusers_ddim50"],
                f"s/{d['n_samples']} samples", True, note)]


def _ddpm_train_speed(d: dict) -> list[Row]:
    med = d["median_epoch_seconds"]
    return [Row("DDPM U-Net training epoch vs diffusers' loop", med["lvmkit"], med["diffusers"], "s/epoch", True,
                f"{d['parameters']['lvmkit']:,} vs {d['parameters']['diffusers']:,} parameters")]


def _rbm_sklearn_speed(d: dict) -> list[Row]:
    s = d["speed"]
    lv = s["median_epoch_seconds"]["lvmkit_pcd1"]
    return [Row("RBM PCD-1 epoch vs sklearn (float32)", lv, s["median_epoch_seconds"]["sklearn_float32"],
                "s/epoch", True),
            Row("RBM PCD-1 epoch vs sklearn (float64, once)", lv,
                s["sklearn_float64_epoch_seconds_once"], "s/epoch", True)]


@dataclass(frozen=True)
class Benchmark:
    """A script, its recorded protocol (BENCHMARKS.md), its smoke-check sizes and its extractor."""

    script: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    extract: Callable[[dict], list[Row]]
    needs: tuple[str, ...]  # importable peer modules
    threads: int  # the script's own --threads default, used unless --threads is given
    device: bool = False  # the script takes --device
    recorded: str | None = None  # read by --summary-only when RESULTS/<name>.json is missing


BENCHMARKS: dict[str, Benchmark] = {
    "throughput": Benchmark("throughput.py", ("--epochs", "6"), ("--epochs", "2", "--limit", "2000"),
                            _throughput, ("pythae",), 2),
    "iw_eval": Benchmark("iw_eval.py", ("--examples", "300"),
                         ("--limit", "2000", "--train-epochs", "1", "--examples", "50", "--k", "100"), _iw_eval, (), 2),
    "latent_ode_speed": Benchmark("latent_ode_speed.py", ("--iters", "300"), ("--iters", "3"), _latent_ode_speed,
                                  ("torchdiffeq",), 1),
    "ddpm_train_speed": Benchmark("ddpm_train_speed.py", ("--epochs", "3", "--rounds", "3"),
                                  ("--epochs", "2", "--rounds", "1", "--limit", "320"), _ddpm_train_speed, ("diffusers",), 2),
    "dcgan_speed": Benchmark("dcgan_speed.py", ("--epochs", "4", "--rounds", "2"),
                             ("--epochs", "2", "--rounds", "1", "--limit", "512"), _dcgan_speed, (), 1),
    "ddpm_sampling": Benchmark("ddpm_sampling.py", (),
                               ("--n", "4", "--reps", "1", "--ancestral-reps", "1", "--train-steps", "1",
                                "--warmup", "1"), _ddpm_sampling, ("diffusers",), 1),
    # its own file, as rbm_sklearn.json also holds the likelihood and digits parts
    "rbm_sklearn_speed": Benchmark("rbm_sklearn.py", ("--parts", "speed"),
                                   ("--parts", "speed", "--limit", "1000", "--rounds", "1"), _rbm_sklearn_speed,
                                   ("sklearn",), 1, recorded="rbm_sklearn.json"),
}


def _rel(path: Path | str) -> str:
    path = Path(path).absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def command(name: str, args: argparse.Namespace, results: Path) -> tuple[list[str], dict[str, str]]:
    """The argv and the thread variables of one benchmark run."""
    b = BENCHMARKS[name]
    argv = [_rel(sys.executable), f"benchmarks/{b.script}", *(b.quick if args.quick else b.args)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if b.device and args.device != "cpu":
        argv += ["--device", args.device]
    argv += ["--json", _rel(results / f"{name}.json")]
    threads = args.threads if args.threads is not None else b.threads
    return argv, {v: str(threads) for v in THREAD_VARS}


def run_all(names: list[str], args: argparse.Namespace, results: Path) -> list[dict]:
    runs = []
    for name in names:
        argv, threads = command(name, args, results)
        env = {**os.environ, **threads, "PYTHONUNBUFFERED": "1"}
        line = " ".join([*(f"{k}={v}" for k, v in threads.items()), shlex.join(argv)])
        print(f"\n== {name}: {line}", flush=True)
        if args.device != "cpu" and not BENCHMARKS[name].device:
            print(f"   ({BENCHMARKS[name].script} has no --device option: it runs on the CPU)", flush=True)
        out, started, t0 = results / f"{name}.json", time.time(), time.perf_counter()
        rc = subprocess.run(argv, env=env, cwd=REPO).returncode
        runs.append({"name": name, "command": line, "argv": argv, "env": threads, "returncode": rc,
                     "wall_seconds": round(time.perf_counter() - t0, 1), "json": _rel(out),
                     "written": out.exists() and out.stat().st_mtime >= started,
                     "device": args.device if BENCHMARKS[name].device else "cpu"})
        if rc != 0:
            print(f"== {name} exited with status {rc}", file=sys.stderr, flush=True)
    return runs


def stored_file(name: str, results: Path) -> Path:
    path, recorded = results / f"{name}.json", BENCHMARKS[name].recorded
    return results / recorded if recorded and not path.exists() else path


def summarize(names: list[str], files: dict[str, Path], stale: frozenset[str] = frozenset()) -> list[dict]:
    """Rows of every benchmark from its JSON; a missing file, one this run did not write (``stale``)
    or an unknown layout becomes an error row."""
    rows = []
    for name in names:
        path = files[name]
        base = {"benchmark": name, "json": _rel(path)}
        if not path.exists() or name in stale:
            rows.append({**base, "error": "no results file" if name not in stale else "not written by this run"})
            continue
        try:
            data = json.loads(path.read_text())
            extracted = BENCHMARKS[name].extract(data)
        except (KeyError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
            rows.append({**base, "error": f"unrecognised layout ({type(err).__name__}: {err})"})
            continue
        machine = data.get("machine", {})
        threads = data.get("threads", machine.get("torch_threads"))
        for r in extracted:
            rows.append({**base, "comparison": r.comparison, "lvmkit": r.lvmkit, "peer": r.peer, "unit": r.unit,
                         "lvmkit_speedup": r.speedup, "threads": threads, "note": r.note,
                         "git_revision": machine.get("git_revision"), "date": machine.get("date")})
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("benchmark", "comparison", "lvmkit", "peer", "unit", "lvmkit speed-up", "threads")
    body = []
    for r in rows:
        if "error" in r:
            body.append((r["benchmark"], f"{r['error']}: {r['json']}", "", "", "", "", ""))
        else:
            body.append((r["benchmark"], r["comparison"], f"{r['lvmkit']:.4g}", f"{r['peer']:.4g}", r["unit"],
                         f"{r['lvmkit_speedup']:.2f}x", str(r["threads"])))
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    right = {2, 3, 5, 6}
    for i, line in enumerate([head, *body]):
        print("  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("lvmkit speed-up = peer time / lvmkit time (or lvmkit rate / peer rate): above 1, lvmkit is faster")
    sources = {}
    for r in rows:
        rev = (r.get("git_revision") or "")[:7] + ("-dirty" if (r.get("git_revision") or "").endswith("dirty") else "")
        sources.setdefault(r["benchmark"], f"{r['json']}" + (f" (git {rev}, {r['date']})" if rev else ""))
        if r.get("note") and r["note"] not in sources[r["benchmark"]]:  # one note per file, not per row
            sources[r["benchmark"]] += f"; {r['note']}"
    for name, text in sources.items():
        print(f"  {name}: {text}")


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("lvmkit", "torch", "numpy", *PEER_PACKAGES):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=f"benchmarks: {', '.join(BENCHMARKS)}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, help="comma-separated subset of the benchmarks (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings that run each script end to end (a smoke check, not a measurement); "
                        "results go to a new temporary directory unless --results is given")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and BLAS threads for every script (default: each script's recorded protocol)")
    p.add_argument("--device", default="cpu", help="passed as --device to the scripts that take it (default cpu)")
    p.add_argument("--results", type=Path, default=None, help=f"results directory (default {_rel(DEFAULT_RESULTS)})")
    p.add_argument("--summary-only", action="store_true",
                   help="run nothing: print the table of the JSON files already in the results directory")
    p.add_argument("--read", action="append", default=[], metavar="NAME=PATH",
                   help="with --summary-only, read benchmark NAME from PATH (e.g. another recorded run)")
    return p, p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    names = list(BENCHMARKS) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        p.error(f"--only takes names from {', '.join(BENCHMARKS)}; got {args.only!r}.")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1; got {args.threads}.")
    reads = dict(r.split("=", 1) for r in args.read if "=" in r)
    if len(reads) != len(args.read) or set(reads) - set(BENCHMARKS):
        p.error(f"--read takes NAME=PATH with NAME from {', '.join(BENCHMARKS)}; got {args.read}.")
    if reads and not args.summary_only:
        p.error("--read only applies with --summary-only.")
    if args.summary_only:
        results = args.results or DEFAULT_RESULTS
        print_table(summarize(names, {n: Path(reads[n]) if n in reads else stored_file(n, results) for n in names}))
        return 0

    missing = sorted({m for n in names for m in BENCHMARKS[n].needs if importlib.util.find_spec(m) is None})
    if missing:
        print(f"bench.py: {', '.join(missing)} not importable by {_rel(sys.executable)}; run it under .venv-bench "
              "(make bench-venv) or leave those benchmarks out with --only.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    from _common import machine_info, write_json  # imports torch: only when benchmarks run

    results = args.results or (Path(tempfile.mkdtemp(prefix="lvmkit-bench-quick-")) if args.quick else DEFAULT_RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    runs = run_all(names, args, results)
    rows = summarize(names, {n: results / f"{n}.json" for n in names},
                     frozenset(r["name"] for r in runs if not r["written"]))
    print(f"\n{QUICK_NOTE}\n" if args.quick else "")
    print_table(rows)
    machine = machine_info()
    del machine["torch_threads"]  # this process's, not the scripts': theirs are in runs[].env and rows[].threads
    summary = {"quick": args.quick, "note": QUICK_NOTE if args.quick else "the recorded protocols of BENCHMARKS.md",
               "command": shlex.join([_rel(sys.executable), *sys.argv]), "machine": machine,
               "versions": versions(), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
               "threads_option": args.threads, "device": args.device, "runs": runs, "rows": rows}
    print(f"wrote {_rel(write_json(results / 'bench_summary.json', summary))}")
    failed = [r["name"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"bench.py: {', '.join(failed)} exited with a non-zero status (see above).", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
