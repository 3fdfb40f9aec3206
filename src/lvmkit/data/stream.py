"""Streamed data (``data.stream``): splits read from an HDF5, .npy or uncompressed .npz file in
shuffled chunks, so memory does not grow with the number of examples.

**Chunks.** The file's rows are cut into chunks of ``data.stream_chunk`` consecutive examples
(default about 16 MiB of float32, a multiple of the HDF5 dataset's own chunk rows). A split is
the index set the in-memory path draws from the run seed (:func:`lvmkit.data.load_data`), so a
run can switch between the two paths; its rows in one chunk are read together, in one
contiguous read of an HDF5 file or one gather from a memory map.

**Order of an epoch**, drawn from the epoch's generator (seeded from the run seed and the epoch
number, as in memory, so a resumed run replays it):

1. a permutation of the split's chunks;
2. the permuted chunks taken ``data.stream_buffer`` at a time: a group's rows are read, put in
   split order and permuted together (``torch.randperm``);
3. batches are cut from consecutive groups; the rows left at a group's end open the next
   batch, so every batch but the last holds ``batch_size`` examples, as in memory.

Shuffle quality: chunk-level plus in-buffer. A batch mixes the rows of ``stream_buffer`` random
chunks rather than of the whole split, so examples stored near each other (one acquisition run,
one source file) share batches more often than under a full permutation; raise
``stream_buffer`` (memory grows with it) or lower ``stream_chunk`` to come closer. When the
split's chunks fit in one buffer the order *is* the in-memory one (the same ``torch.randperm``
of the same split order), so streamed and in-memory training then agree bitwise.

**Memory**: one group (at most ``stream_buffer * stream_chunk`` examples as float32), one chunk
being read and scaled, and one batch, whatever the number of examples.

**Loading** reads the file twice: the training rows, to fit the scaling from running statistics
(:class:`~lvmkit.data.scaling.RunningStats`, the code the in-memory fit uses; stored in
``RUN/scaling.json`` as usual), then the validation and test rows, to count values outside the
training range. A split's rows in one chunk holding a NaN or infinite value are dropped from
the split and counted (``info["skipped_nan"]``, each epoch record's ``skipped_nan``), or, with
``data.strict``, stop loading with a :class:`~lvmkit.core.errors.DataError`.

**Whole splits in memory.** ``split.x`` and ``split.y`` hold at most ``data.stream_sample``
examples: the whole split when it is that small, else the rows of randomly chosen chunks (a
warning says so). The training loop hands ``x`` to ``model.update`` (DEC's cluster targets, an
RBM's base rates); validation, ``lvmkit evaluate`` and report sections that iterate with
:func:`lvmkit.data.batches` see every example; analyses that read ``split.x`` (probes,
clustering, sample quality) see the subset.

**A changed file.** The file's size and modification time are recorded when it is opened and
checked at the start of every pass (every epoch and validation): a change is a DataError, since
the splits and the scaling belong to the file as it was.
"""
from __future__ import annotations

import copy
import os
import warnings
import zipfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.config import DataConfig
from lvmkit.core.errors import DataError, LvmkitWarning
from lvmkit.data.scaling import RunningStats, Scaler, Scaling

_CHUNK_BYTES = 16 << 20  # default chunk: about 16 MiB of float32 examples


