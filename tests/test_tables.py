"""Tabular data as users bring it: per-feature scaling, CSV tables, the fraud lecture's protocol."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import ConfigError, DataError, LvmkitWarning
from lvmkit.data import prepare_like
from lvmkit.data.scaling import SCALERS, Scaler, fit_scaler

from conftest import run_cli, tiny_config


def _cfg(**fields):
    return lvmkit.make_config({"data": fields}).data


def _write_table(path, rng, n=600, frauds=40, columns=("Time", *[f"V{i}" for i in range(1, 5)], "Amount", "Class")):
    """A small table of the credit-card fraud layout: frauds are shifted in V1..V4 and spend more."""
    label = np.zeros(n, dtype=int)
    label[rng.choice(n, frauds, replace=False)] = 1
    v = rng.normal(size=(n, 4)) + 3.0 * label[:, None]
    amount = np.round(rng.gamma(2.0, 50.0, n) * (1 + 4 * label), 2)
    time = np.sort(rng.uniform(0, 172800, n)).round()
    rows = np.column_stack([time, v, amount, label])
    with open(path, "w") as f:
        f.write(",".join(columns) + "\n")
        for r in rows:
            f.write(",".join(f"{a:.6g}" for a in r[:-1]) + f",{int(r[-1])}\n")
    return rows


# -- scaling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["minmax", "standard", "global", "none"])
def test_scalers_round_trip_and_fit_the_training_rows_only(name):
    rng = np.random.default_rng(0)
    train = rng.normal([0.0, 1000.0, -5.0], [1.0, 300.0, 0.01], (200, 3))
    other = rng.normal([0.0, 1000.0, -5.0], [1.0, 300.0, 0.01], (50, 3)) * 2
    s = SCALERS.get(name)(train)
    np.testing.assert_allclose(s.inverse(s.transform(other)), other, rtol=1e-5, atol=1e-3)
    t = s.transform(train)
    if name == "minmax":  # every column spans exactly [0, 1] on the training rows
        np.testing.assert_allclose(t.min(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(t.max(0), 1.0, atol=1e-6)
    elif name == "standard":
        np.testing.assert_allclose(t.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(t.std(0), 1.0, atol=1e-4)
    elif name == "global":  # one range: the small column stays squashed
        assert t.min() == pytest.approx(0.0, abs=1e-6) and t.max() == pytest.approx(1.0, abs=1e-6)
        assert t[:, 2].std() < 1e-4
    else:
        np.testing.assert_array_equal(t, train.astype(np.float32))
    # the state written to RUN/scaling.json rebuilds the same map
    again = Scaler.from_state(json.loads(json.dumps(s.state())))
    np.testing.assert_array_equal(again.transform(other), s.transform(other))


def test_default_scaling_is_per_feature_for_tables_and_one_range_for_images():
    assert fit_scaler(None, np.zeros((4, 3))).name == "minmax"
    assert fit_scaler(None, np.zeros((4, 1, 2, 2), np.uint8)).name == "global"
    s = fit_scaler(None, np.array([[0, 7], [255, 9]], np.uint8).reshape(2, 1, 1, 2))
    assert float(s.shift) == 0.0 and float(s.span) == 255.0  # 8-bit images: by 255, not the range seen


def test_load_data_scales_each_column_from_the_training_split_and_counts_values_outside(tmp_path):
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0, 1, 300), rng.normal(5000, 1000, 300)])
    np.savez(tmp_path / "t.npz", x=x)
    d = lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "t.npz")), seed=2)
    tr = d.train.x.numpy()
    # per feature: both columns use their full [0, 1] range (one global range would squash column 0)
    np.testing.assert_allclose(tr.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(tr.max(0), 1.0, atol=1e-6)
    # statistics are the training split's: recover them from the raw rows of that split
    raw_train = d.scaler.inverse(tr)
    np.testing.assert_allclose(d.scaler.shift, raw_train.min(0), rtol=1e-5)
    # other splits keep their values (no silent clipping) and are counted
    for split in ("val", "test"):
        v = getattr(d, split).x.numpy()
        assert d.info["out_of_range"][split] == int(((v < 0) | (v > 1)).sum())
    assert sum(d.info["out_of_range"].values()) > 0  # 90 draws outside 210 training draws' range: some lie beyond
    z = lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "t.npz"), scale="standard"), seed=2)
    np.testing.assert_allclose(z.train.x.numpy().mean(0), 0.0, atol=1e-5)
    assert z.info["out_of_range"] == {"val": 0, "test": 0}  # z-scores have no range


def test_new_data_outside_the_training_range_warns_and_is_kept(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "t.npz", x=rng.uniform(0, 10, (100, 2)))
    d = lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "t.npz")))
    with pytest.warns(LvmkitWarning, match=r"2 values in new.npz lie outside the training data's range"):
        out = prepare_like(np.array([[20.0, 5.0], [5.0, -10.0]]), d, origin="new.npz")
    assert out[0, 0] > 1.5 and out[1, 1] < -0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_like(np.array([[5.0, 5.0]]), d)


def test_an_unknown_scaling_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.scale.*'minmax', 'standard', 'global' or 'none'"):
        lvmkit.make_config({"data": {"scale": "zscore"}})


def test_bernoulli_training_logs_the_clipped_count(tmp_path, capsys):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(400, 5)), y=rng.integers(0, 2, 400))
    cfg = tiny_config(data={"name": "npz", "path": str(tmp_path / "t.npz")},
                      model={"kind": "ae", "likelihood": "bernoulli", "latent_dim": 2, "hidden": [8]}, train={"epochs": 1})
    run = lvmkit.train(cfg, tmp_path / "r", progress=True)
    counts = json.loads((run.path / "scaling.json").read_text())["out_of_range"]
    assert counts["val"] + counts["test"] > 0
    err = capsys.readouterr().err
    assert f"val: {counts['val']} values lie outside the training range and are read clipped to [0.0, 1.0]" in err


# -- CSV tables ----------------------------------------------------------------------------------
def test_csv_table_reads_features_labels_and_drops_columns(tmp_path):
    rows = _write_table(tmp_path / "cc.csv", np.random.default_rng(0))
    d = lvmkit.load_data(_cfg(name="csv", path=str(tmp_path / "cc.csv"), label_column="Class", drop_columns=["Time"]))
    assert d.shape == (5,) and d.info["features"] == ["V1", "V2", "V3", "V4", "Amount"]
    got = np.concatenate([d.train.y, d.val.y, d.test.y])
    assert sorted(got.tolist()) == sorted(rows[:, -1].astype(int).tolist())
    # the raw Amount column comes back through the stored scaling
    amounts = d.scaler.inverse(np.concatenate([d.train.x, d.val.x, d.test.x]))[:, 4]
    np.testing.assert_allclose(np.sort(amounts), np.sort(rows[:, 5]), rtol=1e-5)


def test_csv_string_labels_are_mapped_and_kept(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("a,b,kind\n" + "".join(f"{i},{i % 3},{['cat', 'ant', 'bee'][i % 3]}\n" for i in range(30)))
    d = lvmkit.load_data(_cfg(name="csv", path=str(p), label_column="kind"))
    assert d.class_names == ["ant", "bee", "cat"]
    x = d.scaler.inverse(d.train.x.numpy())
    # kind 'cat' is i % 3 == 0, so b == 0 wherever the label is 2
    assert np.all(x[d.train.y.numpy() == 2, 1] == 0) and np.all(x[d.train.y.numpy() == 0, 1] == 1)


@pytest.mark.parametrize("fields, text, message", [
    ({"label_column": "Label"}, "a,b\n1,2\n3,4\n5,6\n", r"data.label_column names \['Label'\], which .* does not have; its columns are \['a', 'b'\]"),
    ({"drop_columns": ["c"]}, "a,b\n1,2\n3,4\n5,6\n", r"data.drop_columns names \['c'\]"),
    ({}, "a,b\n1,2\n3,x\n5,6\n", r"Column 'b' of .* holds 'x' on line 3, not a number; fix the file, or list the column in data.drop_columns"),
    ({}, "a,b\n1,2\n3,\n5,6\n", r"Column 'b' of .* holds an empty cell on line 3"),
    ({}, "a,b\n1,2\n3\n5,6\n", r"Line 3 of .* has 1 cells but the header has 2"),
    ({"label_column": "b"}, "a,b\n1,2.5\n3,1\n5,6\n", r"Label column 'b' .* non-integer numbers"),
])
def test_csv_bad_input(tmp_path, fields, text, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        lvmkit.load_data(_cfg(name="csv", path=str(p), **fields))


# -- the fraud lecture's protocol ----------------------------------------------------------------
def test_anomaly_split_sends_every_anomaly_to_the_test_set(tmp_path):
    rows = _write_table(tmp_path / "cc.csv", np.random.default_rng(5), n=1000, frauds=37)
    d = lvmkit.load_data(_cfg(name="csv", path=str(tmp_path / "cc.csv"), label_column="Class", normal_class=0,
                              anomaly_split=True, test_fraction=0.5, val_fraction=0.05))
    assert int((d.test.y == 1).sum()) == 37 and int((d.train.y == 1).sum()) == 0 and int((d.val.y == 1).sum()) == 0
    n_normal = int((rows[:, -1] == 0).sum())
    assert int((d.test.y == 0).sum()) == round(0.5 * n_normal)  # the other half of the normal data
    assert len(d.train) + len(d.val) + int((d.test.y == 0).sum()) == n_normal
    with pytest.raises(ConfigError, match=r"data.anomaly_split .* data.normal_class is not set"):
        lvmkit.load_data(_cfg(name="csv", path=str(tmp_path / "cc.csv"), label_column="Class", anomaly_split=True))


def test_fraud_lecture_pipeline_end_to_end(tmp_path):
    _write_table(tmp_path / "cc.csv", np.random.default_rng(6), n=1600, frauds=60)
    out = tmp_path / "fraud"
    r = run_cli("train", "configs/fraud_lecture.toml", "--out", str(out), "--set", f"data.path={tmp_path / 'cc.csv'}",
                "--set", "train.epochs=20", "--set", "train.batch_size=128", "--set", "train.patience=0")
    assert r.returncode == 0, r.stderr
    r = run_cli("anomaly", str(out), "--score", "recon")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "anomaly.json").read_text())
    assert res["auroc"] > 0.85  # frauds are 3 sigma away in four features (a broken pipeline scores ~0.5)
    for rate, at in res["at_target_fpr"].items():
        c = at["confusion"]
        assert c["fn"] + c["tp"] == 60 and c["tn"] + c["fp"] == 770  # half of the 1540 normal rows
        assert at["tpr"] == pytest.approx(c["tp"] / 60) and at["fpr"] == pytest.approx(c["fp"] / 770)
    r = run_cli("report", str(out))
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "called anomalous" in html and "target FPR 0.1" in html


def test_sample_in_data_units(tmp_path):
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "t.npz", x=np.column_stack([rng.normal(0, 1, 300), rng.normal(340, 20, 300)]))
    cfg = tiny_config(data={"name": "npz", "path": str(tmp_path / "t.npz")},
                      model={"kind": "vae", "likelihood": "gaussian", "latent_dim": 1, "hidden": [16]}, train={"epochs": 5})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False)
    model_units = lvmkit.sample(run, 200, seed=1)
    data_units = lvmkit.sample(run, 200, seed=1, units="data")
    scaler = run.scaler()
    np.testing.assert_allclose(data_units, scaler.inverse(model_units), rtol=1e-6)
    assert 200 < data_units[:, 1].mean() < 500 and abs(model_units[:, 1].mean()) < 2
    r = run_cli("sample", str(run.path), "--n", "5", "--units", "data", "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(tmp_path / "s.csv", delimiter=","), lvmkit.sample(run, 5, units="data"), rtol=1e-4)
    r = run_cli("sample", str(run.path), "--units", "pixels", "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 2 and "Sample units must be 'model' or 'data', got 'pixels'" in r.stderr
