"""Data sources, the seeded split, scaling, binarization and the errors for bad data."""
from __future__ import annotations

import gzip
import struct

import h5py
import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import DataError
from lvmkit.data import batches, read_idx


def _cfg(**fields):
    return lvmkit.make_config({"data": fields}).data


def test_digits_split_is_deterministic_disjoint_and_scaled():
    a = lvmkit.load_data(_cfg(name="digits"), seed=3)
    b = lvmkit.load_data(_cfg(name="digits"), seed=3)
    c = lvmkit.load_data(_cfg(name="digits"), seed=4)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.shape == (1, 8, 8) and a.train.x.min() >= 0 and a.train.x.max() <= 1
    rows = {tuple(r) for r in a.train.x.flatten(1).numpy().round(4)}
    overlap = sum(tuple(r) in rows for r in a.test.x.flatten(1).numpy().round(4))
    assert overlap < 10  # a few digits are exact duplicates of each other in the data set itself


def test_npz_images_and_tabular(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.integers(0, 256, (50, 6, 5)).astype(np.uint8), y=rng.integers(0, 3, 50))
    d = lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "img.npz")))
    assert d.shape == (1, 6, 5) and d.is_image and d.train.y is not None
    assert float(d.train.x.max()) <= 1.0
    np.savez(tmp_path / "tab.npz", x=rng.normal(5, 3, (40, 7)))
    t = lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "tab.npz")))
    assert t.shape == (7,) and t.train.y is None
    # min-max by the training split's range: training values span exactly [0, 1]
    assert float(t.train.x.min()) == 0.0 and float(t.train.x.max()) == 1.0


def test_hdf5_source(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["images"] = np.random.default_rng(0).random((30, 1, 4, 4)).astype(np.float32)
        f["labels"] = np.arange(30) % 2
    d = lvmkit.load_data(_cfg(name="hdf5", path=str(tmp_path / "a.h5"), x_key="images", y_key="labels"))
    assert d.shape == (1, 4, 4) and set(d.train.y.tolist()) <= {0, 1}


def test_bad_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"Data file '.*missing.npz' does not exist"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "missing.npz")))
    with pytest.raises(DataError, match=r"needs data.path"):
        lvmkit.load_data(_cfg(name="npz"))
    x = np.ones((20, 4))
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(DataError, match=r"holds 1 NaN or infinite values"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "nan.npz")))
    np.savez(tmp_path / "shape.npz", x=np.ones((4, 2, 2, 2, 2)))
    with pytest.raises(DataError, match=r"has shape \(4, 2, 2, 2, 2\); expected \(N, D\) tabular"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "shape.npz")))
    np.savez(tmp_path / "str.npz", x=np.array([["a", "b"]] * 5))
    with pytest.raises(DataError, match=r"has dtype <U1; expected a real numeric array"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "str.npz")))
    np.savez(tmp_path / "lab.npz", x=np.ones((10, 3)), y=np.arange(9))
    with pytest.raises(DataError, match=r"Labels in .* have shape \(9,\); expected \(10,\)"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "lab.npz")))
    np.savez(tmp_path / "key.npz", data=np.ones((10, 3)))
    with pytest.raises(DataError, match=r"has no array 'x' \(it has \['data'\]\); set data.x_key"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "key.npz")))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"is not a readable .npz file"):
        lvmkit.load_data(_cfg(name="npz", path=str(tmp_path / "junk.npz")))


def test_missing_fashion_mnist_names_path_and_package(tmp_path):
    with pytest.raises(DataError, match=r"not found in '.*'; install it with 'apt-get install dataset-fashion-mnist'"):
        lvmkit.load_data(_cfg(name="fashion-mnist", path=str(tmp_path)))


def test_idx_reader_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + arr.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    (tmp_path / "bad.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"is not a readable IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_binarization_static_and_dynamic():
    s = lvmkit.load_data(_cfg(name="digits", binarize="static"), seed=0)
    assert set(torch.unique(s.train.x).tolist()) <= {0.0, 1.0}
    d = lvmkit.load_data(_cfg(name="digits", binarize="dynamic"), seed=0)
    # train stays grey (re-sampled per epoch); val and test are binarized once
    assert len(torch.unique(d.train.x)) > 2 and set(torch.unique(d.test.x).tolist()) <= {0.0, 1.0}
    x = d.train.x[:200]
    split = type(d.train)(x, None)

    def epoch(seed):  # one pass of lvmkit's own binarization, unshuffled so rows line up with x
        g = torch.Generator().manual_seed(seed)
        return torch.cat([xb for xb, _ in batches(split, 64, shuffle=False, generator=g, dynamic_binarize=True)])

    e1, e2 = epoch(1), epoch(2)
    assert e1.shape == x.shape and set(torch.unique(e1).tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2) and torch.equal(e1, epoch(1))  # a new draw per seed, the same for a repeated seed
    assert torch.all(e1[x == 0] == 0) and torch.all(e1[x == 1] == 1)  # black and white pixels never flip
    # E[binarized] = grey level: the mean of 400 of lvmkit's draws approaches the intensities
    # (standard error <= 0.5 / sqrt(400) = 0.025 per pixel; 0.12 is ~5 of them)
    draws = torch.stack([epoch(s) for s in range(400)]).mean(0)
    assert (draws - x).abs().max() < 0.12


def test_evaluated_train_split_is_binarized_once_like_the_test_split():
    d = lvmkit.load_data(_cfg(name="digits", binarize="dynamic"), seed=0)
    t = d.evaluated_train()
    assert set(torch.unique(t.x).tolist()) <= {0.0, 1.0} and t.x.shape == d.train.x.shape
    assert torch.equal(t.x, d.evaluated_train().x)  # fixed, not re-drawn
    assert torch.equal(t.x, lvmkit.load_data(_cfg(name="digits", binarize="dynamic"), seed=0).evaluated_train().x)
    g = lvmkit.load_data(_cfg(name="digits"), seed=0)
    assert g.evaluated_train() is g.train
