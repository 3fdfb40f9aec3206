"""train.precision, train.channels_last and train.compile on the CPU (GPU runs: BENCHMARKS.md)."""
from __future__ import annotations

import math

import pytest
import torch

import lvmkit
from lvmkit import ConfigError
from lvmkit.core.checkpoint import load_checkpoint


def _cfg(**train):
    return lvmkit.make_config({
        "data": {"name": "digits", "limit": 300},
        "model": {"kind": "vae", "network": "conv", "channels": [4, 8], "hidden": [16], "latent_dim": 2},
        "train": {"epochs": 1, "batch_size": 50, "device": "cpu", "sample_every": 0, **train},
    })


def _weights(run):
    return load_checkpoint(run.checkpoints / "last.pt")["model"]


def test_bf16_autocast_and_channels_last_train_a_conv_vae_on_the_cpu(tmp_path):
    ref = lvmkit.train(_cfg(), tmp_path / "fp32", progress=False)
    run = lvmkit.train(_cfg(precision="bf16", channels_last=True), tmp_path / "bf16", progress=False)
    a, b = ref.read_metrics()[-1], run.read_metrics()[-1]
    assert math.isfinite(b["train_loss"]) and math.isfinite(b["val_loss"])
    # bf16 keeps 8 bits of mantissa: the same training, a loss within a few percent
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
    assert any(w.dtype == torch.float32 for w in _weights(run).values())  # weights stay float32


def test_fp16_needs_a_gpu(tmp_path):
    with pytest.raises(ConfigError, match=r"train.precision = 'fp16' trains with CUDA's gradient scaler, but the device is "
                                          r"cpu; use train.precision = 'bf16' there"):
        lvmkit.train(_cfg(precision="fp16"), tmp_path / "fp16", progress=False)
    with pytest.raises(ConfigError, match=r"train.precision"):
        _cfg(precision="fp8")


def test_compile_gives_the_uncompiled_weights(tmp_path):
    ref = lvmkit.train(_cfg(), tmp_path / "eager", progress=False)
    run = lvmkit.train(_cfg(compile="eager"), tmp_path / "compiled", progress=False)  # dynamo traces, no codegen
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
