"""The training loop: checkpoints, exact resume after SIGKILL, NaN guard, stopping rules."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import CheckpointError, TrainingDiverged

from conftest import run_cli, tiny_config


def test_checkpoint_refuses_truncated_corrupted_and_foreign_files(trained_run, tmp_path):
    good = (trained_run.checkpoints / "last.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupted"):
        lvmkit.load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "noise.pt").write_bytes(os.urandom(2000))
    with pytest.raises(CheckpointError, match=r"is truncated or corrupted"):
        lvmkit.load_checkpoint(tmp_path / "noise.pt")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        lvmkit.load_checkpoint(tmp_path / "absent.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"is not an lvmkit checkpoint"):
        lvmkit.load_checkpoint(tmp_path / "foreign.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_loading_never_executes_code_from_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"format": "lvmkit-checkpoint-1", "model": _Exploit()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"evil.pt' is not an lvmkit checkpoint: it holds pickled Python objects .* refuses unread"):
        lvmkit.load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    # a torch.save of a custom object and a plain pickle.dump: foreign files, refused unread
    torch.save({"model": _Exploit()}, tmp_path / "model.pt")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"weights": [1.0, 2.0]}, f)
    for name in ("model.pt", "plain.pkl"):
        with pytest.raises(CheckpointError, match=rf"{name}' is not an lvmkit checkpoint: it holds pickled Python objects"):
            lvmkit.load_checkpoint(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    lvmkit.save_checkpoint(tmp_path / "c.pt", {"x": torch.ones(3)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        lvmkit.save_checkpoint(tmp_path / "c.pt", {"x": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(lvmkit.load_checkpoint(tmp_path / "c.pt")["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    cfg = tiny_config(data={"name": "npz", "path": str(tmp_path / "d.npz"), "scale": "none"},
                      model={"likelihood": "gaussian", "hidden": [8]},
                      train={"lr": 1e8, "grad_clip": 0, "epochs": 50, "batch_size": 16})
    with pytest.raises(TrainingDiverged, match=r"The .main. loss became (nan|inf) at step \d+ .*last good checkpoint is kept"):
        lvmkit.train(cfg, tmp_path / "run", progress=False)
    ckpt = lvmkit.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_max_steps_and_early_stopping(tmp_path):
    run = lvmkit.train(tiny_config(train={"epochs": 50, "max_steps": 25}), tmp_path / "a", progress=False)
    m = run.read_metrics()
    assert m[-1]["step"] == 25 and len(m) == 2  # 18 steps per epoch on digits at batch 64
    run = lvmkit.train(tiny_config(train={"epochs": 500, "patience": 2, "lr": 0.05}), tmp_path / "b", progress=False)
    m = run.read_metrics()
    best = min(range(len(m)), key=lambda i: m[i]["val_loss"])
    assert len(m) < 500 and len(m) - 1 - best == 2


def test_cosine_schedule_sets_the_rate_of_every_step(tmp_path):
    from lvmkit.core.schedules import cosine_decay

    assert cosine_decay(0, 100, 0.1) == 1.0 and cosine_decay(100, 100, 0.1) == pytest.approx(0.1)
    assert cosine_decay(50, 100, 0.1) == pytest.approx(0.55) and cosine_decay(500, 100, 0.1) == pytest.approx(0.1)
    factors = [cosine_decay(s, 100, 0.0) for s in range(101)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
    run = lvmkit.train(tiny_config(train={"epochs": 2, "lr": 0.01, "lr_schedule": "cosine", "lr_final": 0.1}),
                       tmp_path / "run", progress=False)
    assert run.read_metrics()[-1]["step"] == 40  # 20 batches per epoch
    lr = lvmkit.load_checkpoint(run.checkpoints / "last.pt")["optimizers"]["main"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.01 * cosine_decay(39, 40, 0.1))  # the last step's rate, near the final 0.001


def _final(run_dir):
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if "seconds" not in k} for m in lines]


SIGKILL_CASES = {
    "vae_digits.toml": ["--set", "train.batch_size=8", "--set", "model.hidden=[64]", "--set", "train.lr_schedule=cosine"],
    # both optimizers, the EMA weights and the sample grids' epochs must line up after a kill
    "gan_digits.toml": ["--set", "train.batch_size=32", "--set", "train.ema_decay=0.9", "--set", "model.latent_dim=8",
                        "--set", "model.generator.channels=[16,8]", "--set", "model.discriminator.channels=[8,16]"],
}


@pytest.mark.parametrize("config", SIGKILL_CASES)
def test_resume_after_sigkill_matches_uninterrupted_run(config, tmp_path):
    sets = ["--set", "train.epochs=40", "--set", "train.threads=1", "--set", "train.patience=0", "--no-report", "--quiet",
            *SIGKILL_CASES[config]]
    from conftest import CONFIGS

    cfg = str(CONFIGS / config)
    ref = run_cli("train", cfg, "--out", str(tmp_path / "ref"), *sets)
    assert ref.returncode == 0, ref.stderr

    victim = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, "-m", "lvmkit", "train", cfg, "--out", str(victim), *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = victim / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 5 <= done < 40, f"the run was not interrupted mid-way ({done} epochs logged)"

    res = run_cli("train", "--resume", str(victim), "--no-report", "--quiet")
    assert res.returncode == 0, res.stderr
    assert _final(victim) == _final(tmp_path / "ref")
    a = lvmkit.load_checkpoint(victim / "checkpoints" / "last.pt")
    b = lvmkit.load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    for part in ("model", "ema") if "ema" in a else ("model",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert set(a["optimizers"]) == set(b["optimizers"])
    for group in a["optimizers"]:
        for pid, state in a["optimizers"][group]["state"].items():
            assert all(torch.equal(v, b["optimizers"][group]["state"][pid][k]) for k, v in state.items()
                       if isinstance(v, torch.Tensor)), group


def test_api_resume_of_finished_run_is_a_no_op(trained_run):
    before = trained_run.read_metrics()
    lvmkit.resume(trained_run.path, progress=False)
    assert lvmkit.Run.open(trained_run.path).read_metrics() == before


def test_cuda_request_without_cuda_is_an_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(lvmkit.ConfigError, match=r"no CUDA device is available here; use train.device = 'cpu'"):
        lvmkit.train(tiny_config(train={"device": "cuda"}), tmp_path / "r", progress=False)


FIXTURE_V1 = Path(__file__).parent / "fixtures" / "v1_vae_run"


def test_a_run_written_by_checkpoint_format_1_still_evaluates_and_resumes(tmp_path):
    """tests/fixtures/v1_vae_run was written by lvmkit before the training contract changed:
    a flat [model] table with every family's keys, one Adam state under "optimizer"."""
    import shutil

    run_dir = tmp_path / "v1"
    shutil.copytree(FIXTURE_V1, run_dir)
    ckpt = lvmkit.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["version"] == 1 and "optimizer" in ckpt and "optimizers" not in ckpt
    old = json.loads((FIXTURE_V1 / "eval.json").read_text())
    new = lvmkit.evaluate(run_dir, k=10, write=False)
    # the deterministic parts of the evaluation are unchanged
    for key in ("test_loss", "test_recon", "test_kl", "recon_sq_error"):
        assert new[key] == pytest.approx(old[key], rel=1e-6), key
    assert lvmkit.sample(run_dir, 4).shape == (4, 1, 8, 8)
    run = lvmkit.Run.open(run_dir)
    run.config.train.epochs = 3
    (run_dir / "config.toml").write_text(run.config.to_toml())
    lvmkit.resume(run_dir, progress=False)
    m = lvmkit.Run.open(run_dir).read_metrics()
    assert [r["epoch"] for r in m] == [1, 2, 3] and m[-1]["train_loss"] < m[0]["train_loss"]
    assert lvmkit.load_checkpoint(run_dir / "checkpoints" / "last.pt")["version"] == 2
    from lvmkit.report import write_report

    assert "<h2>Samples</h2>" in write_report(run_dir).read_text()


