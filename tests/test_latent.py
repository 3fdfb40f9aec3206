"""Latent-space analysis: the encoder as a transformer, probes, clustering metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.pipeline import Pipeline

import lvmkit
from lvmkit import DataError, LatentEncoder, cluster_metrics, hungarian_accuracy
from lvmkit.cli import main
from lvmkit.analysis.probe import run_probe, stratified_draw


def test_hungarian_accuracy_of_a_permuted_labelling_is_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    perm = rng.permutation(6)
    assert hungarian_accuracy(y, perm[y]) == 1.0
    noisy = perm[y].copy()
    noisy[:30] = (noisy[:30] + 1) % 6
    assert hungarian_accuracy(y, noisy) == pytest.approx(1 - np.mean(noisy[:30] != perm[y][:30]) * 30 / 300)


def test_cluster_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 500), rng.integers(0, 5, 500)
    m = cluster_metrics(y, p)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y, p))
    assert m["ari"] == pytest.approx(adjusted_rand_score(y, p))
    # purity by brute force: the largest class count in each cluster over the cluster's size
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(y, p)  # (classes, clusters)
    assert m["purity"] == pytest.approx((table.max(0) / table.sum(0)).tolist())
    assert m["majority_class"] == table.argmax(0).tolist() and m["sizes"] == table.sum(0).tolist()
    # brute force over all maps of 5 clusters to distinct... classes: ACC is the best matching
    from itertools import permutations

    best = max(sum(np.sum((p == c) & (y == perm[c])) for c in range(4)) for perm in permutations(range(5), 4))
    assert m["acc"] >= best / 500 - 1e-12


def test_purity_of_a_small_assignment_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([5, 5, 5, 7, 7, 9])  # clusters {0, 0, 1}, {1, 1}, {2}
    m = cluster_metrics(y, p)
    assert m["purity"] == [2 / 3, 1.0, 1.0] and m["majority_class"] == [0, 1, 2] and m["sizes"] == [3, 2, 1]
    assert m["acc"] == pytest.approx(5 / 6)  # 5 -> 0, 7 -> 1, 9 -> 2: one example off


def test_probe_on_separable_codes_reaches_f1_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 4))
    ytr, yte = np.repeat(np.arange(3), 50), np.repeat(np.arange(3), 40)
    ztr, zte = centres[ytr] + rng.normal(size=(150, 4)), centres[yte] + rng.normal(size=(120, 4))
    res = run_probe({"z": ztr}, {"z": zte}, ytr, yte, labels=[5], repeats=3)
    assert res["z"]["5"]["macro_f1"]["mean"] > 0.99
    noise = {"z": rng.normal(size=(150, 4))}, {"z": rng.normal(size=(120, 4))}
    assert run_probe(*noise, ytr, yte, labels=[5], repeats=3)["z"]["5"]["macro_f1"]["mean"] < 0.6


def test_stratified_draw_and_too_few_labels():
    y = np.array([0] * 10 + [1] * 3)
    idx = stratified_draw(y, 3, np.random.default_rng(0))
    assert sorted(y[idx].tolist()) == [0, 0, 0, 1, 1, 1] and len(set(idx)) == 6
    with pytest.raises(DataError, match=r"Class 1 has only 3 labelled training examples, fewer than the 5 per class"):
        stratified_draw(y, 5, np.random.default_rng(0))


def test_latent_encoder_gives_posterior_means_and_composes_in_a_pipeline(trained_run):
    data = trained_run.data()
    enc = LatentEncoder(trained_run.path)
    z = enc.fit_transform(data.test.x.numpy())
    assert z.shape == (len(data.test), 2)
    np.testing.assert_allclose(z, trained_run.load_model().embed(data.test.x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc.transform(data.test.x.numpy().reshape(len(data.test), -1)), z, rtol=1e-6)
    pipe = Pipeline([("enc", LatentEncoder(trained_run.path)), ("clf", LogisticRegression(max_iter=500))])
    pipe.fit(data.train.x.numpy(), data.train.y.numpy())
    manual = LogisticRegression(max_iter=500).fit(enc.transform(data.train.x.numpy()), data.train.y.numpy())
    np.testing.assert_array_equal(pipe.predict(data.test.x.numpy()), manual.predict(z))
    assert pipe.score(data.test.x.numpy(), data.test.y.numpy()) > 0.2  # chance is 0.1 for this briefly trained VAE
    with pytest.raises(DataError, match=r"expects examples of shape \(1, 8, 8\).*got an array of shape \(3, 5\)"):
        enc.transform(np.zeros((3, 5)))


def test_probe_and_cluster_commands(trained_run, capsys, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    assert main(["probe", str(run), "--labels", "5,20", "--repeats", "2"]) == 0
    probe = lvmkit.Run.open(run).read_json("probe.json")
    assert set(probe["results"]) == {"latent", "raw", "pca"} and probe["labels"] == [5, 20]
    assert main(["cluster", str(run), "--k", "10"]) == 0
    res = lvmkit.Run.open(run).read_json("cluster.json")["results"]
    assert 0 < res["latent"]["acc"] <= 1 and np.array(res["latent"]["confusion"]).sum() == 359
    assert main(["cluster", str(run), "--k", "10", "--method", "gmm"]) == 0
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Few-label probes" in html and "Clustering" in html
    capsys.readouterr()
    assert main(["cluster", str(run), "--k", "5000"]) == 2
    assert "Cannot form 5000 clusters from 359 examples" in capsys.readouterr().err
    assert main(["probe", str(run), "--labels", "1000"]) == 2
    assert "fewer than the 1000 per class asked for" in capsys.readouterr().err
    # the default budgets on a small data set: those it cannot supply are skipped and noted
    y = lvmkit.Run.open(run).data().train.y.numpy()
    smallest = int(np.bincount(y).min())
    assert 100 < smallest < 1000
    assert main(["probe", str(run), "--repeats", "1"]) == 0
    probe = lvmkit.Run.open(run).read_json("probe.json")
    assert probe["labels"] == [10, 100] and set(probe["results"]["latent"]) == {"10", "100"}
    assert probe["skipped"] == {"1000": f"class {int(np.bincount(y).argmin())} has only {smallest} labelled training examples"}
    assert capsys.readouterr().err.strip() == f"skipped 1000 labels/class: {probe['skipped']['1000']}"
    assert main(["cluster", str(run), "--method", "dbscan"]) == 2
    assert "Unknown clustering method 'dbscan'" in capsys.readouterr().err


def test_metrics_without_labels_is_an_error(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.random.default_rng(0).random((80, 6)))
    from conftest import tiny_config

    run = lvmkit.train(tiny_config(data={"name": "npz", "path": str(tmp_path / "u.npz")}), tmp_path / "r", progress=False)
    with pytest.raises(DataError, match=r"Clustering metrics need labels"):
        lvmkit.cluster(run, 3, metrics=True)
    assert "acc" not in lvmkit.cluster(run, 3)["results"]["latent"]
    with pytest.raises(DataError, match=r"has no labels, so probe metrics cannot be computed"):
        lvmkit.probe(run, [5])


def test_thesis_protocol_labels_fifteen_percent_of_each_training_class_split_70_30(trained_run, capsys, tmp_path):
    import shutil

    from lvmkit.analysis.probe import probe_thesis, thesis_split

    shutil.copytree(trained_run.path, tmp_path / "run")
    trained_run = lvmkit.Run.open(tmp_path / "run")  # a copy: the session's run stays read-only

    y = np.repeat(np.arange(3), [100, 40, 7])
    tr, te = thesis_split(y, 0.15, 0.3, np.random.default_rng(0))
    assert len(set(tr) & set(te)) == 0
    for c, n in zip(range(3), (15, 6, 2)):  # 15% of each class (at least 2), 30% of those for testing
        assert (y[tr] == c).sum() + (y[te] == c).sum() == n
        assert (y[te] == c).sum() == min(max(1, round(0.3 * n)), n - 1)
    res = probe_thesis(trained_run, repeats=3)
    n_train = len(trained_run.data().train)
    assert res["n_classifier_train"] + res["n_classifier_test"] == pytest.approx(0.15 * n_train, abs=10)
    assert res["split"] == "train" and len(res["results"]["latent"]["f1"]["mean"]) == 10
    assert json.loads((trained_run.path / "probe_thesis.json").read_text())["protocol"] == "thesis"
    assert main(["probe", str(trained_run.path), "--protocol", "thesis", "--repeats", "2"]) == 0
    assert "thesis protocol  macro f1" in capsys.readouterr().out
    assert main(["probe", str(trained_run.path), "--protocol", "half"]) == 2
    assert "Unknown probe protocol 'half'" in capsys.readouterr().err
    assert "thesis protocol: 15% of each training class labelled" in lvmkit.write_report(trained_run).read_text()


def test_new_data_outside_the_training_range_is_counted_in_a_warning(trained_run):
    """lvmkit's digits are scikit-learn's pixels / 16: the raw pixels are 16x outside the
    training range, and LatentEncoder says how many values are, keeping them as they are."""
    import warnings

    from sklearn.datasets import load_digits

    raw = load_digits().data[:50]
    enc = LatentEncoder(trained_run).fit()
    outside = int(np.count_nonzero(raw > 1))  # the training range is [0, 1]; raw pixels run 0..16
    assert outside > 0
    with pytest.warns(lvmkit.LvmkitWarning, match=rf"^{outside} of {raw.size} values passed to LatentEncoder lie outside "
                                                 r"the training data's range .* pixels / 16"):
        z_raw = enc.transform(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scaled as the run's digits are: no warning
        z = enc.transform(raw / 16)
    scaled = torch.as_tensor(raw / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    np.testing.assert_allclose(z, trained_run.load_model().embed(scaled).numpy(), rtol=1e-6)
    assert not np.allclose(z_raw, z)  # kept, not clipped: the raw pixels give other codes
    # the run's own splits are in range: probe and cluster read them without a warning
    quiet = LatentEncoder(trained_run, warn_out_of_range=False).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.transform(raw)


def test_embed_takes_arrays_like_tensors_and_says_what_it_takes(trained_run):
    model = trained_run.load_model()
    x = trained_run.data().test.x[:5]
    codes = model.embed(x)
    torch.testing.assert_close(model.embed(x.numpy()), codes, rtol=0, atol=0)
    torch.testing.assert_close(model.embed(x.numpy().astype(np.float64)), codes, rtol=0, atol=0)  # the model's dtype
    with pytest.raises(TypeError, match=r"embed takes examples as a torch.Tensor \(or a NumPy array of numbers\) of shape "
                                        r"\(batch, \*input_shape\); got str: pass torch.as_tensor"):
        model.embed("digits")


def test_pca_baseline_has_the_codes_width_or_every_component_the_data_has():
    from lvmkit.analysis.probe import pca_baseline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    pca, note = pca_baseline(x, 3)
    assert pca.n_components_ == 3 and note is None
    pca, note = pca_baseline(x, 8)  # codes wider than the 5 inputs: all 5 components, said so
    assert pca.n_components_ == 5 and note == "PCA of 5 components: all the data has (the inputs have 5 values; the codes have 8 numbers)"
    # every component: an invertible rotation, so the inputs come back exactly
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(x)), x, atol=1e-10)
    pca, note = pca_baseline(x[:4], 8)
    assert pca.n_components_ == 4 and note.startswith("PCA of 4 components: all the data has (the 4 training examples")


def test_probe_and_cluster_say_when_pca_is_narrower_than_the_codes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.random((150, 6), dtype=np.float32), y=rng.integers(0, 3, 150))
    from conftest import tiny_config

    run = lvmkit.train(tiny_config(data={"name": "npz", "path": str(tmp_path / "t.npz")}, model={"latent_dim": 9},
                                   train={"epochs": 1}), tmp_path / "r", progress=False, report=False)
    capsys.readouterr()
    note = "pca: PCA of 6 components: all the data has (the inputs have 6 values; the codes have 9 numbers)"
    assert main(["probe", str(run.path), "--labels", "3", "--repeats", "1"]) == 0
    assert capsys.readouterr().err.strip() == note
    probe = run.read_json("probe.json")
    assert probe["widths"] == {"latent": 9, "raw": 6, "pca": 6}
    assert main(["cluster", str(run.path), "--k", "3"]) == 0
    assert capsys.readouterr().err.strip() == note
    assert main(["report", str(run.path)]) == 0
    assert "PCA of 6 components (all the data has)" in (run.path / "report.html").read_text()
