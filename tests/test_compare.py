"""lvmkit compare: one row per run holding exactly what each run stored (parameters, training
time, estimators), absent figures named with their command, seeded grids, one data set."""
from __future__ import annotations

import io
import json
import os
import re
import shutil

import numpy as np
import pytest

import lvmkit
from lvmkit.cli import main

from conftest import tiny_config

_TRAIN = {"epochs": 2, "batch_size": 128, "patience": 0, "device": "cpu"}
_GAN = {"kind": "gan", "latent_dim": 4, "generator": {"channels": [8, 4]}, "discriminator": {"channels": [4, 8]}}
_DDPM = {"kind": "ddpm", "timesteps": 20, "channels": [8, 16], "sampler": "ddim", "sample_steps": 5}
_EMA = {"ema_decay": 0.99, "ema_start": 0}  # a moving average that differs from the raw weights


def _train(model: dict, out, train=None, **data):
    cfg = lvmkit.make_config({"data": {"name": "digits", **data}, "model": model, "train": {**_TRAIN, **(train or {})}})
    return lvmkit.train(cfg, out, progress=False, report=False)


def _grid_png(samples) -> bytes:
    from lvmkit.report.figures import save_grid_png

    buf = io.BytesIO()
    save_grid_png(samples, buf, ncols=4)
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE (evaluated, probed), a GAN (with a stored quality.json of a record without weights)
    and a DDPM with EMA weights (evaluated; its quality measured on the raw weights with DDIM 4)."""
    root = tmp_path_factory.mktemp("compare")
    vae = lvmkit.train(tiny_config(train={"epochs": 2, "batch_size": 128}), root / "vae", progress=False, report=False)
    gan = _train(_GAN, root / "gan")
    ddpm = _train(_DDPM, root / "ddpm", train=_EMA)
    lvmkit.evaluate(vae, k=5)
    lvmkit.evaluate(ddpm)
    lvmkit.probe(vae, [5], repeats=2, baselines=False)
    # What lvmkit quality stores (its feature classifier is too slow to train here; test_quality covers it).
    floor = {"frechet_distance": 1.5, "precision": 0.9, "recall": 0.8}
    gan.write_json("quality.json", {"frechet_distance": 12.5, "precision": 0.25, "recall": 0.5, "n_generated": 400,
                                    "n_reference": 359, "floor": floor})
    # as `lvmkit quality --weights raw --sampler ddim --steps 4` records its choice
    ddpm.write_json("quality.json", {"frechet_distance": 38.0, "precision": 0.5, "recall": 0.4, "n_generated": 400,
                                     "n_reference": 359, "floor": floor, "weights": "raw",
                                     "sampler": {"name": "ddim", "steps": 4, "eta": None}})
    return {"vae": vae, "gan": gan, "ddpm": ddpm}


def test_each_row_holds_what_its_run_stored(runs, tmp_path):
    res = lvmkit.compare(list(runs.values()), tmp_path / "cmp", n_time=20)
    rows = {row["name"]: row for row in res["runs"]}
    assert list(rows) == ["vae", "gan", "ddpm"]
    assert [(r["family"], r["kind"]) for r in rows.values()] == [("autoencoder", "vae"), ("gan", "gan"), ("ddpm", "ddpm")]
    for name, run in runs.items():
        row, metrics = rows[name], run.read_metrics()
        assert row["parameters"] == sum(p.numel() for p in run.load_model().parameters())
        assert row["training"] == {"seconds": sum(m["seconds"] for m in metrics), "epochs": 2, "steps": metrics[-1]["step"]}
        assert row["sampling"]["n_timed"] == 20 and row["sampling"]["seconds_per_1000"] > 0
    assert rows["gan"]["parameters_by_part"].keys() == {"generator", "discriminator"}
    assert rows["ddpm"]["sampling"]["sampler"] == {"name": "ddim", "steps": 4, "eta": 0.0}  # the quality's sampler
    assert rows["gan"]["sampling"]["sampler"] == "one pass (no sampler)"

    ev_vae, ev_ddpm = runs["vae"].read_json("eval.json"), runs["ddpm"].read_json("eval.json")
    assert rows["vae"]["likelihood"]["estimator"] == "IWAE, k = 5" and rows["vae"]["likelihood"]["nll"] == ev_vae["nll"]
    assert rows["vae"]["likelihood"]["vlb"]["nll"] == -ev_vae["test_elbo"]
    lik = rows["ddpm"]["likelihood"]
    assert lik["estimator"] == ev_ddpm["bound_estimator"] == "VLB over all T = 20 terms"
    assert (lik["nll"], lik["bits_per_dim"], lik["unit"]) == (ev_ddpm["nll_bound"], ev_ddpm["bits_per_dim"], "nats per example")
    assert rows["gan"]["likelihood"] == "not available: the gan model has no likelihood"

    assert rows["gan"]["quality"]["frechet_distance"] == 12.5 and rows["gan"]["quality"]["floor"]["recall"] == 0.8
    assert rows["vae"]["quality"] == f"not computed: run lvmkit quality {runs['vae'].path}"
    stored = runs["vae"].read_json("probe.json")["results"]["latent"]["5"]["macro_f1"]
    assert rows["vae"]["probe"]["macro_f1"] == {"5": stored} and rows["vae"]["probe"]["width"] == 2
    assert rows["gan"]["probe"] == "not available: the gan model has no encoder"
    assert not res["notes"][:-1] and "observation model" in res["notes"][-1]  # two likelihoods, one data setup

    out = tmp_path / "cmp"
    assert json.loads((out / "compare.json").read_text()) == res
    page = (out / "compare.html").read_text()
    for name, run in runs.items():
        assert f"<th>{name}</th>" in page and str(run.path) in page
        assert (out / rows[name]["sample_grid"]).is_file()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3
    assert "IWAE, k = 5" in page and "VLB over all T = 20 terms" in page


def test_grids_are_seeded(runs, tmp_path):
    grids = []
    for seed, out in ((0, "a"), (0, "b"), (1, "c")):
        row = lvmkit.compare([runs["ddpm"]], tmp_path / out, n_time=5, seed=seed)["runs"][0]
        grids.append((tmp_path / out / row["sample_grid"]).read_bytes())
    assert grids[0] == grids[1] != grids[2]


def test_same_data_set_required(runs, tmp_path):
    x = lvmkit.load_data(lvmkit.DataConfig(), 0).train.x.numpy()  # the digits, as a user's npz file
    np.savez(tmp_path / "digits.npz", x=x)
    npz = lvmkit.train(tiny_config(data={"name": "npz", "path": str(tmp_path / "digits.npz")}, train={"epochs": 1}),
                       tmp_path / "npz", progress=False, report=False)
    with pytest.raises(lvmkit.ConfigError, match=r"one data set, but vae, gan use 'digits' and npz uses 'npz' from .*digits\.npz"):
        lvmkit.compare([runs["vae"], runs["gan"], npz], tmp_path / "cmp", n_time=5)

    # A subset of the same data set is the same data set: compared, with a note; so is an
    # evaluation the run has trained past.
    small = lvmkit.train(tiny_config(data={"limit": 600}, train={"epochs": 1}), tmp_path / "small", progress=False, report=False)
    small.write_json("eval.json", {"n_test": 120})
    os.utime(small.path / "eval.json", (0, 0))
    notes = lvmkit.compare([runs["vae"], small], tmp_path / "cmp", n_time=5)["notes"]
    assert any(n.startswith("data.limit differs (vae: None, small: 600)") for n in notes)
    assert f"small: eval.json is older than the checkpoint (trained on since?); rerun lvmkit evaluate {small.path}." in notes


def test_bad_arguments(tmp_path):
    with pytest.raises(lvmkit.ConfigError, match="at least one run directory, got none"):
        lvmkit.compare([], tmp_path)
    with pytest.raises(lvmkit.ConfigError, match=r"number of samples to time \(n_time, --n-time\) must be positive, got 0"):
        lvmkit.compare([tmp_path], tmp_path, n_time=0)


def test_cli(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs["gan"].path), str(runs["vae"].path), "--out", str(out), "--n-time", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "compare.html")
    assert [r["name"] for r in json.loads((out / "compare.json").read_text())["runs"]] == ["gan", "vae"]

    assert main(["compare", str(runs["gan"].path), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Run directory") and "missing' does not exist" in err and "\n" not in err


def test_each_figure_names_its_weights_and_sampler_and_the_grid_uses_them(runs, tmp_path):
    # The DDPM's quality was measured on its raw weights with DDIM 4, while the run's default is
    # its EMA weights with DDIM 5: its grid and timing follow the stored quality, and each cell says so.
    ddpm = runs["ddpm"]
    ema = tmp_path / "ddpm-ema"
    shutil.copytree(ddpm.path, ema)  # the same run, its quality measured on the EMA weights
    q = ddpm.read_json("quality.json")
    lvmkit.Run.open(ema).write_json("quality.json", {**q, "weights": "ema"})
    res = lvmkit.compare([runs["vae"], runs["gan"], ddpm, ema], tmp_path / "cmp", n_time=2)
    rows = {row["name"]: row for row in res["runs"]}
    ddim4 = {"name": "ddim", "steps": 4, "eta": 0.0}
    assert (rows["ddpm"]["quality"]["weights"], rows["ddpm"]["quality"]["sampler"]) == ("raw", ddim4)
    assert (rows["ddpm"]["sampling"]["weights"], rows["ddpm"]["sampling"]["sampler"]) == ("raw", ddim4)
    assert (rows["ddpm-ema"]["quality"]["weights"], rows["ddpm-ema"]["sampling"]["weights"]) == ("ema", "ema")
    # A record without weights from a run that kept an EMA: not recorded, never guessed; a GAN
    # draws in one pass; a run without an EMA has only raw weights.
    assert (rows["gan"]["quality"]["weights"], rows["gan"]["quality"]["sampler"]) == ("raw", "one pass (no sampler)")
    assert rows["ddpm"]["likelihood"]["weights"] == "not recorded"
    assert rows["vae"]["likelihood"]["weights"] == rows["vae"]["probe"]["weights"] == "raw"
    assert any(n.startswith("The sample quality of the runs comes from different weights (gan: raw, ddpm: raw, "
                            "ddpm-ema: ema)") for n in res["notes"])

    # The grids are the very samples the stored numbers were measured on (seed 0).
    raw = _grid_png(lvmkit.sample(ddpm, 16, seed=0, weights="raw", sampler="ddim", steps=4))
    averaged = _grid_png(lvmkit.sample(ddpm, 16, seed=0, weights="ema", sampler="ddim", steps=4))
    default = _grid_png(lvmkit.sample(ddpm, 16, seed=0))  # the run's default: EMA, DDIM 5
    assert len({raw, averaged, default}) == 3
    out = tmp_path / "cmp"
    assert (out / rows["ddpm"]["sample_grid"]).read_bytes() == raw
    assert (out / rows["ddpm-ema"]["sample_grid"]).read_bytes() == averaged

    page = (out / "compare.html").read_text()
    cells = {m[0]: re.findall(r"<td>(.*?)</td>", m[1]) for m in re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", page)}
    fd = cells["Frechet distance (lower is better)"]
    assert fd[1].endswith("one pass (no sampler)</small>") and "raw weights" in fd[1]
    assert fd[2].endswith("raw weights; sampler ddim, 4 steps, eta 0</small>")
    assert fd[3].endswith("ema weights; sampler ddim, 4 steps, eta 0</small>")
    grids = cells["samples (seed 0)"]
    assert grids[2].endswith("raw weights; sampler ddim, 4 steps, eta 0</small>") and "ema weights" in grids[3]
    assert "weights not recorded" in cells["test NLL or its bound (lower is better)"][2]


def test_data_scale_is_the_resolved_scaling(tmp_path):
    # Digits as 0..16 grey levels in a file: the default image scaling, global, divides by 16.
    x = lvmkit.load_data(lvmkit.DataConfig(), 0).train.x.numpy() * 16
    np.savez(tmp_path / "pixels.npz", x=x)
    data = {"name": "npz", "path": str(tmp_path / "pixels.npz")}
    runs = [lvmkit.train(tiny_config(data={**data, **extra}, train={"epochs": 1}), tmp_path / name, progress=False,
                         report=False) for name, extra in (("unset", {}), ("global", {"scale": "global"}),
                                                           ("minmax", {"scale": "minmax"}))]
    res = lvmkit.compare(runs[:2], tmp_path / "same", n_time=2)
    scales = [row["data_scale"] for row in res["runs"]]
    assert scales[0] == {"name": "global", "configured": None, "shift": 0.0, "span": 16.0}
    assert scales[1] == {**scales[0], "configured": "global"}
    assert not any(n.startswith("data.scale") for n in res["notes"])  # one scaling, set or by default
    page = (tmp_path / "same" / "compare.html").read_text()
    assert "global: (x &minus; 0) / 16<br><small>unset: the default for this data" in page

    res = lvmkit.compare([runs[0], runs[2]], tmp_path / "differ", n_time=2)
    assert res["runs"][1]["data_scale"] == {"name": "minmax", "configured": "minmax", "per_feature": 64}
    assert any(n.startswith("data.scale differs (unset: global, minmax: minmax)") for n in res["notes"])