def wanted(cfg: DataConfig, shape: tuple[int, ...]) -> bool:
    """Whether a source should stream an array of ``shape``: ``data.stream``, or for ``"auto"``
    whether it would take more than ``data.stream_above_mb`` MiB as float32."""
    if cfg.stream != "auto":
        return bool(cfg.stream)
    return 4 * int(np.prod(shape, dtype=np.int64)) > cfg.stream_above_mb * 2**20


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class DiskArray:
    """The rows of one array in a file, read on demand: an HDF5 dataset (h5py), a memory-mapped
    .npy file, or an uncompressed member of an .npz file (memory-mapped at its offset). Build it
    with :meth:`hdf5`, :meth:`npy` or :meth:`npz`."""

    def __init__(self, path: Path, key: Optional[str], shape: tuple[int, ...], dtype: np.dtype, *,
                 offset: Optional[int] = None, fortran: bool = False, hdf5_rows: Optional[int] = None) -> None:
        self.path, self.key = Path(path), key
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.offset, self.fortran, self.hdf5_rows = offset, fortran, hdf5_rows
        self.hdf5 = offset is None  # else memory-mapped at offset
        self.stamp = _stamp(self.path)
        self._file = self._handle = None  # the open h5py.File and dataset, or the np.memmap

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @classmethod
    def hdf5(cls, path: Path, key: str) -> "DiskArray":
        import h5py

        with h5py.File(path, "r") as f:
            ds = f[key]
            return cls(path, key, ds.shape, ds.dtype, hdf5_rows=ds.chunks[0] if ds.chunks else None)

    @classmethod
    def npy(cls, path: Path) -> "DiskArray":
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
        return cls(path, None, mm.shape, mm.dtype, offset=mm.offset, fortran=mm.flags.f_contiguous and mm.ndim > 1)

    @classmethod
    def npz(cls, path: Path, key: str) -> "DiskArray":
        """The member ``key`` of an .npz file written by ``numpy.savez`` (stored, not compressed)."""
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                header = f.tell()
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataError(f"{str(path)!r} is a compressed .npz file (numpy.savez_compressed), which cannot be read in "
                            "chunks; save it with numpy.save (.npy), numpy.savez or as HDF5 to stream it, or set data.stream = false.")
        with open(path, "rb") as raw:  # the member's data start after its local file header
            raw.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
        offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header
        return cls(path, key, shape, dtype, offset=offset, fortran=fortran)

    def _open(self):
        if self._handle is None:
            if self.hdf5:
                import h5py

                self._file = h5py.File(self.path, "r")
                self._handle = self._file[self.key]
            else:
                self._handle = np.memmap(self.path, self.dtype, "r", self.offset, self.shape,
                                         order="F" if self.fortran else "C")
        return self._handle

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (ascending, within one chunk): one contiguous read of their span from
        HDF5, a gather from a memory map."""
        src = self._open()
        if not self.hdf5:
            return np.array(src[rows])
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        block = src[lo:hi]
        return block if len(rows) == hi - lo else block[rows - lo]

    def check_unchanged(self) -> None:
        """Raise a DataError if the file's size or modification time changed since it was opened."""
        try:
            now = _stamp(self.path)
        except OSError:
            now = None
        if now != self.stamp:
            what = "was removed" if now is None else (f"changed (size {self.stamp[0]} -> {now[0]} bytes)" if now[0] != self.stamp[0]
                                                      else "changed (its modification time moved)")
            raise DataError(f"Data file {str(self.path)!r} {what} while the run was reading it; its splits and scaling "
                            "belong to the file as it was opened: restore the file, or train a new run on the new one.")


