"""Anomaly detection: thresholds from normal validation data, metrics, the one-class protocol."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import lvmkit
from lvmkit import DataError, LvmkitWarning
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


def test_thresholds_and_rates_equal_hand_counts():
    val = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0, 3.5, 8.0, 7.0])  # sorted: 1 1.5 2.6 3 3.5 4 5 7 8 9
    thr = thresholds_at_fpr(val, [0.2, 0.25, 0.5])
    # at most floor(r n) of the 10 normal scores may lie above: 2, 2 and 5 of them
    assert thr == {0.2: 7.0, 0.25: 7.0, 0.5: 3.5}
    test = np.array([0.5, 7.0, 7.5, 3.6, 10.0, 2.0, 8.5, 3.5])
    lab = np.array([0, 1, 1, 0, 1, 0, 1, 1], bool)
    m = detection_metrics(test, lab, thr)
    # threshold 7: flagged (strictly above) are 7.5, 10, 8.5, all anomalies: TPR 3/5, FPR 0/3
    assert m["at_target_fpr"]["0.2"] == {"threshold": 7.0, "tpr": 3 / 5, "fpr": 0.0,
                                         "confusion": {"tn": 3, "fp": 0, "fn": 2, "tp": 3}}
    # threshold 3.5: flagged 7, 7.5, 3.6, 10, 8.5: anomalies 4 of 5, normals 1 (3.6) of 3
    assert m["at_target_fpr"]["0.5"] == {"threshold": 3.5, "tpr": 4 / 5, "fpr": 1 / 3,
                                         "confusion": {"tn": 2, "fp": 1, "fn": 1, "tp": 4}}
    # AUROC by pair counting: of 5 x 3 (anomaly, normal) pairs the anomaly scores higher in 14
    # (3.5 < 3.6 is the one it loses)
    assert m["auroc"] == pytest.approx(14 / 15) and m["anomaly_fraction"] == 5 / 8


def test_a_target_rate_below_one_over_n_warns_and_gives_the_largest_score():
    val = np.arange(10.0)
    with pytest.warns(LvmkitWarning, match=r"Target false-positive rate 0.05 is below 1/10, the smallest rate 10 normal "
                                           r"validation examples can resolve.*at least 0.1"):
        assert thresholds_at_fpr(val, [0.05]) == {0.05: 9.0}
    assert thresholds_at_fpr(val, [0.1]) == {0.1: 8.0}  # 1/n itself: no warning (warnings are errors here)


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


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


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
    # brute force: the squared reconstruction errors, the validation quantile, the counts above it
    model, data = cfg.load_model(), cfg.data()
    err = lambda x: ((model.reconstruct(x) - x) ** 2).flatten(1).sum(1).detach().numpy()  # noqa: E731
    val, test = np.sort(err(data.val.x)), err(data.test.x)
    t = val[len(val) - int(0.1 * len(val)) - 1]
    anomalous = data.test.y.numpy() != 0
    assert res["thresholds"]["0.1"] == pytest.approx(t, rel=1e-5)
    assert res["flagged"]["0.1"] == int(np.sum(test > t))
    assert res["at_target_fpr"]["0.1"]["tpr"] == pytest.approx(np.sum(test[anomalous] > t) / anomalous.sum())
    assert res["validation_fpr"]["0.1"] == pytest.approx(np.mean(val > t)) and res["validation_fpr"]["0.1"] <= 0.1
    assert main(["report", str(run)]) == 0
    assert "Anomaly detection" in (run / "report.html").read_text()

    # another data set: x with 0/1 labels, preprocessed like the training data
    data = lvmkit.Run.open(run).data()
    x = data.test.x.numpy()[:100]
    np.savez(tmp_path / "new.npz", x=x, y=(data.test.y.numpy()[:100] != 0).astype(int))
    assert main(["anomaly", str(run), "--data", str(tmp_path / "new.npz")]) == 0
    assert json.loads((run / "anomaly.json").read_text())["n"] == 100
    # class labels need --anomaly-label: digit 3 is the anomaly, every other digit normal
    y = data.test.y.numpy()[:100]
    np.savez(tmp_path / "classes.npz", x=x, y=y)
    capsys.readouterr()
    assert main(["anomaly", str(run), "--data", str(tmp_path / "classes.npz"), "--anomaly-label", "3", "--target-fpr", "0.1"]) == 0
    assert capsys.readouterr().err == ""
    res = json.loads((run / "anomaly.json").read_text())
    assert res["anomaly_fraction"] == pytest.approx(np.mean(y == 3))
    assert res["auroc"] == pytest.approx(lvmkit.anomaly(run, "recon", [0.1], data_file=tmp_path / "classes.npz", anomaly_label=3,
                                                        write=False)["auroc"])
    # a rate the few normal validation examples cannot resolve: a one-line warning, and on it goes
    assert main(["anomaly", str(run), "--target-fpr", "0.001"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: Target false-positive rate 0.001 is below 1/")
    capsys.readouterr()
    with pytest.raises(DataError, match=r"has no labels y for anomaly label 3 to mark"):
        lvmkit.anomaly(run, data_file=_save(tmp_path / "x-only.npz", x=x), anomaly_label=3, write=False)
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
    assert "auroc" not in res  # no normal class: scores only
    # the ELBO's posterior draws are seeded by the run: every call gives the same numbers,
    # whatever the global random state
    torch.manual_seed(123)
    assert lvmkit.anomaly(trained_run, "elbo", [0.1], write=False) == res
    assert res["validation_fpr"]["0.1"] <= 0.1 and res["flagged"]["0.1"] > 0
    with pytest.raises(DataError, match=r"applies to the labels y of a --data file, but none was given"):
        lvmkit.anomaly(trained_run, "recon", [0.1], anomaly_label=3, write=False)
    with pytest.raises(DataError, match=r"data.normal_class = 42 is not a label of the data"):
        lvmkit.load_data(lvmkit.make_config({"data": {"normal_class": 42}}).data)
    with pytest.raises(DataError, match=r"--normal-class takes a class label or 'all'"):
        lvmkit.one_class(lvmkit.make_config({}), "shoes", tmp_path)


def _tiny_run(tmp_path, name, model, **data):
    cfg = lvmkit.make_config({"data": {"name": "digits", "limit": 300, **data}, "model": model,
                              "train": {"epochs": 1, "batch_size": 64, "patience": 0, "device": "cpu"}})
    return lvmkit.train(cfg, tmp_path / name, progress=False, report=False)


def test_each_score_asks_for_what_it_calls(tmp_path, capsys):
    """--score elbo of a DDPM is its variational bound; of an RBM (no bound) a one-line refusal
    naming the scores an RBM supports; --score energy of an RBM is its free energy."""
    ddpm = _tiny_run(tmp_path, "ddpm", {"kind": "ddpm", "timesteps": 10, "channels": [8]})
    res = lvmkit.anomaly(ddpm, "elbo", [0.1], write=False)
    # the score is minus the bound per example, 10 draws each: over the test split its mean is the
    # bound that lvmkit evaluate computes (one draw per term, its own noise) within a few standard errors
    model, test = ddpm.load_model(), ddpm.data().test
    from lvmkit.analysis.anomaly import SCORES

    scores = SCORES.get("elbo")()(model, test.x)
    ev = lvmkit.evaluate(ddpm, write=False)
    assert scores.shape == (len(test),) and res["n"] == len(test)
    assert abs(scores.mean() - ev["nll_bound"]) < 4 * ev["nll_bound_se"] + 0.05 * abs(ev["nll_bound"])

    rbm = _tiny_run(tmp_path, "rbm", {"kind": "rbm", "hidden": 6, "sample_steps": 5}, binarize="static")
    capsys.readouterr()
    assert main(["anomaly", str(rbm.path), "--score", "elbo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: The 'elbo' anomaly score needs a model that is a variational model (an evidence lower bound on "
                   "log p(x)), but this RBM is not (its capabilities: encoder, generator, iterative-sampler, density, "
                   "energy, filters); the scores this RBM supports are energy, latent-knn."]
    model, x = rbm.load_model(), rbm.data().test.x
    w, a, b = model.layer.W, model.layer.a, model.layer.b
    flat = x.reshape(len(x), -1)
    # F(v) = -a.v - sum_j log(1 + exp(b_j + (v W)_j)) (Hinton 2010, eq. 3 of "A practical guide")
    free = -(flat @ a) - torch.nn.functional.softplus(flat @ w + b).sum(1)
    np.testing.assert_allclose(SCORES.get("energy")()(model, x), free.detach().numpy(), rtol=1e-5, atol=1e-4)


def test_a_deterministic_autoencoder_has_no_bound_and_says_why(tmp_path):
    ae = _tiny_run(tmp_path, "ae", {"kind": "ae", "latent_dim": 2, "hidden": [16]})
    with pytest.raises(lvmkit.ConfigError, match=r"The 'elbo' anomaly score needs a model that is a variational model .* "
                                                 r"this Autoencoder is not \(its encoder is deterministic, so it has no "
                                                 r"posterior to bound log p\(x\) with .*; the scores this Autoencoder "
                                                 r"supports are latent-knn, recon, recon\+knn\."):
        lvmkit.anomaly(ae, "elbo", write=False)


def test_thresholds_need_normal_validation_examples():
    with pytest.raises(DataError, match=r"the validation split is empty; set data.val_fraction above 0"):
        thresholds_at_fpr(np.array([]), [0.1])
