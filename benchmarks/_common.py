"""What both benchmarks share: machine facts, the matmul peak, atomic JSON output."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=REPO)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return (rev + ("-dirty" if dirty.stdout.strip() else "")) if rev else None


def machine_info() -> dict:
    """CPU, cores, threads and the versions that decide the numbers."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "lvmkit": _version("lvmkit"),
        "pythae": _version("pythae"),
        "git_revision": git_revision(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def matmul_peak(n: int = 2048, reps: int = 10) -> dict:
    """float32 GFLOP/s of an n x n torch.mm (2 n^3 FLOPs) on the current thread count.

    The best of ``reps`` timed products after two warm-up products is the "peak"; the median is
    recorded beside it to show how steady the machine was."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    times.sort()
    return {"n": n, "reps": reps, "gflops_best": flops / times[0] / 1e9,
            "gflops_median": flops / times[len(times) // 2] / 1e9}


def write_json(path: str | Path, obj: dict) -> Path:
    """Write ``obj`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path