def test_discriminator_collapse_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from lvmkit.models.gan import gan

    calls = {"n": 0}
    real_loss = gan.GAN.discriminator_loss

    def collapsing(self, real, fake, generator=None):
        loss, out, terms = real_loss(self, real, fake, generator)
        calls["n"] += self.training
        return (loss * float("nan") if calls["n"] > 30 else loss), out, terms

    monkeypatch.setattr(gan.GAN, "discriminator_loss", collapsing)
    cfg = lvmkit.make_config({"model": {"kind": "gan", "latent_dim": 4, "generator": {"channels": [8, 4]},
                                        "discriminator": {"channels": [4, 8]}},
                              "train": {"epochs": 5, "batch_size": 64, "device": "cpu", "sample_every": 0}})
    with pytest.raises(TrainingDiverged, match=r"The 'discriminator' loss became nan at step 31 \(epoch 2\).*last good checkpoint"):
        lvmkit.train(cfg, tmp_path / "gan", progress=False)
    ckpt = lvmkit.load_checkpoint(tmp_path / "gan" / "checkpoints" / "last.pt")
    assert ckpt["state"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_data_outside_the_models_support_is_refused_with_advice_for_its_family(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, x=np.random.default_rng(0).random((60, 8, 8)).astype(np.float32) * 5)
    data = {"name": "npz", "path": str(path), "scale": "none"}
    with pytest.raises(lvmkit.ConfigError, match=r"needs data in \[0.0, 1.0\] but the training data spans \[.*\]; "
                                                 r"set data.scale = 'minmax' or model.likelihood = 'gaussian'\."):
        lvmkit.train(tiny_config(data=data), tmp_path / "vae", progress=False)
    gan = lvmkit.make_config({"data": data, "model": {"kind": "gan"}, "train": {"device": "cpu"}})
    with pytest.raises(lvmkit.ConfigError, match=r"The GAN model needs data in \[0.0, 1.0\] .*set data.scale = 'minmax'\.$"):
        lvmkit.train(gan, tmp_path / "gan", progress=False)


def test_infovae_trains_when_the_last_batch_holds_one_example(tmp_path):
    cfg = tiny_config(data={"limit": 60}, model={"kind": "infovae"}, train={"epochs": 1})
    n_train = len(lvmkit.load_data(cfg.data, cfg.train.seed).train)
    cfg = tiny_config(data={"limit": 60}, model={"kind": "infovae"}, train={"epochs": 1, "batch_size": n_train - 1})
    assert n_train % cfg.train.batch_size == 1  # two batches: n_train - 1 examples, then one
    run = lvmkit.train(cfg, tmp_path / "info", progress=False)
    (record,) = run.read_metrics()
    assert record["step"] == 2 and np.isfinite(record["train_loss"]) and np.isfinite(record["train_mmd"])


def test_overwrite_replaces_a_run_and_refuses_other_directories(trained_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained_run.path, old)
    (old / "figures").mkdir(exist_ok=True)
    (old / "figures" / "stale.png").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"already holds a run; .* or replace it with --overwrite"):
        lvmkit.Run.create(trained_run.config, old)
    run = lvmkit.Run.create(trained_run.config, old, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["config.toml", "meta.json"] and run.path == old
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"Refusing to overwrite '.*photos': it is not an lvmkit run directory \(no config.toml\)"):
        lvmkit.Run.create(trained_run.config, other, overwrite=True)
    assert (other / "cat.jpg").is_file()  # left untouched
    assert lvmkit.Run.create(trained_run.config, tmp_path / "new", overwrite=True).path.is_dir()  # nothing to replace


