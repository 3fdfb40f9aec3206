"""Every CLI command end to end on digits with a step limit, and its one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lvmkit

from lvmkit.cli import main

from conftest import CONFIGS, run_cli

SMOKE = ["--set", "train.max_steps=30", "--set", "model.hidden=[32]", "--quiet"]


def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_evaluate_sample_report(capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", str(CONFIGS / "vae_digits.toml"), "--out", str(run), *SMOKE)
    assert code == 0, err
    assert out.strip() == str(run)
    for name in ("config.toml", "meta.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt", "report.html"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 0 and "torch" in meta["versions"]

    code, out, err = _cli(capsys, "evaluate", str(run), "--k", "10")
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["k"] == 10 and np.isfinite(ev["nll"]) and ev["n_test"] == 359

    code, out, err = _cli(capsys, "sample", str(run), "--n", "16", "--out", str(tmp_path / "s.png"))
    assert code == 0, err
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = _cli(capsys, "sample", str(run), "--n", "5", "--out", str(tmp_path / "s.npy"))
    assert code == 0 and np.load(tmp_path / "s.npy").shape == (5, 1, 8, 8)

    code, out, err = _cli(capsys, "report", str(run))
    assert code == 0, err
    assert out.strip() == str(run / "report.html")
    assert "evaluation on the test split" in (run / "report.html").read_text()


def test_gan_train_sample_quality_report(capsys, tmp_path):
    run = tmp_path / "gan"
    code, out, err = _cli(capsys, "train", str(CONFIGS / "gan_digits.toml"), "--out", str(run), "--quiet",
                          "--set", "train.epochs=3", "--set", "model.generator.channels=[16,8]",
                          "--set", "model.discriminator.channels=[8,16]", "--set", "train.optim.discriminator.lr=1e-3")
    assert code == 0, err
    assert json.loads((run / "optimizers.json").read_text())["discriminator"]["lr"] == 1e-3
    assert json.loads((run / "optimizers.json").read_text())["generator"] == {
        "optimizer": "adam", "lr": 2e-4, "betas": [0.5, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.npy", "epoch_0002.npy", "epoch_0003.npy"]
    assert not (run / "checkpoints" / "best.pt").exists()  # a GAN selects nothing on validation: last is the model
    code, _, err = _cli(capsys, "sample", str(run), "--n", "6", "--out", str(tmp_path / "g.npy"))
    assert code == 0, err
    s = np.load(tmp_path / "g.npy")
    assert s.shape == (6, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    code, out, err = _cli(capsys, "evaluate", str(run))
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    assert {"test_d_loss", "test_g_loss", "d_real", "d_fake"} <= set(ev)
    code, out, err = _cli(capsys, "probe", str(run))
    assert code == 2 and "LatentEncoder needs a model that is an encoder, but this GAN is not (its capabilities: generator)" in err
    code, out, err = _cli(capsys, "quality", str(run), "--n", "300")
    assert code == 0, err
    q = json.loads((run / "quality.json").read_text())
    assert q["n_generated"] == 300 and q["frechet_distance"] > q["floor"]["frechet_distance"] >= 0
    assert "floor, train vs test" in out
    code, _, err = _cli(capsys, "report", str(run))
    assert code == 0, err
    html = (run / "report.html").read_text()
    for heading in ("Samples", "Sample quality (quality.json)", "Loss curves"):
        assert f"<h2>{heading}</h2>" in html
    assert "samples from the same fixed noise" in html and "d_loss" in (run / "metrics.jsonl").read_text()


def test_demo_prints_the_report_path(capsys, tmp_path):
    code, out, err = _cli(capsys, "demo", "--out", str(tmp_path / "demo"), "--k", "10", "--set", "train.max_steps=20")
    assert code == 0, err
    assert out.strip() == f"report: {tmp_path / 'demo' / 'report.html'}"
    assert (tmp_path / "demo" / "eval.json").is_file()
    # the picture's 2-D codes and the 8-D companion are both probed against PCA of equal width and raw pixels
    wide = tmp_path / "demo-latent8"
    assert json.loads((wide / "probe.json").read_text())["widths"] == {"latent": 8, "raw": 64, "pca": 8}
    assert "the model's 2-number codes" in err and "the model's 8-number codes" in err and "the 64 raw inputs" in err


def _npz(tmp_path, name, x):
    np.savez(tmp_path / name, x=x)
    return str(tmp_path / name)


@pytest.mark.parametrize("case", [
    "missing-config", "unknown-key", "wrong-type", "latent-zero", "missing-run", "missing-data",
    "nan-data", "bad-shape", "corrupt-checkpoint", "resume-with-set", "bad-sample-file",
    "gan-likelihood", "gan-regularizer", "gan-n-critic-0", "train-n-critic", "gan-loss", "adam-momentum",
    "nested-unknown", "quality-no-labels", "gan-patience",
    "config-is-directory", "anomaly-class-labels", "anomaly-label-absent", "anomaly-label-without-data",
    "overwrite-not-a-run", "overwrite-without-out", "pickle-checkpoint", "unknown-option", "missing-argument",
    "unknown-command",
])
def test_bad_input_gives_one_line_and_status_2(case, capsys, tmp_path, trained_run):
    cfg = str(CONFIGS / "vae_digits.toml")
    gan = str(CONFIGS / "gan_digits.toml")
    nan = np.ones((30, 4))
    nan[0, 0] = np.nan
    args, pattern = {
        "missing-config": (["train", str(tmp_path / "nope.toml")], r"Config file .* does not exist"),
        "unknown-key": (["train", cfg, "--set", "model.latnet_dim=3"], r"Unknown config key 'model.latnet_dim'"),
        "wrong-type": (["train", cfg, "--set", "train.epochs=many"], r"Invalid value for 'train.epochs'"),
        "latent-zero": (["train", cfg, "--set", "model.latent_dim=0"], r"'model.latent_dim': Input should be greater than 0"),
        "missing-run": (["evaluate", str(tmp_path / "no-run")], r"Run directory .* does not exist"),
        "missing-data": (["train", cfg, "--set", "data.name=npz", "--set", f"data.path={tmp_path / 'x.npz'}"], r"Data file .* does not exist"),
        "nan-data": (["train", cfg, "--set", "data.name=npz", "--set", f"data.path={_npz(tmp_path, 'n.npz', nan)}"], r"NaN or infinite"),
        "bad-shape": (["train", cfg, "--set", "data.name=npz", "--set", f"data.path={_npz(tmp_path, 's.npz', np.ones(30))}"], r"has shape \(30,\); expected"),
        "corrupt-checkpoint": (None, r"is truncated or corrupted"),
        "resume-with-set": (["train", "--resume", str(trained_run.path), "--set", "train.lr=1"], r"--resume continues a run with its own config"),
        "bad-sample-file": (["sample", str(trained_run.path), "--out", str(tmp_path / "s.jpg")], r"use a .png, .npy or .csv file name"),
        "gan-likelihood": (["train", gan, "--set", "model.likelihood=gaussian"],
                           r"Unknown config key 'model.likelihood'; valid keys in the gan family's \[model\] are: kind, family, latent_dim"),
        "gan-regularizer": (["train", gan, "--set", "model.regularizer=kl"], r"Unknown config key 'model.regularizer'"),
        "gan-n-critic-0": (["train", gan, "--set", "model.n_critic=0"], r"'model.n_critic': Input should be greater than or equal to 1"),
        "train-n-critic": (["train", gan, "--set", "train.n_critic=5"], r"n_critic belongs to the GAN's own step: set model.n_critic"),
        "gan-loss": (["train", gan, "--set", "model.loss=hinge"], r"Unknown GAN loss 'hinge'; choose one of: minimax, non-saturating, wgan-gp"),
        "adam-momentum": (["train", gan, "--set", "train.momentum=0.9"], r"\[train\] sets momentum but optimizer 'adam' does not take it"),
        "nested-unknown": (["train", gan, "--set", "model.generator.chanels=[8]"],
                           r"Unknown config key 'model.generator.chanels'; valid keys in the gan family's \[model.generator\] are: channels, hidden, norm"),
        "quality-no-labels": (None, r"needs class labels"),
        "gan-patience": (["train", gan, "--set", "train.patience=5"], r"train.patience = 5 stops on a validation metric, but the GAN model selects none"),
        "config-is-directory": (["train", str(tmp_path)], r"Config file '.*' is a directory; pass the path of a TOML file in it"),
        "anomaly-class-labels": (None, r"Labels y of '.*digits.npz' must be 0/1 anomaly flags, but they hold 10 values \(0, 1, 2, .*\); "
                                       r"pass --anomaly-label VALUE"),
        "anomaly-label-absent": (None, r"Anomaly label '42' is not among the labels y of '.*digits.npz' \(0, 1, 2"),
        "anomaly-label-without-data": (["anomaly", str(trained_run.path), "--anomaly-label", "3"],
                                       r"An anomaly label \('3'\) applies to the labels y of a --data file, but none was given"),
        "overwrite-not-a-run": (["train", cfg, "--out", str(tmp_path), "--overwrite"],
                                r"Refusing to overwrite '.*': it is not an lvmkit run directory \(no config.toml\)"),
        "overwrite-without-out": (["train", cfg, "--overwrite"], r"--overwrite replaces the run in --out, but no --out was given"),
        "pickle-checkpoint": (None, r"checkpoints/(best|last).pt' is not an lvmkit checkpoint: it holds pickled Python objects .* refuses unread"),
        "unknown-option": (["train", "--no-such-option"], r"^error: No such option: --no-such-option; see 'lvmkit train --help'\.$"),
        "missing-argument": (["evaluate"], r"^error: Missing argument 'run'; see 'lvmkit evaluate --help'\.$"),
        "unknown-command": (["trian"], r"^error: No such command 'trian'\. Did you mean 'train'\? See 'lvmkit --help'\.$"),
    }[case]
    if case.startswith("anomaly-label-absent") or case == "anomaly-class-labels":
        data = trained_run.data()
        np.savez(tmp_path / "digits.npz", x=data.test.x.numpy(), y=data.test.y.numpy())
        args = ["anomaly", str(trained_run.path), "--data", str(tmp_path / "digits.npz")]
        args += ["--anomaly-label", "42"] if case == "anomaly-label-absent" else []
    if case == "overwrite-not-a-run":
        (tmp_path / "notes.txt").write_text("not a run")
    if case == "pickle-checkpoint":
        import shutil

        import torch

        run = tmp_path / "copy"
        shutil.copytree(trained_run.path, run)
        for p in (run / "checkpoints").iterdir():
            torch.save({"model": lvmkit.Run.open(run)}, p)  # a pickled object, as torch.save of a whole model writes
        args = ["evaluate", str(run)]
    if case == "quality-no-labels":
        unlabeled = lvmkit.make_config({"data": {"name": "npz", "path": _npz(tmp_path, "u.npz", np.random.rand(40, 6))}})
        args = ["quality", str(lvmkit.Run.create(unlabeled, tmp_path / "unlabeled").path)]
    if case == "corrupt-checkpoint":
        import shutil

        run = tmp_path / "copy"
        shutil.copytree(trained_run.path, run)
        for p in (run / "checkpoints").iterdir():
            p.write_bytes(p.read_bytes()[:100])
        args = ["evaluate", str(run)]
    code, out, err = _cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_installed_command_exits_2_without_traceback(tmp_path):
    res = run_cli("train", str(tmp_path / "missing.toml"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: Config file '{tmp_path / 'missing.toml'}' does not exist; pass the path of a TOML file such as configs/vae_digits.toml."]
    res = run_cli("train", "--no-such-option")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == ["error: No such option: --no-such-option; see 'lvmkit train --help'."]
    res = run_cli("--help")
    assert res.returncode == 0 and all(c in res.stdout for c in ("train", "evaluate", "sample", "report", "demo"))


def test_train_overwrite_replaces_an_existing_run(capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = _cli(capsys, "train", str(CONFIGS / "vae_digits.toml"), "--out", str(run), *SMOKE)
    assert code == 0, err
    (run / "eval.json").write_text("{}")  # a result of the old run
    code, _, err = _cli(capsys, "train", str(CONFIGS / "vae_digits.toml"), "--out", str(run), *SMOKE)
    assert code == 2 and "or replace it with --overwrite" in err
    code, out, err = _cli(capsys, "train", str(CONFIGS / "vae_digits.toml"), "--out", str(run), *SMOKE,
                          "--set", "model.latent_dim=3", "--overwrite")
    assert code == 0, err
    assert out.strip() == str(run) and not (run / "eval.json").exists()
    assert lvmkit.Run.open(run).config.model.latent_dim == 3 and (run / "checkpoints" / "last.pt").is_file()


def test_help_shows_the_install_extra_and_exits_0(capsys):
    code, out, _ = _cli(capsys, "simulate", "attpc", "--help")
    assert code == 0 and "lvmkit[attpc]" in out  # rich markup would swallow an unescaped [attpc]
    code, out, _ = _cli(capsys, "train", "--help")
    assert code == 0 and "--overwrite" in out


def test_ctrl_c_exits_130_with_a_hint_to_resume(capsys, monkeypatch, trained_run):
    import lvmkit.analysis.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lvmkit.analysis.evaluate, "evaluate", interrupted)
    code, _, err = _cli(capsys, "evaluate", str(trained_run.path))
    assert code == 130 and err.strip() == "interrupted; a run can be continued with 'lvmkit train --resume RUN'"
