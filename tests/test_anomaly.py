"""Anomaly detection: thresholds from normal validation data, metrics, the one-class protocol."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import lvmkit
from lvmkit import DataError
from lvmkit.analysis.anomaly import detection_metrics, thresholds_at_fpr
from lvmkit.cli import main

from conftest import CONFIGS


@pytest.mark.parametrize("rate", [0.1, 0.02, 0.002])
def test_threshold_meets_its_false_positive_rate_on_held_out_normal_data(rate):
    rng = np.random.default_rng(0)
    val, held_out = rng.gamma(2.0, size=20000), rng.gamma(2.0, size=200000)
    t = thresholds_at_fpr(val, [rate])[rate]
    assert np.mean(val > t) <= rate  # exact on the data that chose it
    fpr = np.mean(held_out > t)
    se = np.sqrt(rate * (1 - rate) / len(val))  # the threshold's own sampling error dominates
    assert abs(fpr - rate) < 4 * se + 1e-4


def test_detection_metrics_agree_with_scikit_learn_and_need_both_classes():
    rng = np.random.default_rng(1)
    lab = rng.random(1000) < 0.1
    s = rng.normal(size=1000) + 2.0 * lab
    m = detection_metrics(s, lab, {0.1: 1.28})
    assert m["auroc"] == pytest.approx(roc_auc_score(lab, s))
    assert m["at_target_fpr"]["0.1"]["tpr"] == pytest.approx(np.mean(s[lab] > 1.28))
    with pytest.raises(DataError, match=r"need both normal and anomalous test examples"):
        detection_metrics(s, np.zeros(1000, bool), {0.1: 1.0})
    with pytest.raises(DataError, match=r"must lie in \(0, 1\)"):
        thresholds_at_fpr(s, [1.5])


def test_one_class_and_anomaly_commands(tmp_path, capsys):
    out = tmp_path / "oc"
    code = main(["one-class", str(CONFIGS / "vae_digits.toml"), "--normal-class", "0", "--out", str(out),
                 "--set", "train.max_steps=150", "--set", "model.kind=ae", "--set", "model.hidden=[32]"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "one_class.json").read_text())
    assert summary["classes"] == [0] and summary["mean_auroc"] > 0.8  # zeros are easy to tell apart
    run = out / "class-0"
    cfg = lvmkit.Run.open(run)
    assert set(cfg.data().train.y.tolist()) == {0} and len(set(cfg.data().test.y.tolist())) == 10
    assert main(["anomaly", str(run), "--score", "recon", "--target-fpr", "0.1"]) == 0
    res = json.loads((run / "anomaly.json").read_text())
    assert res["validation_fpr"]["0.1"] <= 0.1 and 0 <= res["at_target_fpr"]["0.1"]["tpr"] <= 1
    assert main(["report", str(run)]) == 0
    assert "Anomaly detection" in (run / "report.html").read_text()

    # another data set: x with 0/1 labels, preprocessed like the training data
    data = lvmkit.Run.open(run).data()
    x = data.test.x.numpy()[:100]
    np.savez(tmp_path / "new.npz", x=x, y=(data.test.y.numpy()[:100] != 0).astype(int))
    assert main(["anomaly", str(run), "--data", str(tmp_path / "new.npz")]) == 0
    assert json.loads((run / "anomaly.json").read_text())["n"] == 100
    capsys.readouterr()
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 3)))
    assert main(["anomaly", str(run), "--data", str(tmp_path / "bad.npz")]) == 2
    assert "has examples of shape (3,), but the model was trained on (1, 8, 8)" in capsys.readouterr().err
    assert main(["anomaly", str(run), "--score", "ssim"]) == 2
    assert "Unknown anomaly score 'ssim'" in capsys.readouterr().err


def test_latent_knn_scores_are_small_on_normal_data_and_fitted_on_it(trained_run):
    from lvmkit.analysis.anomaly import SCORES

    model, data = trained_run.load_model(), trained_run.data()
    for name in ("latent-knn", "recon+knn"):
        scorer = SCORES.get(name)().fit(model, data.train.x, data.val.x)
        normal = scorer(model, data.test.x)
        noise = scorer(model, torch.rand_like(data.test.x) ** 0.3)  # bright noise, unlike any digit
        assert np.median(noise) > np.quantile(normal, 0.9)
    knn = SCORES.get("latent-knn")().fit(model, data.train.x, data.val.x)
    # a training example is its own nearest neighbour: its score is lower than unseen data's
    assert knn(model, data.train.x[:100]).mean() < knn(model, data.test.x).mean()
    combined = SCORES.get("recon+knn")().fit(model, data.train.x, data.val.x)
    v = combined(model, data.val.x)
    assert abs(v.mean()) < 1e-4 and abs(v.std() - np.sqrt(2 + 2 * np.corrcoef(
        SCORES.get("recon")()(model, data.val.x), knn(model, data.val.x))[0, 1])) < 0.05


def test_elbo_score_and_one_class_errors(trained_run, tmp_path):
    res = lvmkit.anomaly(trained_run, "elbo", [0.1], write=False)
    assert "auroc" not in res and res["flagged"]["0.1"] >= 0  # no normal class: scores only
    with pytest.raises(DataError, match=r"data.normal_class = 42 is not a label of the training data"):
        lvmkit.load_data(lvmkit.make_config({"data": {"normal_class": 42}}).data)
    with pytest.raises(DataError, match=r"--normal-class takes a class label or 'all'"):
        lvmkit.one_class(lvmkit.make_config({}), "shoes", tmp_path)