def _chunk_rows(cfg: DataConfig, source: DiskArray, example_shape: tuple[int, ...]) -> int:
    if cfg.stream_chunk:
        return cfg.stream_chunk
    rows = max(1, _CHUNK_BYTES // (4 * int(np.prod(example_shape, dtype=np.int64))))
    if source.hdf5_rows:  # whole HDF5 chunks, each decompressed once
        rows = max(source.hdf5_rows, rows // source.hdf5_rows * source.hdf5_rows)
    return rows


def _by_chunk(indices: np.ndarray, chunk: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The chunks holding ``indices`` (sorted) and, for each, the positions of its rows in
    ``indices`` (ascending, so in split order)."""
    if len(indices) == 0:
        return np.zeros(0, np.int64), []
    of = indices // chunk
    order = np.argsort(of, kind="stable")
    ids, starts = np.unique(of[order], return_index=True)
    return ids, np.split(order, starts[1:])


class StreamSplit:
    """One split of a file read in shuffled chunks (see the module docstring). It serves the
    training loop as :class:`lvmkit.data.Split` does: ``len``, :func:`lvmkit.data.batches`
    (which calls :meth:`batches`), ``to(device)``, and ``x`` / ``y`` holding at most
    ``data.stream_sample`` examples."""

    def __init__(self, name: str, source: DiskArray, indices: np.ndarray, labels: Optional[np.ndarray], scaler: Scaler,
                 example_shape: tuple[int, ...], chunk: int, buffer: int, sample: int, value_range: tuple[float, float],
                 seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.name, self.source, self.scaler = name, source, scaler
        self.indices = np.asarray(indices, dtype=np.int64)  # file rows, in split order
        self.labels = labels  # (len,) int64 in split order, or None
        self.shape, self.chunk, self.buffer, self.sample = tuple(example_shape), chunk, buffer, sample
        self.range, self.seed, self.device = value_range, seed, torch.device(device)
        self.chunks, self.members = _by_chunk(self.indices, chunk)
        self.peak_held = 0  # the most examples one pass held at once (group and carried rows)
        self._resident: Optional[tuple[Tensor, Optional[Tensor]]] = None

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> "StreamSplit":
        out = copy.copy(self)
        out.device = torch.device(device)
        if self._resident is not None:
            x, y = self._resident
            out._resident = (x.to(device), None if y is None else y.to(device))
        return out

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest scaled value of the split (measured while loading)."""
        return self.range

    # -- reading --------------------------------------------------------------------------------
    def _read(self, pos: np.ndarray) -> np.ndarray:
        """The scaled examples at split positions ``pos``, in that order, one chunk at a time."""
        out = np.empty((len(pos), *self.shape), dtype=np.float32)
        rows = self.indices[pos]
        order = np.argsort(rows, kind="stable")
        cuts = np.flatnonzero(np.diff(rows[order] // self.chunk)) + 1
        for piece in np.split(order, cuts):
            raw = self.source.read(rows[piece]).reshape(len(piece), *self.shape)
            out[piece] = self.scaler.transform(raw)
        return out

    def _groups(self, shuffle: bool, generator: Optional[torch.Generator]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """For each group of chunks: its split positions (ascending) and the order they are emitted in."""
        k = len(self.chunks)
        if shuffle and k > self.buffer:  # one group: no draw, so the order is the in-memory one
            chunk_order = torch.randperm(k, generator=generator).numpy()
        else:
            chunk_order = np.arange(k)
        for g in range(0, k, self.buffer):
            pos = np.sort(np.concatenate([self.members[c] for c in chunk_order[g : g + self.buffer]]))
            take = torch.randperm(len(pos), generator=generator).numpy() if shuffle else np.arange(len(pos))
            yield pos, take

    def epoch_order(self, generator: Optional[torch.Generator] = None, shuffle: bool = True) -> np.ndarray:
        """The file rows in the order :meth:`batches` yields them with this generator (drawing
        from it as :meth:`batches` does)."""
        parts = [self.indices[pos[take]] for pos, take in self._groups(shuffle, generator)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def batches(self, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None
                ) -> Iterator[tuple[Tensor, Optional[Tensor]]]:
        """Mini-batches of scaled examples (and labels) on the split's device; with ``shuffle``,
        in the order of the module docstring drawn from ``generator``, else chunk by chunk in
        file order (split order within a buffer group).

        Raises:
            DataError: the file changed since it was opened."""
        self.source.check_unchanged()
        carry: Optional[tuple[np.ndarray, Optional[np.ndarray]]] = None
        for pos, take in self._groups(shuffle, generator):
            xg = self._read(pos)
            yg = None if self.labels is None else self.labels[pos]
            self.peak_held = max(self.peak_held, len(pos) + (0 if carry is None else len(carry[0])))
            start = 0
            if carry is not None:  # complete the batch the previous group began
                sel = take[: batch_size - len(carry[0])]
                start = len(sel)
                carry = (np.concatenate([carry[0], xg[sel]]), None if yg is None else np.concatenate([carry[1], yg[sel]]))
                if len(carry[0]) < batch_size:
                    continue
                yield self._tensors(*carry)
                carry = None
            for s in range(start, len(take) - batch_size + 1, batch_size):
                sel = take[s : s + batch_size]
                yield self._tensors(xg[sel], None if yg is None else yg[sel])
            rest = take[start + (len(take) - start) // batch_size * batch_size :]
            if len(rest):
                carry = (xg[rest], None if yg is None else yg[rest])
        if carry is not None:
            yield self._tensors(*carry)

    def _tensors(self, x: np.ndarray, y: Optional[np.ndarray]) -> tuple[Tensor, Optional[Tensor]]:
        return torch.from_numpy(x).to(self.device), None if y is None else torch.from_numpy(y).to(self.device)

    # -- the part held in memory ----------------------------------------------------------------
    def _load_resident(self) -> tuple[Tensor, Optional[Tensor]]:
        if self._resident is None:
            n = len(self)
            if n <= self.sample:
                pos = np.arange(n)
            else:  # the rows of randomly chosen chunks, read chunk by chunk
                picked, held = [], 0
                for c in np.random.default_rng(self.seed).permutation(len(self.chunks)):
                    picked.append(self.members[c])
                    held += len(self.members[c])
                    if held >= self.sample:
                        break
                pos = np.sort(np.concatenate(picked))[: self.sample]
                warnings.warn(f"The {self.name} split is streamed from {str(self.source.path)!r} ({n} examples); split.x "
                              f"(model.update, and analyses such as probes and clustering) holds {len(pos)} of them from "
                              "randomly chosen chunks; raise data.stream_sample to hold more.", LvmkitWarning, stacklevel=3)
            x = torch.from_numpy(self._read(pos)).to(self.device)
            y = None if self.labels is None else torch.from_numpy(self.labels[pos]).to(self.device)
            self._resident = (x, y)
        return self._resident

    @property
    def x(self) -> Tensor:
        """At most ``data.stream_sample`` scaled examples of the split (all of them when it is that small)."""
        return self._load_resident()[0]

    @property
    def y(self) -> Optional[Tensor]:
        """The labels of :attr:`x`, or None for unlabelled data."""
        return None if self.labels is None else self._load_resident()[1]


def _scan(source: DiskArray, parts: dict[str, np.ndarray], example_shape: tuple[int, ...], chunk: int
          ) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """Every chunk in file order, read once: (split, chunk, positions ascending, raw rows) for each
    split with rows in it."""
    names = list(parts)
    rows = np.concatenate([parts[k] for k in names]).astype(np.int64)
    tag = np.concatenate([np.full(len(parts[k]), i) for i, k in enumerate(names)])
    pos = np.concatenate([np.arange(len(parts[k])) for k in names])
    order = np.argsort(rows, kind="stable")
    rows, tag, pos = rows[order], tag[order], pos[order]
    cuts = np.flatnonzero(np.diff(rows // chunk)) + 1
    for piece in np.split(np.arange(len(rows)), cuts):
        if len(piece) == 0:
            continue
        data = source.read(rows[piece]).reshape(len(piece), *example_shape)
        for i, name in enumerate(names):
            mine = tag[piece] == i
            if mine.any():
                p = pos[piece][mine]
                o = np.argsort(p)
                yield name, int(rows[piece[0]] // chunk), p[o], data[mine][o]


def open_splits(source: DiskArray, idx: dict[str, np.ndarray], labels: Optional[np.ndarray], example_shape: tuple[int, ...],
                scaling: Scaling, cfg: DataConfig, seed: int) -> tuple[dict[str, StreamSplit], dict]:
    """Fit ``scaling`` on the training rows in one pass, count the validation and test values
    outside the training range in another, drop chunks holding NaN or infinite values, and return
    the streamed splits with the ``info`` entries of :class:`lvmkit.data.Dataset` they add."""
    chunk = _chunk_rows(cfg, source, example_shape)
    where = str(source.path)
    skipped = {k: 0 for k in idx}
    kept: dict[str, list[np.ndarray]] = {k: [] for k in idx}

    def finite(name: str, c: int, pos: np.ndarray, rows: np.ndarray) -> bool:
        if not np.issubdtype(rows.dtype, np.floating) or np.isfinite(rows).all():
            kept[name].append(pos)
            return True
        if cfg.strict:
            bad = int(rows.size - np.count_nonzero(np.isfinite(rows)))
            raise DataError(f"Chunk {c} of {where!r} (examples {c * chunk}-{min((c + 1) * chunk, len(source)) - 1}) holds {bad} "
                            f"NaN or infinite values; remove or impute them, or set data.strict = false to skip and count such chunks.")
        skipped[name] += len(pos)
        return False

    source.check_unchanged()
    stats = RunningStats(ranges=True, moments=scaling.moments)
    for name, c, pos, rows in _scan(source, {"train": idx["train"]}, example_shape, chunk):
        if finite(name, c, pos, rows):
            stats.update(rows)
    if stats.n == 0:
        raise DataError(f"Every chunk of the training split of {where!r} holds NaN or infinite values; remove or impute them.")
    scaler = scaling.finish(stats)
    ranges = {"train": (float(scaler.transform(stats.lo[None]).min()), float(scaler.transform(stats.hi[None]).max()))}
    out_of_range = {k: 0 for k in idx if k != "train"}
    for name, c, pos, rows in _scan(source, {k: idx[k] for k in out_of_range}, example_shape, chunk):
        if finite(name, c, pos, rows):
            scaled = scaler.transform(rows)
            out_of_range[name] += scaler.out_of_range(scaled)
            lo, hi = ranges.get(name, (np.inf, -np.inf))
            ranges[name] = (min(lo, float(scaled.min())), max(hi, float(scaled.max())))
    source.check_unchanged()

    splits = {}
    for k, ix in idx.items():
        keep = np.sort(np.concatenate(kept[k])) if kept[k] else np.zeros(0, np.int64)
        rows = ix[keep]
        splits[k] = StreamSplit(k, source, rows, None if labels is None else labels[rows], scaler, example_shape, chunk,
                                cfg.stream_buffer, cfg.stream_sample, ranges.get(k, (0.0, 0.0)), seed)
    info = {"scaler": scaler.state(), "out_of_range": out_of_range, "skipped_nan": skipped,
            "stream": {"path": where, "chunk": chunk, "buffer": cfg.stream_buffer,
                       "chunks": -(-len(source) // chunk)}}
    return splits, info
