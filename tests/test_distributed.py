"""Training on several processes with torchrun (gloo on loopback): the same weights as one process
on the same global batch, rank 0 alone writes, a killed process stops the other, resume on any
number of processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lvmkit
from lvmkit import ConfigError
from lvmkit.core import distributed as dist
from lvmkit.core.checkpoint import load_checkpoint

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed is not available")

CONFIG = """
[data]
name = "digits"
limit = {limit}

[model]
kind = "ae"
latent_dim = 4
hidden = {hidden}
likelihood = "gaussian"

[train]
epochs = {epochs}
batch_size = {batch}
patience = 0
seed = 3
threads = 1
device = "cpu"
"""


def _config(tmp_path: Path, limit=600, hidden=(32,), epochs=2, batch=64) -> Path:
    p = tmp_path / "ae.toml"
    p.write_text(CONFIG.format(limit=limit, hidden=list(hidden), epochs=epochs, batch=batch))
    return p


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "LVMKIT_DIST_TIMEOUT": "30"}


def _torchrun(*args: str, n: int = 2, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(TORCHRUN), "--standalone", f"--nproc-per-node={n}", "-m", "lvmkit", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), **kw)


def _finish(p: subprocess.Popen, timeout: float = 240) -> None:
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-2000:]


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _close(a: dict, b: dict, atol: float = 1e-5) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_give_the_weights_of_one_on_the_same_global_batch(tmp_path):
    cfg = _config(tmp_path)
    _finish(_torchrun("train", str(cfg), "--out", str(tmp_path / "two"), "--quiet"))
    one = lvmkit.train(lvmkit.load_config(cfg), tmp_path / "one", progress=False)
    assert _close(_weights(tmp_path / "two"), _weights(one.path)) < 1e-5
    # rank 0 alone wrote: one line per epoch, and the same records as the single process
    two = [r for r in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == 2
    for a, b in zip(lvmkit.Run.open(tmp_path / "two").read_metrics(), one.read_metrics()):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)  # over both processes' examples


def test_a_killed_process_stops_the_other_and_resume_on_two_or_one_process_gives_the_uninterrupted_weights(tmp_path):
    import shutil

    cfg = _config(tmp_path, limit=1000, hidden=(64,), epochs=4, batch=16)
    run = tmp_path / "killed"
    p = _torchrun("train", str(cfg), "--out", str(run), "--quiet", start_new_session=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.005)
    workers = [int(w) for w in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2, workers
    for w in workers:  # freeze both, so the kill lands mid-run whatever the machine's speed
        os.kill(w, signal.SIGSTOP)
    os.kill(workers[1], signal.SIGKILL)
    os.kill(workers[0], signal.SIGCONT)
    t0 = time.time()
    p.communicate(timeout=120)  # the other process stops: its collective fails, torchrun ends the group
    assert p.returncode != 0 and time.time() - t0 < 90
    done = len(lvmkit.Run.open(run).read_metrics())
    assert 1 <= done < 4
    shutil.copytree(run, tmp_path / "killed-one")
    # the same number of processes: exactly the uninterrupted two-process run
    _finish(_torchrun("train", "--resume", str(run), "--quiet"))
    _finish(_torchrun("train", str(cfg), "--out", str(tmp_path / "two"), "--quiet"))
    assert [m["epoch"] for m in lvmkit.Run.open(run).read_metrics()] == [1, 2, 3, 4]
    assert _close(_weights(run), _weights(tmp_path / "two")) < 1e-6
    # one process from the two-process checkpoint: the one-process run, up to summation order
    lvmkit.resume(tmp_path / "killed-one", progress=False)
    reference = lvmkit.train(lvmkit.load_config(cfg), tmp_path / "reference", progress=False)
    assert _close(_weights(tmp_path / "killed-one"), _weights(reference.path)) < 1e-4


def test_a_batch_that_does_not_divide_among_the_processes_is_refused():
    with pytest.raises(ConfigError, match=r"train.batch_size = 64 does not divide among the 3 processes; set it to a multiple of 3"):
        dist.check_batch(dist.World(rank=0, size=3), 64)
    x = torch.arange(10.0)
    parts = [dist.share(dist.World(rank=r, size=3), x) for r in range(3)]
    assert torch.equal(torch.cat(parts), x) and [len(q) for q in parts] == [4, 3, 3]
