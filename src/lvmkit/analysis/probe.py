"""Few-label probes: does a linear classifier on the codes separate the classes?

The thesis protocol (Solli 2019): n labelled examples per class drawn from the training split
(stratified, repeated with different draws), a logistic regression fitted on them, scored on
the whole test split; the same probe on raw inputs and on PCA codes of equal width as baselines
(or of every component the data has, when the codes are wider than that: DRAW's codes of all steps).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lvmkit.core.errors import DataError
from lvmkit.runs.run import Run


def stratified_draw(y: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_per_class`` examples of every class, drawn without replacement."""
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < n_per_class:
            raise DataError(
                f"Class {c} has only {len(idx)} labelled training examples, fewer than the {n_per_class} per class asked for; "
                "ask for fewer labels (e.g. --labels 10,50)."
            )
        out.append(rng.choice(idx, n_per_class, replace=False))
    return np.concatenate(out)


def pca_baseline(flat_train: np.ndarray, width: int, seed: int = 0) -> tuple[PCA, str | None]:
    """PCA fitted on ``flat_train`` (N, D) with ``width`` components, the codes' width, or with
    min(N, D) when the data allow fewer (scikit-learn's limit); then also a note saying so."""
    n, d = flat_train.shape
    allowed = min(n, d)
    note = None
    if width > allowed:
        source = f"the inputs have {d} values" if d <= n else f"the {n} training examples allow no more"
        note = f"PCA of {allowed} components: all the data has ({source}; the codes have {width} numbers)"
    return PCA(min(width, allowed), random_state=seed).fit(flat_train), note


