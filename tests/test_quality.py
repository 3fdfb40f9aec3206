"""Sample quality: the Frechet distance against its closed form, precision/recall against a
brute-force implementation and known coverage, the cached feature classifier, and quality()."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import lvmkit
from lvmkit.analysis import quality as quality_module
from lvmkit.analysis.quality import FeatureNet, feature_net, frechet_distance, frechet_gaussians, precision_recall, quality

torch.set_num_threads(1)


def _frechet_by_eigenvalues(mu1, s1, mu2, s2) -> float:
    # Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}, a symmetric PSD matrix: an independent route.
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_root)


def _gaussian_params(rng, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


# -- Frechet distance ------------------------------------------------------------------------
def test_frechet_gaussians_diagonal_by_hand():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    # Diagonal covariances commute: sum (sqrt v1 - sqrt v2)^2 + |mu1 - mu2|^2 = (1 + 1 + 0) + (1 + 0 + 4).
    assert frechet_gaussians(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(7.0, rel=1e-12)


def test_frechet_gaussians_matches_eigenvalue_route_for_non_commuting_covariances():
    rng = np.random.default_rng(1)
    (mu1, s1), (mu2, s2) = _gaussian_params(rng, 6), _gaussian_params(rng, 6)
    assert frechet_gaussians(mu1, s1, mu2, s2) == pytest.approx(_frechet_by_eigenvalues(mu1, s1, mu2, s2), rel=1e-9)


def test_frechet_distance_of_samples_matches_closed_form_and_is_symmetric():
    rng = np.random.default_rng(0)
    (mu1, s1), (mu2, s2) = _gaussian_params(rng, 4), _gaussian_params(rng, 4)
    a = rng.multivariate_normal(mu1, s1, size=20_000)
    b = rng.multivariate_normal(mu2, s2, size=20_000)
    exact = _frechet_by_eigenvalues(mu1, s1, mu2, s2)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.03)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_frechet_distance_of_one_distribution_is_near_zero():
    rng = np.random.default_rng(2)
    mu, s = _gaussian_params(rng, 4)
    a, b = rng.multivariate_normal(mu, s, size=(2, 20_000))
    assert frechet_distance(a, b) < 1e-3 * np.trace(s)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9 * np.trace(s))


def test_frechet_distance_with_singular_covariances_is_finite():
    # 5 examples in 10 dimensions: rank-deficient covariances take the eps * I route.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 10)), rng.normal(size=(5, 10)) + 3.0
    scale = np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4 * scale)
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 10 * 9.0 * 0.9  # mean term: 10 * 3^2


def test_frechet_distance_rejects_mismatched_widths():
    with pytest.raises(ValueError, match=r"one d and n >= 2; got \(5, 3\) and \(5, 4\)"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# -- precision and recall --------------------------------------------------------------------
def _brute_force_pr(real, fake, k):
    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def covered(points, centres, r):
        d = np.sqrt(((points[:, None] - centres[None]) ** 2).sum(-1))
        return float((d <= r[None]).any(1).mean())

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("chunk", [None, 7])
def test_precision_recall_matches_brute_force(monkeypatch, chunk):
    if chunk is not None:  # force many chunks, including a ragged last one
        monkeypatch.setattr(quality_module, "_chunk_rows", lambda n_cols: chunk)
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(60, 3)), rng.normal(size=(45, 3)) * 1.5 + 0.5
    for k in (1, 3, 5):
        assert precision_recall(real, fake, k) == pytest.approx(_brute_force_pr(real, fake, k), abs=1e-12)


def _modes(rng, centres, n_per_mode):
    return np.concatenate([c + rng.normal(size=(n_per_mode, 2)) for c in centres])


def test_precision_recall_of_identical_sets_and_far_sets():
    x = np.random.default_rng(5).normal(size=(200, 4))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)


def test_dropping_a_mode_costs_recall_by_its_share_not_precision():
    rng = np.random.default_rng(6)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    real = _modes(rng, centres, 250)
    full = _modes(rng, centres, 250)
    dropped = _modes(rng, centres[:3], 250)  # the fourth mode (a quarter of the data) is missing
    p_full, r_full = precision_recall(real, full)
    p_drop, r_drop = precision_recall(real, dropped)
    assert p_full > 0.9 and p_drop > 0.9
    assert r_full - r_drop == pytest.approx(0.25, abs=0.03)
    assert r_drop <= 0.75


def test_precision_recall_rejects_k_too_large():
    with pytest.raises(ValueError, match="k must be at least 1 and below both set sizes; got k = 3 for sets of 3 and 10"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


# -- the feature classifier ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 128, 96), (5,), (4, 6)])
def test_feature_net_shapes(shape):
    net = FeatureNet(shape, 7)
    x = torch.rand(2, *shape)
    assert net.features(x).shape == (2, 128) and net(x).shape == (2, 7)


@pytest.fixture(scope="module")
def digits():
    cfg = lvmkit.DataConfig(name="digits")
    return lvmkit.load_data(cfg, 0), f"{cfg.model_dump_json()}|seed=0"


def test_feature_net_trains_caches_and_retrains_a_corrupted_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("LVMKIT_CACHE", str(tmp_path))
    data, key = digits
    net, info = feature_net(data, key)
    assert info["trained"] and info["test_accuracy"] > 0.9
    assert info["cache_file"].startswith(str(tmp_path / "feature-nets"))
    again, info2 = feature_net(data, key)
    assert not info2["trained"] and info2["test_accuracy"] == info["test_accuracy"]
    x = data.test.x[:50]
    assert torch.equal(net.features(x), again.features(x))
    with open(info["cache_file"], "r+b") as f:  # truncate: a crash mid-write by another tool
        f.truncate(100)
    retrained, info3 = feature_net(data, key)
    assert info3["trained"] and info3["cache_file"] == info["cache_file"]
    assert torch.equal(retrained.features(x), net.features(x))  # seeded: the same network again
    assert not feature_net(data, key)[1]["trained"]  # and the overwritten file is good


def test_feature_net_needs_labels(digits):
    data, key = digits
    unlabelled = lvmkit.Dataset(lvmkit.Split(data.train.x, None), data.val, data.test, data.shape, "none", "test")
    with pytest.raises(lvmkit.DataError, match="needs class labels"):
        feature_net(unlabelled, key)


# -- quality() -------------------------------------------------------------------------------
def test_quality_rejects_non_positive_n(tmp_path):
    with pytest.raises(lvmkit.ConfigError, match=r"got 0; pass e.g. --n 10000\."):
        quality(tmp_path, n=0)


def test_quality_needs_labels(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 6)).astype(np.float32))
    run = lvmkit.Run.create(lvmkit.make_config({"data": {"name": "npz", "path": str(path)}}), tmp_path / "r")
    with pytest.raises(lvmkit.DataError, match=r"needs class labels .* 'npz' has none; use a labelled data set "
                                               r"\(e.g. digits or fashion-mnist\) or give labels via data.y_key\."):
        quality(run, n=100)


def test_require_generator_message():
    from lvmkit.core.contract import Generator, require

    with pytest.raises(lvmkit.ConfigError, match="lvmkit quality needs a model that is a generator, but this Linear is not"):
        require(nn.Linear(2, 2), Generator, "lvmkit quality")


def test_quality_end_to_end_on_a_tiny_vae(tmp_path, monkeypatch):
    from lvmkit.core.contract import Generator

    monkeypatch.setenv("LVMKIT_CACHE", str(tmp_path / "cache"))
    cfg = lvmkit.make_config({"data": {"name": "digits"}, "model": {"kind": "vae", "latent_dim": 2, "hidden": [32]},
                              "train": {"epochs": 2, "batch_size": 64, "patience": 0, "device": "cpu"}})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False)
    assert isinstance(run.load_model(), Generator)
    res = quality(run, n=500)
    assert json.loads((run.path / "quality.json").read_text()) == res
    test = run.data().test
    assert res["n_generated"] == 500 and res["n_reference"] == len(test) == 359
    assert res["classifier"]["test_accuracy"] > 0.9
    # Two epochs of a 2-d VAE collapse onto one blurry digit: its samples lie in the data's
    # manifold (precision) but cover almost none of it (recall), while held-out training digits
    # cover it both ways; a precision/recall that swapped its two sets, or a wrong k-NN radius,
    # fails one of these.
    assert res["precision"] > 0.5 and res["recall"] < 0.1
    assert res["floor"]["precision"] > 0.8 and res["floor"]["recall"] > 0.8
    assert res["frechet_distance"] > 20 * res["floor"]["frechet_distance"]
    # The reference column is the test split's true class shares, counted here from its labels;
    # the samples' column counts whole samples (k / 500) and the collapse puts them in one class.
    reference = np.bincount(np.asarray(test.y), minlength=10) / len(test)
    assert [c["reference"] for c in res["class_histogram"]] == pytest.approx(reference.tolist())
    counts = np.array([c["fraction"] for c in res["class_histogram"]]) * 500
    assert np.allclose(counts, counts.round()) and counts.max() > 400
    assert res["classes_present"] < 3
    again = quality(run, n=500, write=False)  # seeded: the same figures again
    timing = ("seconds", "sample_seconds_per_1000")
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in res.items() if k not in timing}
