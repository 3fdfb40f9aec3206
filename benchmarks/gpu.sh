#!/usr/bin/env bash
# The GPU table of BENCHMARKS.md in one run (under 8 minutes on one GPU): every family's
# examples/s in fp32 and bf16 and a 5-minute DDPM on Fashion-MNIST with its FD.
#   bash benchmarks/gpu.sh [--out DIR]     on a CUDA machine (writes DIR/gpu_bench.json)
#   bash benchmarks/gpu.sh --dry-run       the same code on the CPU in seconds (tests/test_benchmarks.py)
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-../.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout 480 "$PY" gpu_bench.py "$@"