def _fit_probe(train_x: np.ndarray, train_y: np.ndarray):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(train_x, train_y)


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Fit a standardised logistic regression and score it on the test set."""
    return _score(_fit_probe(train_x, train_y), test_x, test_y)


def _score(clf, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    # Standard definitions: precision = TP / (TP + FP), recall = TP / (TP + FN).
    pred = clf.predict(test_x)
    classes = np.unique(test_y)
    p, r, f, _ = precision_recall_fscore_support(test_y, pred, labels=classes, zero_division=0)
    return {"accuracy": float(accuracy_score(test_y, pred)), "macro_f1": float(f1_score(test_y, pred, average="macro")),
            "precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "classes": classes.tolist()}


def _summarise(scores: list[dict]) -> dict:
    out: dict = {"classes": scores[0]["classes"]}
    for key in ("accuracy", "macro_f1"):
        v = np.array([s[key] for s in scores])
        out[key] = {"mean": float(v.mean()), "std": float(v.std())}
    for key in ("precision", "recall", "f1"):
        v = np.array([s[key] for s in scores])
        out[key] = {"mean": v.mean(0).tolist(), "std": v.std(0).tolist()}
    return out


def run_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], y_train: np.ndarray, y_test: np.ndarray,
              labels: list[int], repeats: int, seed: int = 0) -> dict:
    """Probe every representation (name -> features) at every label budget, ``repeats`` draws each."""
    results: dict = {name: {} for name in train}
    for n in labels:
        draws = [stratified_draw(y_train, n, np.random.default_rng(seed + 1000 * r + n)) for r in range(repeats)]
        for name in train:
            scores = [probe_scores(train[name][d], y_train[d], test[name], y_test) for d in draws]
            results[name][str(n)] = _summarise(scores)
    return results


def probe(run: Run | str | Path, labels: list[int] = (10, 100, 1000), repeats: int = 5, *, seed: int = 0,
          baselines: bool = True, write: bool = True) -> dict:
    """Few-label probes on a run's test split; writes ``RUN/probe.json`` and a learning-curve figure.

    A budget larger than the smallest class's training examples is skipped and noted under
    ``"skipped"`` (budget -> reason); ``"labels"`` lists the budgets probed; ``"widths"`` the
    width of each representation, and ``"notes"`` (name -> sentence) a baseline narrower than
    asked (PCA of every component the data has, when the codes are wider).

    Raises:
        ConfigError: the run's model is not an encoder.
        DataError: no labels, non-positive budgets or repeats, or no budget the data can supply.
    """
    from lvmkit.analysis.latent import LatentEncoder

    run = run if isinstance(run, Run) else Run.open(run)
    labels = sorted({int(n) for n in labels})
    if not labels or labels[0] <= 0 or repeats <= 0:
        raise DataError(f"Probe label counts and repeats must be positive; got labels={labels}, repeats={repeats}.")
    enc = LatentEncoder(run, warn_out_of_range=False).fit()  # a model without codes is refused first
    data = run.data()
    if data.train.y is None or data.test.y is None:
        raise DataError(f"The data of run {str(run.path)!r} has no labels, so probe metrics cannot be computed; supply labels (data.y_key).")
    classes, counts = np.unique(data.train.y.numpy(), return_counts=True)
    smallest = int(counts.argmin())
    skipped = {str(n): f"class {classes[smallest]} has only {counts[smallest]} labelled training examples"
               for n in labels if n > counts[smallest]}
    if len(skipped) == len(labels):
        raise DataError(f"Class {classes[smallest]} has only {counts[smallest]} labelled training examples, fewer than the "
                        f"{labels[0]} per class asked for; ask for fewer labels (e.g. --labels 10,50).")
    labels = [n for n in labels if str(n) not in skipped]
    xtr, xte = data.evaluated_train().x.numpy(), data.test.x.numpy()
    train = {"latent": enc.transform(xtr)}
    test = {"latent": enc.transform(xte)}
    notes = {}
    if baselines:
        flat_tr, flat_te = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
        pca, note = pca_baseline(flat_tr, enc.model_.latent_dim, seed)
        if note:
            notes["pca"] = note
        train.update(raw=flat_tr, pca=pca.transform(flat_tr))
        test.update(raw=flat_te, pca=pca.transform(flat_te))
    results = run_probe(train, test, data.train.y.numpy(), data.test.y.numpy(), labels, repeats, seed)
    widths = {name: int(np.prod(f.shape[1:])) for name, f in train.items()}
    out = {"labels": labels, "repeats": repeats, "n_test": len(xte), "class_names": data.class_names, "results": results,
           "skipped": skipped, "widths": widths, "notes": notes}
    if write:
        run.write_json("probe.json", out)
        from lvmkit.report import figures

        run.figures.mkdir(exist_ok=True)
        fig = figures.learning_curve(out)
        fig.savefig(run.figures / "probe.png", dpi=110, bbox_inches="tight")
    return out


def thesis_split(y: np.ndarray, fraction: float, test_share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The thesis's labelled subset (Solli 2019, sec. 4.4): ``fraction`` of each class drawn
    from ``y``, then split per class into classifier training and test (``test_share``)."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = max(2, int(round(fraction * len(idx))))
        if len(idx) < 2:
            raise DataError(f"Class {c} has {len(idx)} labelled training example; the thesis protocol needs at least 2 per class.")
        labelled = idx[:n]
        n_test = min(max(1, int(round(test_share * n))), n - 1)
        test.append(labelled[:n_test])
        train.append(labelled[n_test:])
    return np.concatenate(train), np.concatenate(test)


def thesis_scores(features: np.ndarray, y: np.ndarray, fraction: float = 0.15, test_share: float = 0.3, repeats: int = 10,
                  seed: int = 0, rows: tuple[str, ...] = ("test",)) -> dict:
    """The thesis protocol on ``features`` (N, D) with labels ``y``: per draw, :func:`thesis_split`
    and one logistic regression fitted on the classifier-training rows, scored on each of ``rows``
    ("train": the rows it was fitted on, "test": the held-out ``test_share``; Table 4.4 of Solli
    2019 shows both). Returns ``{row: summary over the draws}`` (as :func:`run_probe`'s)."""
    scores: dict[str, list] = {row: [] for row in rows}
    for r in range(repeats):
        tr, te = thesis_split(y, fraction, test_share, np.random.default_rng(seed + 1000 * r))
        clf = _fit_probe(features[tr], y[tr])
        for row in rows:
            idx = {"train": tr, "test": te}[row]
            scores[row].append(_score(clf, features[idx], y[idx]))
    return {row: _summarise(s) for row, s in scores.items()}


def probe_thesis(run: Run | str | Path, fraction: float = 0.15, test_share: float = 0.3, repeats: int = 10, *,
                 seed: int = 0, write: bool = True) -> dict:
    """The thesis's classification protocol on a run's training split: ``fraction`` of each class
    labelled, split ``1 - test_share`` / ``test_share`` into classifier training and test, the
    same logistic regression as :func:`probe` on the codes, raw inputs and PCA of equal width;
    ``repeats`` draws. Precision and recall are the standard ones (the thesis's eq. 4.2 and 4.3
    swap their names). Writes ``RUN/probe_thesis.json``; the test split is never used.
    """
    from lvmkit.analysis.latent import LatentEncoder

    if not 0 < fraction <= 1 or not 0 < test_share < 1 or repeats <= 0:
        raise DataError(f"The thesis protocol needs 0 < fraction <= 1, 0 < test_share < 1 and repeats > 0; got "
                        f"fraction={fraction}, test_share={test_share}, repeats={repeats}.")
    run = run if isinstance(run, Run) else Run.open(run)
    enc = LatentEncoder(run, warn_out_of_range=False).fit()  # the run's own splits: counted when loaded
    data = run.data()
    if data.train.y is None:
        raise DataError(f"The data of run {str(run.path)!r} has no labels, so probe metrics cannot be computed; supply labels (data.y_key).")
    x = data.evaluated_train().x.numpy()
    y = data.train.y.numpy()
    flat = x.reshape(len(x), -1)
    pca, note = pca_baseline(flat, enc.model_.latent_dim, seed)
    feats = {"latent": enc.transform(x), "raw": flat, "pca": pca.transform(flat)}
    results = {name: thesis_scores(f, y, fraction, test_share, repeats, seed)["test"] for name, f in feats.items()}
    n_train, n_test = (len(i) for i in thesis_split(y, fraction, test_share, np.random.default_rng(seed)))
    out = {"protocol": "thesis", "fraction": fraction, "test_share": test_share, "repeats": repeats,
           "n_classifier_train": n_train, "n_classifier_test": n_test, "split": "train",
           "class_names": data.class_names, "results": results,
           "widths": {name: int(f.shape[1]) for name, f in feats.items()}, "notes": {"pca": note} if note else {}}
    if write:
        run.write_json("probe_thesis.json", out)
    return out
