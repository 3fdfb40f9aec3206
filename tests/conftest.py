"""Shared fixtures and strictness: fixed seeds, deterministic algorithms, warnings as errors
(pyproject), and one small trained run reused by the read-only tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lvmkit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

torch.use_deterministic_algorithms(True)
# lvmkit quality caches its feature classifiers; tests never write the user's ~/.cache.
if "LVMKIT_CACHE" not in os.environ:
    import tempfile

    os.environ["LVMKIT_CACHE"] = tempfile.mkdtemp(prefix="lvmkit-test-cache-")
# The suite runs many tiny tensor operations: one thread avoids contention on small CI machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(**sections) -> lvmkit.ExperimentConfig:
    """digits, a small MLP and a step limit: trains in about a second."""
    doc = {
        "data": {"name": "digits"},
        "model": {"kind": "vae", "latent_dim": 2, "hidden": [32]},
        "train": {"epochs": 3, "batch_size": 64, "patience": 0, "device": "cpu"},
        "eval": {"k": 20},
    }
    for name, fields in sections.items():
        doc.setdefault(name, {}).update(fields)
    return lvmkit.make_config(doc)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> lvmkit.Run:
    """A VAE trained for a few epochs on digits (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    return lvmkit.train(tiny_config(), out, progress=False)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python -m lvmkit ARGS`` in a subprocess, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    return subprocess.run([sys.executable, "-m", "lvmkit", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)
