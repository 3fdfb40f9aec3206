"""Streamed data (data.stream): the epoch order, equality with the in-memory path, the scaling,
a changed file, NaN chunks and bounded memory."""
from __future__ import annotations

import json
import os
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import ConfigError, DataError, LvmkitWarning
from lvmkit.data import batches
from lvmkit.core.checkpoint import load_checkpoint
from lvmkit.data.stream import StreamSplit


def _h5(path, n=300, shape=(1, 8, 8), seed=0, nan_rows=()):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape)).astype(np.float32) * 3.0 - 1.0  # not in [0, 1]: the scaling matters
    x[list(nan_rows)] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x, chunks=(8, *shape))
        f["y"] = rng.integers(0, 3, n)
    return x


def _data(path, **fields):
    return lvmkit.make_config({"data": {"name": "hdf5", "path": str(path), **fields}}).data


def _config(path, **data):
    return lvmkit.make_config({
        "data": {"name": "hdf5", "path": str(path), **data},
        "model": {"kind": "vae", "latent_dim": 2, "hidden": [16], "likelihood": "gaussian"},
        "train": {"epochs": 2, "batch_size": 32, "patience": 0, "device": "cpu", "sample_every": 0},
        "eval": {"k": 5},
    })


def _weights(run):
    return load_checkpoint(run.checkpoints / "last.pt")["model"]


