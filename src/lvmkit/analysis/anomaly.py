"""Anomaly detection with a trained model: scores, ROC / precision-recall, thresholds.

Thresholds are chosen on normal validation data only (the run's validation split), at the
target false-positive rates, and then applied to the test data (the fraud example of the ML
lectures does this at 10% and 0.2%); the test set never chooses a threshold.
"""
from __future__ import annotations

import abc
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve
from torch import Tensor

from lvmkit.data import prepare_like
from lvmkit.core.errors import DataError, LvmkitWarning
from lvmkit.core.contract import AbstractModel, Encoder, EnergyModel, EvidenceBound, Reconstructor, has, require
from lvmkit.core.registry import Registry
from lvmkit.runs.run import Run

SCORES: Registry[Callable[[], "AnomalyScore"]] = Registry("anomaly score")


class AnomalyScore(abc.ABC):
    """A per-example anomaly score (higher = more anomalous), fitted on normal data."""

    #: the capabilities whose methods the score calls; a model must offer every one
    needs: tuple[type, ...] = ()

    def fit(self, model: AbstractModel, train_x: Tensor, val_x: Tensor) -> "AnomalyScore":
        """Learn what the score needs from normal training (and validation) examples."""
        return self

    @abc.abstractmethod
    def __call__(self, model: AbstractModel, x: Tensor) -> np.ndarray:
        """Scores of the examples of ``x``, shape (N,)."""


def _batched(fn, x: Tensor, batch_size: int = 512) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).cpu().numpy()


@SCORES.register("recon")
class ReconScore(AnomalyScore):
    """Squared reconstruction error, summed over dimensions (the fraud example's score)."""

    needs = (Reconstructor,)

    def __call__(self, model, x):
        return _batched(lambda b: ((model.reconstruct(b) - b) ** 2).flatten(1).sum(1), x)


@SCORES.register("elbo")
class ElboScore(AnomalyScore):
    """Minus the evidence lower bound (a VAE's or DRAW's ELBO, a diffusion model's variational
    bound), averaged over the model's ``elbo_draws`` draws (10 for a VAE): an upper bound on -log p(x)."""

    needs = (EvidenceBound,)

    def __call__(self, model, x):
        draws = model.elbo_draws
        return _batched(lambda b: -torch.stack([model.elbo(b)["elbo"] for _ in range(draws)]).mean(0), x)


@SCORES.register("energy")
class EnergyScore(AnomalyScore):
    """The model's energy (an RBM's free energy, an EBM's network): -log p(x) up to log Z."""

    needs = (EnergyModel,)

    def __call__(self, model, x):
        return _batched(model.energy, x)


@SCORES.register("latent-knn")
class LatentKNNScore(AnomalyScore):
    """Mean distance of an example's code to its 5 nearest codes of normal training data (fewer
    when the training split has fewer examples)."""

    needs = (Encoder,)

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, model, train_x, val_x):
        from sklearn.neighbors import NearestNeighbors

        if len(train_x) == 0:
            raise DataError("The latent-knn score needs normal training examples to measure distances to, but the "
                            "training split is empty; train on more data.")
        self.index_ = NearestNeighbors(n_neighbors=min(self.k, len(train_x))).fit(_batched(model.embed, train_x))
        return self

    def __call__(self, model, x):
        return self.index_.kneighbors(_batched(model.embed, x))[0].mean(1)


@SCORES.register("recon+knn")
class CombinedScore(AnomalyScore):
    """Reconstruction error plus latent kNN distance, each standardised by its mean and standard
    deviation on normal validation data: anomalies far from the data in pixel or code space."""

    needs = (Reconstructor, Encoder)

    def __init__(self) -> None:
        self.parts = [ReconScore(), LatentKNNScore()]

    def fit(self, model, train_x, val_x):
        self.stats_ = []
        for part in self.parts:
            v = part.fit(model, train_x, val_x)(model, val_x)
            self.stats_.append((float(v.mean()), float(v.std()) or 1.0))
        return self

    def __call__(self, model, x):
        return sum((p(model, x) - m) / s for p, (m, s) in zip(self.parts, self.stats_))


def supported_scores(model) -> list[str]:
    """The registered scores ``model`` offers every capability for."""
    return [name for name in SCORES if all(has(model, need) for need in SCORES.get(name).needs)]


