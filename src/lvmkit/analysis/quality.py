"""Sample quality of a generative model: Frechet distance, precision and recall, mode coverage,
all measured in the feature space of a classifier that lvmkit trains on the data set's own labels.

Inception features (the FID of Heusel et al. 2017) suit natural photographs, not 8x8 digits or
detector images, and cannot be downloaded here; so every data set gets a small classifier with a
fixed architecture, seed and protocol (:data:`PROTOCOL`), trained once on its training split and
cached. Numbers are comparable between runs on the same data set and split, not across data sets:
beside every figure stands its floor, the same figure for held-out training examples.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.linalg import LinAlgWarning, sqrtm
from torch import Tensor, nn

from lvmkit.core.checkpoint import load_checkpoint, save_checkpoint
from lvmkit.core.errors import CheckpointError, ConfigError, DataError
from lvmkit.runs.run import Run
from lvmkit.data import Split, batches, load_data

#: Names the classifier's architecture (:class:`FeatureNet`) and training protocol (Adam 1e-3,
#: batch 128, 10 epochs clipped to [300, 4000] steps, seed 0); bump it whenever either changes,
#: so that cached classifiers of the old protocol are not reused.
PROTOCOL = "lvmkit-feature-net-1"
_K = 3  # neighbours for the precision/recall radii (Kynkaanniemi et al. 2019 use k = 3)
_BATCH = 1000  # examples per forward pass when sampling or extracting features


# -- the Frechet distance (Heusel et al. 2017; Dowson & Landau 1982) -------------------------
def frechet_gaussians(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, eps: float = 1e-6) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2):
    |mu1 - mu2|^2 + Tr(s1 + s2 - 2 (s1 s2)^{1/2}).

    The matrix square root is taken in float64. s1 s2 is similar to s1^{1/2} s2 s1^{1/2}, which
    is positive semi-definite, so its root is real up to rounding: tiny imaginary parts are
    dropped. When the product is singular (fewer examples than features, dead units) the root
    is retaken of (s1 + eps I)(s2 + eps I), with eps relative to the covariances' scale.

    Raises:
        ValueError: the shapes disagree, or the covariances are far from positive semi-definite.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"Means must be (d,) and covariances (d, d) with one d; got {mu1.shape}, {s1.shape}, "
                         f"{mu2.shape}, {s2.shape}.")
    scale = max(np.trace(s1), np.trace(s2)) / d
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)  # scipy warns (not raises) on a singular matrix
        try:
            root = sqrtm(s1 @ s2)
            singular = not np.all(np.isfinite(root))
        except LinAlgWarning:
            singular = True
    if singular:
        offset = eps * max(scale, np.finfo(np.float64).tiny) * np.eye(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LinAlgWarning)  # handled: the offset makes it invertible
            root = sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        if np.abs(np.diagonal(root).imag).max() > 1e-3 * max(scale, 1e-12):
            raise ValueError("The covariances are not positive semi-definite (the square root of their product has "
                             "large imaginary parts); pass covariance matrices.")
        root = root.real
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))
    return max(value, 0.0)  # a squared distance: a negative value is rounding of a zero


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = examples): the FID
    of Heusel et al. 2017 in whatever feature space ``a`` and ``b`` come from.

    Means and unbiased covariances are estimated from each set; the estimate is biased upwards
    by O(d / n) for n examples in d dimensions, so compare only figures with like set sizes.

    Raises:
        ValueError: the sets are not 2-D, have different widths, or have fewer than 2 rows.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"Feature sets must be (n, d) with one d and n >= 2; got {a.shape} and {b.shape}.")
    return frechet_gaussians(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# -- improved precision and recall (Kynkaanniemi et al. 2019) --------------------------------
def _chunk_rows(n_cols: int) -> int:
    return max(1, 2**24 // max(n_cols, 1))  # about 128 MiB of float64 distances per chunk


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    step = _chunk_rows(len(x))
    # The (k + 1)-th smallest distance: the smallest is the row to itself.
    return torch.cat([torch.cdist(x[i : i + step], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), step)])


def _fraction_covered(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of ``points`` inside at least one ball (centre, radius), boundary included."""
    step, inside = _chunk_rows(len(centres)), 0
    for i in range(0, len(points), step):
        inside += int((torch.cdist(points[i : i + step], centres) <= radii[None]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = _K, *, device: str = "cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points, each of radius the distance to
    its k-th nearest neighbour in the same set. Precision is the fraction of ``fake`` points in
    the real manifold (are samples realistic?); recall the fraction of ``real`` points in the
    fake manifold (is the data covered?). Distances are computed in float64, in chunks, so
    10,000 x 10,000 sets need about 128 MiB at a time. The radii grow as a set shrinks: compare
    only figures with like set sizes.

    Raises:
        ValueError: the sets are not 2-D, have different widths, or have k or fewer rows.
    """
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"Feature sets must be (n, d) with one d; got {tuple(real_t.shape)} and {tuple(fake_t.shape)}.")
    if k < 1 or min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"k must be at least 1 and below both set sizes; got k = {k} for sets of "
                         f"{len(real_t)} and {len(fake_t)} rows.")
    precision = _fraction_covered(fake_t, real_t, _knn_radii(real_t, k))
    recall = _fraction_covered(real_t, fake_t, _knn_radii(fake_t, k))
    return precision, recall


# -- the feature classifier ------------------------------------------------------------------
class FeatureNet(nn.Module):
    """A classifier whose penultimate 128 activations are the feature space of the measures.

    Images (C, H, W) of any size: 3x3 convolutions with 32 then 64 channels, each of stride 2
    while the larger side exceeds 4, then more 64-channel stride-2 convolutions until it is
    <= 4 (8x8 -> 4x4, 28x28 -> 4x4 in three, 128x128 -> 4x4 in five), flattened into a 128-unit
    layer. Anything else is flattened into an MLP 256-128. ReLU throughout; a linear layer on
    the features gives the class logits.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.input_shape, self.n_classes = tuple(input_shape), n_classes
        if len(self.input_shape) == 3:
            layers: list[nn.Module] = []
            c_in, (h, w), widths = self.input_shape[0], self.input_shape[1:], [32, 64]
            while widths or max(h, w) > 4:
                c_out, stride = (widths.pop(0) if widths else 64), (2 if max(h, w) > 4 else 1)
                layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
                c_in, h, w = c_out, math.ceil(h / stride), math.ceil(w / stride)
            self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * h * w, 128), nn.ReLU())
        else:
            width = math.prod(self.input_shape)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (batch, 128) of examples ``x`` (batch, *input_shape)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (batch, n_classes)."""
        return self.head(self.body(x))


def _cache_dir() -> Path:
    root = os.environ.get("LVMKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lvmkit") / "feature-nets"


def _label_index(y: Tensor, classes: list[int]) -> Tensor:
    """Labels -> indices into ``classes``; -1 for a label the classifier never saw."""
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup.get(int(v), -1) for v in y.tolist()], dtype=torch.long)


@torch.no_grad()
def _apply(net: FeatureNet, x: Tensor, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, 128) as float64 and predicted class indices (n,), in batches."""
    net.eval()
    feats, preds = [], []
    for i in range(0, len(x), _BATCH):
        f = net.features(x[i : i + _BATCH].to(device))
        feats.append(f.double().cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def _train(data, classes: list[int], device: str, progress: bool) -> tuple[FeatureNet, dict]:
    train = data.evaluated_train()  # fixed binarization when training re-samples it
    y = _label_index(train.y, classes)
    steps_per_epoch = math.ceil(len(train) / 128)
    steps = min(max(10 * steps_per_epoch, 300), 4000)  # small sets get more passes, large ones fewer
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seed 0 without touching the caller's random state
        torch.manual_seed(0)
        net = FeatureNet(data.shape, len(classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    if progress:
        print(f"Training the feature classifier ({steps} steps; cached for later runs)...", file=sys.stderr)
    labelled = Split(train.x, y)
    step = 0
    while step < steps:  # passes over the data in lvmkit's shuffled mini-batches
        for xb, yb in batches(labelled, 128, shuffle=True, generator=gen):
            if step == steps:
                break
            loss = nn.functional.cross_entropy(net(xb.to(device)), yb.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    accuracy = {}
    for name in ("val", "test"):  # None where a split has no labels (an unlabelled official test set)
        split = getattr(data, name)
        correct = None if split.y is None else _apply(net, split.x, device)[1] == _label_index(split.y, classes).numpy()
        accuracy[name] = None if correct is None or not len(correct) else float(correct.mean())
    info = {"test_accuracy": accuracy["test"], "val_accuracy": accuracy["val"], "steps": steps,
            "train_seconds": round(time.perf_counter() - t0, 3)}
    if progress:
        print(f"Feature classifier: test accuracy {accuracy['test']} in {info['train_seconds']:.1f} s.", file=sys.stderr)
    return net.eval(), info


def feature_net(data, data_config_key: str, progress: bool = False, *, device: str = "cpu") -> tuple[FeatureNet, dict]:
    """The data set's feature classifier: loaded from the cache, or trained and cached.

    Args:
        data: a labelled :class:`~lvmkit.Dataset`.
        data_config_key: text that determines the data and its split (a run's data config as
            JSON and its seed); hashed with :data:`PROTOCOL` and the input shape into the cache
            file's name under ``$LVMKIT_CACHE/feature-nets/`` (default ``~/.cache/lvmkit``).
        progress: say on stderr when a classifier is being trained.
        device: where to train and run it.

    Returns:
        The network (eval mode, on ``device``) and info: test_accuracy, val_accuracy, protocol,
        cache_file, classes (the labels, in logit order), class_names, trained (False when
        loaded from the cache). A cache file that is unreadable or does not match is retrained
        and overwritten.

    Raises:
        DataError: the training split has no labels or fewer than two classes.
    """
    if data.train.y is None:
        raise DataError("The feature classifier needs class labels, but the training split has none; use a labelled data set.")
    classes = sorted(set(data.train.y.tolist()))
    if len(classes) < 2:
        raise DataError(f"The feature classifier needs at least two classes in the training split, got {classes}; "
                        "use data with several labelled classes (data.normal_class keeps only one).")
    shape = list(data.shape)
    digest = hashlib.sha256(json.dumps([PROTOCOL, data_config_key, shape]).encode()).hexdigest()[:24]
    path = _cache_dir() / f"{digest}.pt"
    names = [data.class_names[c] if data.class_names and 0 <= c < len(data.class_names) else str(c) for c in classes]
    try:
        payload = load_checkpoint(path, map_location=device)
        if (payload.get("protocol"), payload.get("key"), payload.get("input_shape"), payload.get("classes")) != \
                (PROTOCOL, data_config_key, shape, classes):
            raise CheckpointError("stale")
        net = FeatureNet(data.shape, len(classes)).to(device)
        net.load_state_dict(payload["model"])
        info = {k: payload[k] for k in ("test_accuracy", "val_accuracy", "steps", "train_seconds")}
        trained = False
    except (CheckpointError, KeyError, RuntimeError):  # missing, corrupted, stale: retrain and overwrite
        net, info = _train(data, classes, device, progress)
        save_checkpoint(path, {"protocol": PROTOCOL, "key": data_config_key, "input_shape": shape, "classes": classes,
                               "class_names": names, "model": {k: v.cpu() for k, v in net.state_dict().items()}, **info})
        trained = True
    return net.eval(), {**info, "protocol": PROTOCOL, "cache_file": str(path), "classes": classes,
                        "class_names": names, "trained": trained}


# -- the measure -----------------------------------------------------------------------------
def _subset(n_total: int, n: int, seed: int) -> Tensor:
    if n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def quality(run: Run | str | Path, n: int = 10000, *, seed: int = 0, device: str = "cpu", write: bool = True,
            progress: bool = False, sampler: str | None = None, steps: int | None = None,
            eta: float | None = None, weights: str | None = None) -> dict[str, Any]:
    """Sample quality of a trained generative run, in the data set's classifier feature space.

    Draws ``n`` samples (batch i of 1000 from seed + i) and compares them with the reference
    set, the test split (a seeded subset of ``n`` when it is larger). ``frechet_distance``
    compares Gaussians fitted to all ``n`` samples and to the reference; ``precision`` and
    ``recall`` (k = 3) use the first n_reference samples, since k-NN radii depend on set size.
    ``floor`` holds the same three figures for a subset of the training split of the reference's
    size against the reference: what a perfect model of the data would score, up to sampling.
    ``class_histogram``: the classifier's predicted class fractions over the samples, beside the
    reference's true ones; ``classes_present`` counts classes with at least a tenth of the
    uniform share (0.1 / n_classes) of the samples. ``samples_outside_data_range``: the fraction
    of sample values outside the training data's [min, max] (samples are not clamped).
    ``sampler``, ``steps``, ``eta``: an iterative model's sampler (see :func:`lvmkit.sample`);
    the result records them and the sampling time. ``weights``: "ema" or "raw" (None: the EMA
    weights when the run kept them), recorded too.

    Returns:
        The result (also written to RUN/quality.json when ``write``).

    Raises:
        ConfigError: ``n`` < 4, or the model is not a Generator.
        DataError: the data set has no labels, or the samples are not finite or of the wrong shape.
    """
    from lvmkit.core.contract import Generator, require

    t0 = time.perf_counter()
    if n < _K + 1:
        raise ConfigError(f"The number of samples must be at least {_K + 1} (precision and recall need k + 1 = "
                          f"{_K + 1} points), got {n}; pass e.g. --n 10000.")
    run = run if isinstance(run, Run) else Run.open(run)
    # One reference for every model of a data set: the grey-level images, even when a model was
    # trained on binarized pixels (its samples are means of p(x|z), in [0, 1] too), so runs of
    # any family on that data set are scored in one feature space against one test set.
    dcfg = run.config.data.model_copy(update={"binarize": "none"})
    data = run.data() if run.config.data.binarize == "none" else load_data(dcfg, run.config.train.seed)
    if data.train.y is None:
        raise DataError(f"lvmkit quality needs class labels to train its feature classifier, but data set "
                        f"{run.config.data.name!r} has none; use a labelled data set (e.g. digits or fashion-mnist) "
                        f"or give labels via data.y_key.")
    from lvmkit.analysis.sampling import ema_choice, sampler_for

    model = run.load_model("best", device, ema=ema_choice(weights))
    require(model, Generator, "lvmkit quality")

    draw = sampler_for(model, sampler, steps, eta)
    key = f"{dcfg.model_dump_json()}|seed={run.config.train.seed}"
    net, info = feature_net(data, key, progress, device=device)

    t_sample = time.perf_counter()
    with torch.no_grad():  # batch i of up to 1000 samples draws from seed + i
        samples = torch.cat([draw(min(_BATCH, n - start), torch.Generator(device).manual_seed(seed + i)).cpu()
                             for i, start in enumerate(range(0, n, _BATCH))])
    t_sample = time.perf_counter() - t_sample
    if tuple(samples.shape) != (n, *data.shape):
        raise DataError(f"The model's samples have shape {tuple(samples.shape)}, but the data's examples are "
                        f"{tuple(data.shape)}; was the run trained on other data?")
    bad = int((~torch.isfinite(samples)).sum())
    if bad:
        raise DataError(f"The model's samples hold {bad} NaN or infinite values; the run may have diverged, retrain it.")
    train = data.evaluated_train()
    lo, hi = float(train.x.min()), float(train.x.max())
    outside = float(((samples < lo) | (samples > hi)).double().mean())

    keep = _subset(len(data.test), n, seed)
    ref, ref_y = data.test.x[keep], (data.test.y[keep] if data.test.y is not None else None)
    m = len(ref)
    if m < _K + 1:
        raise DataError(f"The test split has {m} examples, fewer than the {_K + 1} precision and recall need; "
                        "use a larger data set or data.test_fraction.")
    floor_x = train.x[_subset(len(train), m, seed + 1)]
    f_gen, pred = _apply(net, samples, device)
    f_ref, _ = _apply(net, ref, device)
    f_floor, _ = _apply(net, floor_x, device)

    def figures(fake: np.ndarray, fake_pr: np.ndarray) -> dict[str, float]:
        p, r = precision_recall(f_ref, fake_pr, _K, device=device)
        return {"frechet_distance": frechet_distance(fake, f_ref), "precision": p, "recall": r}

    n_classes = len(info["classes"])
    hist = np.bincount(pred, minlength=n_classes) / n
    ref_idx = _label_index(ref_y, info["classes"]).numpy() if ref_y is not None else None
    ref_hist = [None] * n_classes if ref_idx is None else np.bincount(ref_idx[ref_idx >= 0], minlength=n_classes) / m
    res: dict[str, Any] = {
        **figures(f_gen, f_gen[:m]),
        "floor": figures(f_floor, f_floor),
        "class_histogram": [{"class": name, "fraction": float(f), "reference": None if r is None else float(r)}
                            for name, f, r in zip(info["class_names"], hist, ref_hist)],
        "classes_present": int((hist >= 0.1 / n_classes).sum()),
        "n_classes": n_classes,
        "samples_outside_data_range": outside,
        "classifier": {"test_accuracy": info["test_accuracy"], "protocol": info["protocol"],
                       "cache_file": info["cache_file"]},
        "n_generated": n,
        "n_reference": m,
        "seed": seed,
        "sampler": {"name": sampler, "steps": steps, "eta": eta} if (sampler or steps or eta is not None) else "the model's default",
        "weights": weights or ("ema" if run.config.train.ema_decay > 0 else "raw"),
        "sample_seconds_per_1000": round(1000 * t_sample / n, 4),
    }
    res["seconds"] = round(time.perf_counter() - t0, 3)
    if write:
        run.write_json("quality.json", res)
    return res
