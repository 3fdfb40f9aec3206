"""Data sets: a registry of sources, validation, a seeded split, scaling and binarization.

A source returns raw arrays; :func:`load_data` splits them into train / val / test and scales
them with statistics of the training split (:mod:`lvmkit.data.scaling`). Images are (N, C, H, W); tabular
data is (N, D). A source may instead return a :class:`~lvmkit.data.stream.DiskArray` (HDF5, .npy and
.npz files with ``data.stream``): its splits are then read in shuffled chunks
(:mod:`lvmkit.data.stream`), with the same split indices and the same scaling.
"""
from __future__ import annotations

import gzip
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.config import DataConfig
from lvmkit.core.errors import ConfigError, DataError, LvmkitWarning
from lvmkit.core.registry import Registry
from lvmkit.data import stream
from lvmkit.data.scaling import Scaler, fit_scaler, streaming_scaling
from lvmkit.data.stream import DiskArray, StreamSplit

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class RawData:
    """What a source returns. ``test_x`` is set when the data set has an official test split."""

    x: Union[np.ndarray, DiskArray]  # a DiskArray is read in chunks (data.stream)
    y: Optional[np.ndarray] = None
    test_x: Optional[np.ndarray] = None
    test_y: Optional[np.ndarray] = None
    origin: str = ""
    class_names: Optional[list[str]] = None
    info: dict = field(default_factory=dict)  # passed on to Dataset.info (e.g. display hints)
    # A source whose arrays need a scaling of their own (packed series: times and mask codes
    # stay as they are) names it here; data.scale may then only be left unset or name it.
    scale: Optional[str] = None


SOURCES: Registry[Callable[[DataConfig], RawData]] = Registry("data set")


@SOURCES.register("digits")
def _digits(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with integer intensities 0..16.
    return RawData(d.images.astype(np.float32) / 16.0, d.target, origin="scikit-learn digits",
                   class_names=[str(i) for i in range(10)])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the MNIST family's array format."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("bad magic number")
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise DataError(f"{str(path)!r} is not a readable IDX file ({err}); re-install it or point data.path elsewhere.") from None


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@SOURCES.register("fashion-mnist")
def _fashion_mnist(cfg: DataConfig) -> RawData:
    folder = Path(cfg.path) if cfg.path else FASHION_MNIST_DIR
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = []
    for name in names:
        cands = [folder / f"{name}.gz", folder / name]
        found = next((p for p in cands if p.is_file()), None)
        if found is None:
            raise DataError(
                f"Fashion-MNIST file {name}.gz not found in {str(folder)!r}; install it with "
                "'apt-get install dataset-fashion-mnist' or set data.path to a folder holding the IDX files."
            )
        paths.append(found)
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return RawData(xtr, ytr, xte, yte, origin=str(folder), class_names=FASHION_CLASSES)


def _check_path(cfg: DataConfig, what: str) -> Path:
    if not cfg.path:
        raise DataError(f"data.name = {cfg.name!r} needs data.path, the {what} file to read; set it with --set data.path=FILE.")
    p = Path(cfg.path)
    if not p.is_file():
        raise DataError(f"Data file {str(p)!r} does not exist; check data.path.")
    return p


@SOURCES.register("npz")
def _npz(cfg: DataConfig) -> RawData:
    """An .npz file (arrays ``data.x_key`` and, if present, ``data.y_key``) or an .npy file (data only)."""
    p = _check_path(cfg, "NumPy .npz or .npy")
    if p.suffix == ".npy":
        try:
            x = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # ValueError for pickled or malformed arrays, OSError
            raise DataError(f"{str(p)!r} is not a readable .npy file ({err}); write it with numpy.save.") from None
        return RawData(DiskArray.npy(p) if stream.wanted(cfg, x.shape) else np.array(x), None, origin=str(p))
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = list(f.keys())
            if cfg.x_key not in keys:
                raise DataError(f"{str(p)!r} has no array {cfg.x_key!r} (it has {keys}); set data.x_key to the name of the data array.")
            y = f[cfg.y_key] if cfg.y_key in keys else None
            disk = None
            if cfg.stream is not False:
                try:
                    disk = DiskArray.npz(p, cfg.x_key)
                except DataError:  # a compressed member: "auto" reads it whole
                    if cfg.stream is True:
                        raise
            x = disk if disk is not None and stream.wanted(cfg, disk.shape) else f[cfg.x_key]
    except DataError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError for pickled arrays, OSError
        raise DataError(f"{str(p)!r} is not a readable .npz file ({err}); write it with numpy.savez.") from None
    return RawData(x, y, origin=str(p))


@SOURCES.register("hdf5")
def _hdf5(cfg: DataConfig) -> RawData:
    import h5py

    p = _check_path(cfg, "HDF5")
    try:
        with h5py.File(p, "r") as f:
            if cfg.x_key not in f:
                raise DataError(f"{str(p)!r} has no dataset {cfg.x_key!r} (it has {list(f.keys())}); set data.x_key to the data set's name.")
            y = f[cfg.y_key][()] if cfg.y_key in f else None
            x = DiskArray.hdf5(p, cfg.x_key) if stream.wanted(cfg, f[cfg.x_key].shape) else f[cfg.x_key][()]
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"{str(p)!r} is not a readable HDF5 file ({err}); check data.path.") from None
    return RawData(x, y, origin=str(p))