def test_opening_a_run_removes_temporary_files_of_interrupted_checkpoint_writes(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    # the names core.checkpoint.save_checkpoint gives its temporary files
    stale = [run / "checkpoints" / ".last.pt.k2j_x9.tmp", run / "checkpoints" / ".best.pt.a81b.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    keep = sorted(p.name for p in (run / "checkpoints").iterdir() if p not in stale)
    lvmkit.Run.open(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == keep == ["best.pt", "last.pt"]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    cfg = tiny_config()
    ref = lvmkit.train(cfg, tmp_path / "ref", progress=False)
    killed = lvmkit.Run.create(cfg, tmp_path / "killed")  # config.toml and meta.json, no checkpoint yet
    killed.metrics_path.write_text('{"epoch": 1, "step": 3}\n')  # a record of the killed first epoch
    run = lvmkit.resume(killed.path, progress=False)
    a, b = (lvmkit.load_checkpoint(r.checkpoints / "last.pt")["model"] for r in (ref, run))
    assert all(torch.equal(a[k], b[k]) for k in a)
    untimed = lambda ms: [{k: v for k, v in m.items() if "seconds" not in k} for m in ms]  # noqa: E731
    assert untimed(run.read_metrics()) == untimed(ref.read_metrics())
    assert run.read_json("optimizers.json") == ref.read_json("optimizers.json")


def test_a_run_of_a_model_without_selection_resumes_with_the_default_patience(tmp_path):
    """The stored config lists every field, so an RBM run whose config never named patience
    holds patience = 10 there; resuming it must not be refused as if the user had set it."""
    cfg = lvmkit.make_config({"data": {"name": "digits", "binarize": "static", "limit": 200},
                              "model": {"kind": "rbm", "hidden": 8}, "train": {"epochs": 1, "batch_size": 50}})
    killed = lvmkit.Run.create(cfg, tmp_path / "r")  # as a run killed before its first checkpoint leaves it
    assert "patience = 10" in (killed.path / "config.toml").read_text()
    resumed = lvmkit.resume(killed.path, progress=False)
    assert [m["epoch"] for m in resumed.read_metrics()] == [1]
    # Set by the user, it is still refused when the run starts.
    with pytest.raises(lvmkit.ConfigError, match=r"train.patience = 3 stops on a validation metric, but the RBM model selects none"):
        lvmkit.train(lvmkit.make_config({**cfg.model_dump(exclude_unset=True), "train": {"epochs": 1, "patience": 3}}),
                     tmp_path / "s", progress=False)