def require_score(model, score_name: str) -> type[AnomalyScore]:
    """The score class ``score_name``, or a one-sentence ConfigError when ``model`` lacks what it
    calls, naming the scores this model supports."""
    score_cls = SCORES.get(score_name)
    others = supported_scores(model)
    advice = (f"the scores this {type(model).__name__} supports are {', '.join(others)}" if others else
              f"this {type(model).__name__} supports none of lvmkit's anomaly scores ({', '.join(SCORES)})")
    for capability in score_cls.needs:
        require(model, capability, f"The {score_name!r} anomaly score", advice)
    return score_cls


def thresholds_at_fpr(normal_scores: np.ndarray, target_fpr: list[float]) -> dict[float, float]:
    """For each rate r, the smallest threshold t with mean(normal_scores > t) <= r.

    Warns (:class:`LvmkitWarning`) when r < 1/n for n normal scores: no example may then lie
    above the threshold, which becomes the largest score, whatever r is asked for.
    """
    out = {}
    s = np.sort(normal_scores)
    n = len(s)
    if n == 0:
        raise DataError("Thresholds are chosen on normal validation examples, but the validation split is empty; "
                        "set data.val_fraction above 0 (or train on more data).")
    for r in target_fpr:
        if not 0 < r < 1:
            raise DataError(f"Target false-positive rates must lie in (0, 1); got {r}.")
        k = int(np.floor(r * n))  # at most k normal examples may lie above the threshold
        if k == 0:
            warnings.warn(f"Target false-positive rate {r} is below 1/{n}, the smallest rate {n} normal validation examples "
                          f"can resolve, so its threshold is just the largest validation score; ask for a rate of at least "
                          f"{1 / n:.3g} or validate on more normal data.", LvmkitWarning, stacklevel=2)
        out[r] = float(s[n - k - 1]) if k < n else float(s[0])
    return out


def detection_metrics(scores: np.ndarray, is_anomaly: np.ndarray, thresholds: dict[float, float]) -> dict:
    """AUROC, AUPRC, and at each validation-chosen threshold the test TPR, FPR and confusion
    matrix (counts of normal/anomalous examples below/above it)."""
    if is_anomaly.all() or not is_anomaly.any():
        raise DataError("Anomaly metrics need both normal and anomalous test examples; the labels mark "
                        f"{int(is_anomaly.sum())} of {len(is_anomaly)} as anomalies.")
    at = {}
    for r, t in thresholds.items():
        flagged = scores > t
        at[str(r)] = {"threshold": t, "tpr": float(flagged[is_anomaly].mean()), "fpr": float(flagged[~is_anomaly].mean()),
                      "confusion": {"tn": int((~flagged & ~is_anomaly).sum()), "fp": int((flagged & ~is_anomaly).sum()),
                                    "fn": int((~flagged & is_anomaly).sum()), "tp": int((flagged & is_anomaly).sum())}}
    return {"auroc": float(roc_auc_score(is_anomaly, scores)), "auprc": float(average_precision_score(is_anomaly, scores)),
            "anomaly_fraction": float(is_anomaly.mean()), "at_target_fpr": at}