def _check_layout(x: Union[np.ndarray, DiskArray], y: Optional[np.ndarray], origin: str, min_examples: int = 3
                  ) -> tuple[tuple[int, ...], Optional[np.ndarray]]:
    """Dtype, shape, size and labels of the data (in memory or on disk); returns the shape of
    one example ((H, W) images gain a channel axis) and the labels as int64."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"Data in {origin} has dtype {x.dtype}; expected a real numeric array.")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"Data in {origin} has shape {x.shape}; expected (N, D) tabular, (N, H, W) or (N, C, H, W) images."
        )
    if x.shape[0] < min_examples:
        need = "at least 3 are needed to split train/val/test" if min_examples == 3 else f"at least {min_examples} are needed"
        raise DataError(f"Data in {origin} has {x.shape[0]} examples; {need}.")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"Labels in {origin} have shape {y.shape}; expected ({x.shape[0]},), one per example.")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise DataError(f"Labels in {origin} must be integers; got dtype {y.dtype}.")
        y = y.astype(np.int64)
    shape = tuple(x.shape[1:])
    return ((1, *shape) if len(shape) == 2 else shape), y


def _validate(x: np.ndarray, y: Optional[np.ndarray], origin: str, min_examples: int = 3) -> tuple[np.ndarray, Optional[np.ndarray]]:
    shape, y = _check_layout(x, y, origin, min_examples)
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"Data in {origin} holds {bad} NaN or infinite values; remove or impute them before training.")
    return x.reshape(len(x), *shape), y  # (N, H, W) -> (N, 1, H, W)


@dataclass
class Split:
    """One split: x (N, *shape) float32, y (N,) int64 or None."""

    x: Tensor
    y: Optional[Tensor]

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), None if self.y is None else self.y.to(device))

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest value of the split."""
        return float(self.x.min()), float(self.x.max())


@dataclass
class Dataset:
    """Train / val / test splits with the preprocessing that produced them; the splits are
    :class:`StreamSplit` objects when the data are streamed (``data.stream``)."""

    train: Union[Split, StreamSplit]
    val: Union[Split, StreamSplit]
    test: Union[Split, StreamSplit]
    shape: tuple[int, ...]
    binarize: str
    origin: str
    class_names: Optional[list[str]] = None
    info: dict = field(default_factory=dict)

    @property
    def scaler(self) -> Scaler:
        """The scaling fitted on the training split (``data.scale``)."""
        return Scaler.from_state(self.info["scaler"])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def evaluated_train(self) -> Split:
        """The training split as evaluation sees data: with dynamic binarization the training
        split holds grey levels (re-sampled every epoch) while val/test were binarized once, so
        analyses that fit on training data (probes, PCA, kNN scores) get a fixed binarization
        here too, and train and test features are alike."""
        if self.binarize != "dynamic":
            return self.train
        if "_evaluated_train" not in self.__dict__:
            seed = self.info.get("seed", 0) * 7919 + 3
            self.__dict__["_evaluated_train"] = Split(_binarize(self.train.x, seed), self.train.y)
        return self.__dict__["_evaluated_train"]

    def to(self, device) -> "Dataset":
        return Dataset(self.train.to(device), self.val.to(device), self.test.to(device), self.shape,
                       self.binarize, self.origin, self.class_names, self.info)