def test_epoch_order_is_a_permutation_of_the_training_split_that_repeats_on_resume(tmp_path):
    _h5(tmp_path / "a.h5", n=600)
    mem = lvmkit.load_data(_data(tmp_path / "a.h5", stream=False), seed=3)
    st = lvmkit.load_data(_data(tmp_path / "a.h5", stream=True, stream_chunk=32, stream_buffer=3), seed=3)
    assert isinstance(st.train, StreamSplit) and not isinstance(mem.train, StreamSplit)
    train = st.train

    def order(seed):
        return train.epoch_order(torch.Generator().manual_seed(seed))

    first = order(11)
    assert sorted(first.tolist()) == sorted(train.indices.tolist()) and len(first) == len(mem.train)
    assert np.array_equal(first, order(11))  # a resumed epoch draws the same order from its seed
    assert not np.array_equal(first, order(12)) and not np.array_equal(first, np.sort(first))
    # the splits are the in-memory ones (same rows, same order), and the batches hold exactly
    # the in-memory examples in the streamed order, every batch but the last full
    assert torch.equal(st.val.x, mem.val.x) and torch.equal(st.test.y, mem.test.y)
    position = {row: i for i, row in enumerate(train.indices)}
    out = list(batches(train, 50, shuffle=True, generator=torch.Generator().manual_seed(11)))
    assert [len(xb) for xb, _ in out[:-1]] == [50] * (len(out) - 1) and len(out) == -(-len(train) // 50)
    expect = [position[row] for row in first]
    assert torch.equal(torch.cat([xb for xb, _ in out]), mem.train.x[expect])
    assert torch.equal(torch.cat([yb for _, yb in out]), mem.train.y[expect])
    # chunk-level plus in-buffer shuffle: the epoch begins with every row of 3 chunks, mixed
    chunks = first // 32
    group = list(dict.fromkeys(chunks.tolist()))[:3]
    size = int(np.isin(train.indices // 32, group).sum())
    assert set(chunks[:size].tolist()) == set(group) and len(set(chunks[:10].tolist())) > 1


@pytest.mark.parametrize("options", [{}, {"normal_class": 1, "anomaly_split": True}, {"limit": 120}])
def test_streamed_splits_are_the_in_memory_splits(tmp_path, options):
    _h5(tmp_path / "a.h5", n=300)
    mem = lvmkit.load_data(_data(tmp_path / "a.h5", **options), seed=4)
    st = lvmkit.load_data(_data(tmp_path / "a.h5", stream=True, stream_chunk=16, **options), seed=4)
    for k in ("train", "val", "test"):
        a, b = getattr(mem, k), getattr(st, k)
        assert isinstance(b, StreamSplit) and len(a) == len(b) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


@pytest.mark.parametrize("scale", ["global", "minmax", "standard"])
def test_streamed_scaling_is_the_in_memory_fit(tmp_path, scale):
    _h5(tmp_path / "a.h5", n=400)
    mem = lvmkit.load_data(_data(tmp_path / "a.h5", scale=scale), seed=1)
    st = lvmkit.load_data(_data(tmp_path / "a.h5", scale=scale, stream=True, stream_chunk=24), seed=1)
    a, b = mem.info["scaler"], st.info["scaler"]
    assert a["name"] == b["name"] == scale and st.info["out_of_range"] == mem.info["out_of_range"]
    # ranges are exact under chunking; means and deviations merged chunk by chunk agree to rounding
    close = np.testing.assert_array_equal if scale != "standard" else lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-12)
    close(np.asarray(b["shift"]), np.asarray(a["shift"]))
    close(np.asarray(b["span"]), np.asarray(a["span"]))
    assert st.train.value_range() == pytest.approx(mem.train.value_range(), abs=1e-6)


def test_streamed_and_in_memory_training_give_the_same_weights(tmp_path):
    """Equality is bitwise: with every chunk of a split in one buffer (here 38 chunks of 8
    examples), the streamed order is the in-memory one (the same torch.randperm of the same
    split order), the scaling is the same, so every batch, step and validation loss is."""
    _h5(tmp_path / "a.h5", n=300)
    mem = lvmkit.train(_config(tmp_path / "a.h5", stream=False), tmp_path / "mem", progress=False)
    st = lvmkit.train(_config(tmp_path / "a.h5", stream=True, stream_chunk=8, stream_buffer=64), tmp_path / "st", progress=False)
    assert isinstance(st.data().train, StreamSplit)
    a, b = _weights(mem), _weights(st)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = mem.read_metrics(), st.read_metrics()
    assert [m["val_loss"] for m in ma] == [m["val_loss"] for m in mb]
    assert [m["skipped_nan"] for m in mb] == [0, 0] and "skipped_nan" not in ma[0]
    assert json.loads((mem.path / "scaling.json").read_text()) == json.loads((st.path / "scaling.json").read_text())
    # evaluation iterates the streamed test split and gives the in-memory numbers
    ea, eb = lvmkit.evaluate(mem, write=False), lvmkit.evaluate(st, write=False)
    assert ea["test_loss"] == eb["test_loss"] and ea["n_test"] == eb["n_test"]


def test_a_streamed_run_resumed_after_an_interruption_matches_an_uninterrupted_one(tmp_path):
    _h5(tmp_path / "a.h5", n=300)
    cfg = _config(tmp_path / "a.h5", stream=True, stream_chunk=8, stream_buffer=3)  # 9 groups per epoch
    whole = lvmkit.train(cfg, tmp_path / "whole", progress=False)

    class Interrupt:
        def on_epoch_end(self, trainer, record):
            raise KeyboardInterrupt  # after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        lvmkit.train(cfg, tmp_path / "cut", progress=False, callbacks=[Interrupt()])
    resumed = lvmkit.resume(tmp_path / "cut", progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_file_that_changes_during_training_stops_it(tmp_path):
    path = tmp_path / "a.h5"
    _h5(path, n=200)

    class Touch:
        def on_epoch_end(self, trainer, record):
            os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))

    with pytest.raises(DataError, match=r"Data file '.*a\.h5' changed \(its modification time moved\) while the run was "
                                        r"reading it; .* restore the file, or train a new run"):
        lvmkit.train(_config(path, stream=True, stream_chunk=16), tmp_path / "run", progress=False, callbacks=[Touch()])
    st = lvmkit.load_data(_data(path, stream=True, stream_chunk=16))
    with open(path, "ab") as f:  # another program writing to it (HDF5 itself refuses a second open for writing)
        f.write(b"\0" * 100)
    with pytest.raises(DataError, match=r"changed \(size \d+ -> \d+ bytes\)"):
        next(batches(st.val, 8, shuffle=False))


def test_chunks_with_nan_are_skipped_and_counted_or_stop_a_strict_run(tmp_path):
    _h5(tmp_path / "ok.h5", n=200)
    full = lvmkit.load_data(_data(tmp_path / "ok.h5", stream=True, stream_chunk=16), seed=0)
    path = tmp_path / "a.h5"
    _h5(path, n=200, nan_rows=[37, 130])  # in chunks 2 and 8 of 16 examples
    clean = lvmkit.load_data(_data(path, stream=True, stream_chunk=16, stream_buffer=2), seed=0)
    # the unit is a split's rows in one chunk (read, checked and skipped together)
    for k in ("train", "val", "test"):
        rows = getattr(full, k).indices
        bad = {r // 16 for r in (37, 130) if r in rows}
        dropped = rows[np.isin(rows // 16, list(bad))]
        assert clean.info["skipped_nan"][k] == len(dropped)
        assert np.array_equal(getattr(clean, k).indices, rows[~np.isin(rows, dropped)])
    skipped = clean.info["skipped_nan"]
    assert skipped["train"] > 1
    xs = torch.cat([xb for xb, _ in batches(clean.train, 32, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.isfinite(xs).all() and len(xs) == len(clean.train)
    run = lvmkit.train(_config(path, stream=True, stream_chunk=16), tmp_path / "run", progress=False)
    assert [m["skipped_nan"] for m in run.read_metrics()] == [skipped["train"]] * 2
    with pytest.raises(DataError, match=r"Chunk 2 of '.*a\.h5' \(examples 32-47\) holds 64 NaN or infinite values; .*"
                                        r"set data.strict = false to skip and count such chunks"):
        lvmkit.load_data(_data(path, stream=True, stream_chunk=16, strict=True))


def _epoch_peak(path, n, chunk, buffer):
    data = lvmkit.load_data(_data(path, stream=True, stream_chunk=chunk, stream_buffer=buffer))
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for _ in batches(data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0)):
        pass
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return data.train, peak


def test_memory_of_an_epoch_is_bounded_by_the_buffer_not_the_file(tmp_path):
    example = 4 * 16 * 16  # bytes of one float32 example
    peaks = {}
    for n in (2000, 16000):
        _h5(tmp_path / f"{n}.h5", n=n, shape=(1, 16, 16))
        train, peaks[n] = _epoch_peak(tmp_path / f"{n}.h5", n, chunk=100, buffer=2)
        assert train.peak_held <= 2 * 100 + 64  # one buffer group and the rows carried into the next batch
    # 16000 examples: the training split alone is 11200 examples (11 MiB as float32); an epoch
    # holds a group of 2 chunks, the float64 temporaries of scaling one chunk and a batch:
    # under 5 x (2 x 100) examples, whatever the size of the file
    assert peaks[16000] < 5 * 2 * 100 * example < 0.1 * 11200 * example
    assert peaks[16000] < 1.2 * peaks[2000]


def test_stream_options_and_their_errors(tmp_path):
    _h5(tmp_path / "a.h5", n=300)
    assert not isinstance(lvmkit.load_data(_data(tmp_path / "a.h5")).train, StreamSplit)  # "auto": small files in memory
    assert isinstance(lvmkit.load_data(_data(tmp_path / "a.h5", stream_above_mb=0.01)).train, StreamSplit)
    with pytest.raises(ConfigError, match=r"data.stream = true reads HDF5, .* data.name = 'digits' loads its data whole"):
        lvmkit.load_data(lvmkit.make_config({"data": {"name": "digits", "stream": True}}).data)
    with pytest.raises(ConfigError, match=r"data.binarize = 'dynamic' needs the whole split in memory"):
        lvmkit.load_data(_data(tmp_path / "a.h5", stream=True, binarize="dynamic"))
    with pytest.raises(ConfigError, match=r"data.stream must be true, false or 'auto'; got 'yes please'"):
        _data(tmp_path / "a.h5", stream="yes please")
    x = np.random.default_rng(0).random((60, 5)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    with pytest.raises(DataError, match=r"compressed .npz file .* save it with numpy.save \(.npy\), numpy.savez or as HDF5"):
        lvmkit.load_data(lvmkit.make_config({"data": {"name": "npz", "path": str(tmp_path / "c.npz"), "stream": True}}).data)
    # .npy (memory-mapped) and stored .npz members stream with the in-memory splits and scaling
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x)
    for name in ("a.npy", "b.npz"):
        cfg = {"name": "npz", "path": str(tmp_path / name)}
        mem = lvmkit.load_data(lvmkit.make_config({"data": cfg}).data, seed=2)
        st = lvmkit.load_data(lvmkit.make_config({"data": {**cfg, "stream": True, "stream_chunk": 7}}).data, seed=2)
        assert isinstance(st.train, StreamSplit) and torch.equal(st.test.x, mem.test.x) and torch.equal(st.train.x, mem.train.x)


def test_split_x_of_a_large_streamed_split_is_a_bounded_subset_with_a_warning(tmp_path):
    _h5(tmp_path / "a.h5", n=300)
    st = lvmkit.load_data(_data(tmp_path / "a.h5", stream=True, stream_chunk=8, stream_sample=50))
    with pytest.warns(LvmkitWarning, match=r"split.x .* holds 50 of them from randomly chosen chunks; raise data.stream_sample"):
        x = st.train.x
    assert x.shape == (50, 1, 8, 8) and st.train.y.shape == (50,) and len(st.train) == 210
    assert torch.equal(st.val.x, lvmkit.load_data(_data(tmp_path / "a.h5")).val.x)  # 30 examples: all of them, no warning


def test_attpc_sets_stream_like_any_hdf5_file(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "events.h5", "w") as f:  # the layout 'lvmkit convert attpc' writes
        f.create_dataset("x", data=rng.random((120, 1, 16, 16)).astype(np.float32), chunks=(8, 1, 16, 16))
        f["y"] = rng.integers(0, 2, 120)
        f.attrs["projection"] = "xy"
        f.attrs["class_names"] = ["proton", "carbon"]
    cfg = lambda **kw: lvmkit.make_config({"data": {"name": "attpc", "path": str(tmp_path / "events.h5"), **kw}}).data  # noqa: E731
    mem, st = lvmkit.load_data(cfg(), seed=1), lvmkit.load_data(cfg(stream=True, stream_chunk=16), seed=1)
    assert isinstance(st.train, StreamSplit) and torch.equal(mem.train.x, st.train.x) and torch.equal(mem.test.y, st.test.y)