def anomaly(run: Run | str | Path, score_name: str = "recon", target_fpr: list[float] = (0.1, 0.002), *,
            data_file: str | Path | None = None, anomaly_label: int | float | str | None = None,
            write: bool = True) -> dict:
    """Score the run's test split (or the arrays in ``data_file``: ``x`` and optional labels
    ``y``) and write ``RUN/anomaly.json`` with ROC and precision-recall figures.

    Labels of the run's own test split mark anomalies when the run was trained one-class
    (``data.normal_class``): every other class is anomalous. Labels ``y`` of ``data_file`` must
    be 0/1 anomaly flags, unless ``anomaly_label`` names the label that means anomaly (every
    other label is normal). The random draws of stochastic scores (``elbo``) are seeded from the
    run's seed, as in :func:`lvmkit.evaluate`, so repeated calls give the same numbers.

    Raises:
        ConfigError: an unknown score, or one whose capabilities the model lacks (the message
            names the scores it supports).
        DataError: unreadable ``data_file``, labels that are not 0/1 without ``anomaly_label``,
            an ``anomaly_label`` the labels do not hold, or only one kind of test example.
    Warns:
        LvmkitWarning: a target rate below 1 / (number of normal validation examples).
    """
    run = run if isinstance(run, Run) else Run.open(run)
    SCORES.get(score_name)  # fail early on an unknown name
    model = run.load_model("best")
    score_cls = require_score(model, score_name)
    data = run.data()
    if data_file is not None:
        p = Path(data_file)
        if not p.is_file():
            raise DataError(f"Data file {str(p)!r} does not exist; pass an .npz file with arrays x (and optional y).")
        try:
            with np.load(p, allow_pickle=False) as f:
                x_raw = f["x"] if "x" in f else None
                labels = f["y"] if "y" in f else None
        except Exception as err:
            raise DataError(f"{str(p)!r} is not a readable .npz file ({err}); write it with numpy.savez(x=..., y=...).") from None
        if x_raw is None:
            raise DataError(f"{str(p)!r} has no array 'x'; save the examples to score as x.")
        x = prepare_like(x_raw, data, origin=str(p))
        if labels is None and anomaly_label is not None:
            raise DataError(f"{str(p)!r} has no labels y for anomaly label {anomaly_label!r} to mark; save them as y, "
                            "or leave out --anomaly-label to score only.")
        is_anomaly = None if labels is None else _anomaly_flags(np.asarray(labels), anomaly_label, str(p))
        if is_anomaly is not None and len(is_anomaly) != len(x):
            raise DataError(f"{str(p)!r} has {len(x)} examples but {len(is_anomaly)} labels; give one 0/1 label per example.")
    elif anomaly_label is not None:
        raise DataError(f"An anomaly label ({anomaly_label!r}) applies to the labels y of a --data file, but none was given; "
                        "pass --data FILE.npz, or leave out --anomaly-label to use the run's test split.")
    else:
        x = data.test.x
        normal = run.config.data.normal_class
        is_anomaly = None if (normal is None or data.test.y is None) else (data.test.y.numpy() != normal)
    model.eval()
    torch.manual_seed(run.config.train.seed + 1)  # stochastic scores (elbo) repeat, as in evaluate
    scorer = score_cls().fit(model, data.evaluated_train().x, data.val.x)
    val_scores, test_scores = scorer(model, data.val.x), scorer(model, x)
    thr = thresholds_at_fpr(val_scores, list(target_fpr))
    out: dict = {"score": score_name, "n": len(test_scores), "normal_class": run.config.data.normal_class,
                 "data": str(data_file) if data_file else "test split",
                 "thresholds": {str(r): t for r, t in thr.items()},
                 "validation_fpr": {str(r): float((val_scores > t).mean()) for r, t in thr.items()},
                 "flagged": {str(r): int((test_scores > t).sum()) for r, t in thr.items()}}
    if is_anomaly is not None:
        out.update(detection_metrics(test_scores, is_anomaly, thr))
    if write:
        run.write_json("anomaly.json", out)
        from lvmkit.report import figures

        run.figures.mkdir(exist_ok=True)
        curves = None
        if is_anomaly is not None:
            fpr, tpr, _ = roc_curve(is_anomaly, test_scores)
            prec, rec, _ = precision_recall_curve(is_anomaly, test_scores)
            curves = (fpr, tpr, rec, prec)
        fig = figures.anomaly_curves(test_scores, is_anomaly, curves, thr, out.get("auroc"), out.get("auprc"))
        fig.savefig(run.figures / "anomaly.png", dpi=110, bbox_inches="tight")
    return out


def _anomaly_flags(labels: np.ndarray, anomaly_label, origin: str) -> np.ndarray:
    """Boolean anomaly flags from a file's labels: 0/1 flags, or ``labels == anomaly_label``."""
    values = np.unique(labels)
    shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
    if anomaly_label is None:
        if labels.dtype.kind not in "biuf" or not np.isin(values, [0, 1]).all():
            raise DataError(f"Labels y of {origin!r} must be 0/1 anomaly flags, but they hold {len(values)} values ({shown}); "
                            "pass --anomaly-label VALUE (anomaly_label=) to name the label that means anomaly.")
        return labels.astype(bool)
    target = anomaly_label
    if labels.dtype.kind in "biuf" and isinstance(anomaly_label, str):
        try:
            target = float(anomaly_label)
        except ValueError:
            target = None
    elif labels.dtype.kind == "U":
        target = str(anomaly_label)
    if target is None or not np.any(labels == target):
        raise DataError(f"Anomaly label {anomaly_label!r} is not among the labels y of {origin!r} ({shown}); pass one of them.")
    return labels == target