def _binarize(x: Tensor, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def _split_indices(cfg: DataConfig, n: int, anomalies: np.ndarray, rng: np.random.Generator, origin: str) -> dict[str, np.ndarray]:
    """Rows of each split for data without an official test split: a permutation drawn from the
    seed, cut by the fractions (the streamed and in-memory paths share it, so a run can switch)."""
    order = rng.permutation(n)
    if cfg.limit:
        order = order[: cfg.limit]
    moved, order = order[anomalies[order]], order[~anomalies[order]]
    m = len(order)
    n_test = max(1, int(round(cfg.test_fraction * m)))
    n_val = max(1, int(round(cfg.val_fraction * m)))
    if m - n_test - n_val < 1:
        raise DataError(f"Data in {origin} has {m} examples, too few for data.val_fraction = {cfg.val_fraction} and "
                        f"data.test_fraction = {cfg.test_fraction} (their sum must leave training examples); supply more "
                        "data or lower the fractions.")
    return {"test": np.concatenate([order[:n_test], moved]), "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :]}


def _normal_only(cfg: DataConfig, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One-class protocol: which training and validation examples are of the normal class."""
    present = sorted(set(np.unique(labels["train"]).tolist()) | set(np.unique(labels["test"]).tolist()))
    if cfg.normal_class not in present:
        raise DataError(f"data.normal_class = {cfg.normal_class} is not a label of the data; choose one of {present}.")
    keep = {k: labels[k] == cfg.normal_class for k in ("train", "val")}
    if not keep["train"].any():
        raise DataError(f"data.normal_class = {cfg.normal_class} leaves no training examples; choose a class the data holds.")
    return keep


def load_data(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Load, validate, split (deterministically from ``seed``), scale and binarize a data set;
    a source that returns a :class:`DiskArray` gives streamed splits (:mod:`lvmkit.data.stream`)."""
    raw = SOURCES.get(cfg.name)(cfg)
    origin = raw.origin or cfg.name
    streamed = isinstance(raw.x, DiskArray)
    if cfg.stream is True and not streamed:
        raise ConfigError(f"data.stream = true reads HDF5, .npy and .npz files in chunks (data.name = 'hdf5', 'npz' or 'attpc'), but "
                          f"data.name = {cfg.name!r} loads its data whole; set data.stream = false.")
    if streamed:
        x = raw.x
        shape, y = _check_layout(x, raw.y, origin)
        if cfg.binarize != "none":
            raise ConfigError(f"data.binarize = {cfg.binarize!r} needs the whole split in memory, but the data in {origin} are "
                              "streamed; set data.binarize = 'none' or data.stream = false.")
    else:
        x, y = _validate(np.asarray(raw.x), raw.y, origin)
        shape = tuple(x.shape[1:])
    rng = np.random.default_rng(seed)
    if cfg.normal_class is not None and y is None:
        raise DataError(f"data.normal_class needs labels, but the data in {origin} has none; supply labels (data.y_key or data.label_column).")
    if cfg.anomaly_split and cfg.normal_class is None:
        raise ConfigError("data.anomaly_split sends every example outside data.normal_class to the test set, but "
                          "data.normal_class is not set; set it to the label of the normal examples.")
    anomalies = np.zeros(len(x), dtype=bool) if not cfg.anomaly_split else (y != cfg.normal_class)
    if raw.test_x is not None:
        tx, ty = _validate(np.asarray(raw.test_x), raw.test_y, origin)
        order = rng.permutation(len(x))
        if cfg.limit:
            order = order[: cfg.limit]
            tx, ty = tx[: max(1, cfg.limit // 5)], None if ty is None else ty[: max(1, cfg.limit // 5)]
        moved, order = order[anomalies[order]], order[~anomalies[order]]
        n_val = max(1, int(round(cfg.val_fraction * len(order))))
        idx = {"val": order[:n_val], "train": order[n_val:]}
        parts = {k: (x[v], None if y is None else y[v]) for k, v in idx.items()}
        parts["test"] = (np.concatenate([tx, x[moved]]), None if ty is None else np.concatenate([ty, y[moved]]))
        if cfg.normal_class is not None:
            keep = _normal_only(cfg, {k: b for k, (_, b) in parts.items()})
            parts.update({k: (parts[k][0][m], parts[k][1][m]) for k, m in keep.items()})
    else:
        idx = _split_indices(cfg, len(x), anomalies, rng, origin)
        if cfg.normal_class is not None:
            keep = _normal_only(cfg, {k: y[v] for k, v in idx.items()})
            idx.update({k: idx[k][m] for k, m in keep.items()})
        if not streamed:
            parts = {k: (x[v], None if y is None else y[v]) for k, v in idx.items()}

    info: dict = dict(raw.info, seed=seed)
    if cfg.normal_class is not None:
        info["normal_class"] = cfg.normal_class

    # Scaling fitted on the training split alone, then applied unchanged to every split.
    if raw.scale is not None and cfg.scale not in (None, raw.scale):
        raise ConfigError(f"data.name = {cfg.name!r} scales its data itself ({raw.scale!r}), so data.scale = {cfg.scale!r} "
                          "cannot apply; remove data.scale.")
    if streamed:
        splits, more = stream.open_splits(x, idx, y, shape, streaming_scaling(cfg.scale or raw.scale, len(shape)), cfg, seed)
        info.update(more)
        return Dataset(splits["train"], splits["val"], splits["test"], shape, cfg.binarize, origin, raw.class_names, info)
    scaler = fit_scaler(cfg.scale or raw.scale, parts["train"][0])
    info["scaler"] = scaler.state()
    scaled = {k: scaler.transform(a) for k, (a, _) in parts.items()}
    info["out_of_range"] = {k: scaler.out_of_range(a) for k, a in scaled.items() if k != "train"}
    splits = {k: Split(torch.from_numpy(np.ascontiguousarray(scaled[k])), None if b is None else torch.from_numpy(b))
              for k, (_, b) in parts.items()}

    if cfg.binarize != "none":
        lo_, hi_ = float(splits["train"].x.min()), float(splits["train"].x.max())
        if lo_ < 0 or hi_ > 1:
            raise DataError(f"data.binarize = {cfg.binarize!r} needs values in [0, 1], got [{lo_:.3g}, {hi_:.3g}]; set data.scale = 'global' or 'minmax'.")
        # Static: every split once. Dynamic: val/test once here, train re-sampled each epoch.
        for i, k in enumerate(("train", "val", "test")):
            if cfg.binarize == "static" or k != "train":
                splits[k] = Split(_binarize(splits[k].x.clamp(0.0, 1.0), seed * 7919 + i), splits[k].y)
    return Dataset(splits["train"], splits["val"], splits["test"], shape, cfg.binarize, origin, raw.class_names, info)


def prepare_like(x: np.ndarray, dataset: Dataset, seed: int = 0, origin: str = "the given array") -> Tensor:
    """Validate and preprocess new data exactly as ``dataset`` was (the training split's scaling,
    binarization); values outside the training range are counted in a warning, not clipped."""
    x, _ = _validate(np.asarray(x), None, origin, min_examples=1)
    if tuple(x.shape[1:]) != tuple(dataset.shape):
        raise DataError(f"Data in {origin} has examples of shape {tuple(x.shape[1:])}, but the model was trained on {tuple(dataset.shape)}.")
    scaler = dataset.scaler
    x = scaler.transform(x)
    outside = scaler.out_of_range(x)
    if outside:
        warnings.warn(f"{outside} values in {origin} lie outside the training data's range (scaled outside [0, 1]); "
                      "they are kept as they are (a Bernoulli likelihood reads them clipped).", LvmkitWarning, stacklevel=2)
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if dataset.binarize != "none":
        out = _binarize(out.clamp(0.0, 1.0), seed)
    return out


def batches(split: Union[Split, StreamSplit], batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            dynamic_binarize: bool = False) -> Iterator[tuple[Tensor, Optional[Tensor]]]:
    """Mini-batches of a split already on its device; shuffling and binarization draw from
    ``generator`` so an epoch is reproducible from its seed. A streamed split reads its chunks
    (:meth:`StreamSplit.batches`; its data are never binarized)."""
    if isinstance(split, StreamSplit):
        yield from split.batches(batch_size, shuffle=shuffle, generator=generator)
        return
    n = len(split)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        if shuffle:
            idx = order[start : start + batch_size]
            xb = split.x.index_select(0, idx)
            yb = None if split.y is None else split.y.index_select(0, idx)
        else:
            xb = split.x[start : start + batch_size]
            yb = None if split.y is None else split.y[start : start + batch_size]
        if dynamic_binarize:
            u = torch.rand(xb.shape, generator=generator).to(xb.device)
            xb = (u < xb).to(xb.dtype)
        yield xb, yb
