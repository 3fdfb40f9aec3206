"""The GPU benchmark script runs end to end on the CPU (--dry-run), so a GPU session only runs it."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.slow
def test_gpu_benchmark_dry_run_writes_every_measurement(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert res["dry_run"] and res["device"] == "cpu"
    assert {(r["family"], r["precision"]) for r in res["throughput"]} == {(f, p) for f in ("vae", "rbm")
                                                                         for p in ("fp32", "bf16")}
    assert all(r["examples_per_second"] > 0 and r["steps"] >= 2 for r in res["throughput"])
    assert math.isfinite(res["ddpm"]["frechet_distance"]) and res["ddpm"]["train_seconds"] < 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run the full benchmark")
def test_gpu_benchmark_without_cuda_says_so(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert out.returncode != 0 and "no CUDA device is visible" in out.stderr
