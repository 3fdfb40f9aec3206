"""Clustering of latent codes and its metrics (ACC with Hungarian matching, NMI, ARI, purity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture

from lvmkit.core.contract import ClusterModel, as_model_tensor, require
from lvmkit.core.errors import DataError
from lvmkit.core.registry import Registry
from lvmkit.runs.run import Run

CLUSTERERS: Registry = Registry("clustering method")
CLUSTERERS.register("kmeans")(lambda k, seed: KMeans(k, n_init=10, random_state=seed))
CLUSTERERS.register("gmm")(lambda k, seed: GaussianMixture(k, covariance_type="full", n_init=2, random_state=seed))


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Clustering accuracy: the best one-to-one map of clusters to classes
    (``scipy.optimize.linear_sum_assignment`` on the contingency table), as in DEC (Xie et al. 2016)."""
    classes, yt = np.unique(y_true, return_inverse=True)
    clusters, yp = np.unique(y_pred, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (yp, yt), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(y_true))


def cluster_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """ACC, NMI, ARI, per-cluster purity (share of the cluster's majority class) and sizes."""
    purity, majority, sizes = [], [], []
    for c in np.unique(y_pred):
        members = y_true[y_pred == c]
        vals, counts = np.unique(members, return_counts=True)
        purity.append(float(counts.max() / len(members)))
        majority.append(int(vals[counts.argmax()]))
        sizes.append(int(len(members)))
    return {"acc": hungarian_accuracy(y_true, y_pred), "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
            "ari": float(adjusted_rand_score(y_true, y_pred)), "purity": purity, "majority_class": majority,
            "sizes": sizes}


def fit_predict(method: str, features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster labels of ``features`` (N, d) into ``k`` groups."""
    if k < 2:
        raise DataError(f"The number of clusters must be at least 2, got {k}; pass e.g. --k 10.")
    if k > len(features):
        raise DataError(f"Cannot form {k} clusters from {len(features)} examples; pass a smaller --k.")
    try:
        return np.asarray(CLUSTERERS.get(method)(k, seed).fit_predict(features))
    except ValueError as err:  # a mixture whose components collapse: ill-defined covariances
        raise DataError(f"Clustering {len(features)} codes of width {features.shape[1]} into {k} groups with {method!r} "
                        f"failed ({' '.join(str(err).split())}); pass a smaller --k or --method kmeans.") from None


def cluster(run: Run | str | Path, k: int, method: str = "kmeans", *, seed: int = 0, metrics: bool | None = None,
            baselines: bool = True, write: bool = True) -> dict:
    """Cluster the test split's codes (and, as baselines, raw inputs and PCA codes with K-means).

    ``metrics``: None computes them when labels exist; True demands labels. ``method = "model"``
    takes the clusters the model learned itself (a :class:`~lvmkit.core.contract.ClusterModel`:
    DEC). PCA has the codes' width, or every component the data has when the codes are wider
    (then ``"notes"`` says so). Writes ``RUN/cluster.json`` and a confusion-matrix figure.

    Raises:
        ConfigError: the model is not an encoder, or ``method = "model"`` for a model without
            clusters of its own; an unknown method.
        DataError: ``metrics`` without labels, a ``k`` the codes cannot be split into (or, with
            ``"model"``, other than the model's number of clusters).
    """
    from lvmkit.analysis.latent import LatentEncoder
    from lvmkit.analysis.probe import pca_baseline

    run = run if isinstance(run, Run) else Run.open(run)
    if method != "model":
        CLUSTERERS.get(method)
    enc = LatentEncoder(run, warn_out_of_range=False).fit()  # the run's own splits: counted when loaded
    if method == "model":
        require(enc.model_, ClusterModel, "--method model", "use --method kmeans or gmm")
        if enc.model_.n_clusters != k:
            raise DataError(f"This run's model learned {enc.model_.n_clusters} clusters; pass --k {enc.model_.n_clusters} "
                            "with --method model.")
    data = run.data()
    y = None if data.test.y is None else data.test.y.numpy()
    if metrics and y is None:
        raise DataError(f"Clustering metrics need labels, but the data of run {str(run.path)!r} has none; drop --metrics.")
    x = data.test.x.numpy()
    feats = {"latent": (method, enc.transform(x))}
    notes = {}
    if baselines:
        flat = x.reshape(len(x), -1)
        train_x = data.evaluated_train().x.numpy()
        pca, note = pca_baseline(train_x.reshape(train_x.shape[0], -1), enc.model_.latent_dim, seed)
        if note:
            notes["pca"] = note
        feats.update({"raw": ("kmeans", flat), "pca": ("kmeans", pca.transform(flat))})
    out: dict = {"k": k, "method": method, "n": len(x), "class_names": data.class_names, "results": {}, "notes": notes}
    for name, (how, f) in feats.items():
        pred = _model_clusters(enc.model_, f, k) if how == "model" else fit_predict(how, f, k, seed)
        res: dict = {"method": how, "sizes": np.bincount(pred, minlength=k).tolist()}
        if y is not None and metrics is not False:
            res.update(cluster_metrics(y, pred))
            if name == "latent":
                res["confusion"] = _contingency(y, pred).tolist()
        out["results"][name] = res
    if write:
        run.write_json("cluster.json", out)
        if "confusion" in out["results"]["latent"]:
            from lvmkit.report import figures

            run.figures.mkdir(exist_ok=True)
            fig = figures.confusion(np.array(out["results"]["latent"]["confusion"]), data.class_names)
            fig.savefig(run.figures / "cluster_confusion.png", dpi=110, bbox_inches="tight")
    return out


def _model_clusters(model: ClusterModel, codes: np.ndarray, k: int) -> np.ndarray:
    """The clusters the model learned itself (checked in :func:`cluster`)."""
    import torch

    with torch.no_grad():
        return model.predict_clusters(as_model_tensor(model, codes, "--method model")).cpu().numpy()


def _contingency(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Classes (rows) x clusters (columns) counts."""
    classes, yi = np.unique(y, return_inverse=True)
    table = np.zeros((len(classes), int(pred.max()) + 1), dtype=np.int64)
    np.add.at(table, (yi, pred), 1)
    return table
