"""The one-class protocol: train on one class of a labelled data set, score the whole test split
with the other classes as anomalies; over all classes, report the mean AUROC."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lvmkit.analysis.anomaly import anomaly
from lvmkit.core.config import ExperimentConfig
from lvmkit.data import load_data
from lvmkit.core.errors import DataError
from lvmkit.training.train import train


def one_class(config: ExperimentConfig, normal_class: int | str, out: str | Path, *, score: str = "recon",
              progress: bool = True) -> dict:
    """Train one model per normal class (``"all"`` for every class) under ``out`` and return
    (and write to ``out/one_class.json``) the AUROC of each and their mean."""
    out = Path(out)
    if normal_class == "all":
        data = load_data(config.data, config.train.seed)
        if data.train.y is None:
            raise DataError("The one-class protocol needs a labelled data set; this one has no labels.")
        classes = sorted(set(data.train.y.tolist()))
    else:
        try:
            classes = [int(normal_class)]
        except ValueError:
            raise DataError(f"--normal-class takes a class label or 'all', got {normal_class!r}.") from None
    results = {}
    for c in classes:
        cfg = config.model_copy(deep=True)
        cfg.data.normal_class = c
        run = train(cfg, out / f"class-{c}", progress=progress)
        res = anomaly(run, score)
        results[str(c)] = {"auroc": res["auroc"], "auprc": res["auprc"], "run": str(run.path)}
        if progress:
            print(f"normal class {c}: AUROC {res['auroc']:.4f}", flush=True)
    summary = {"score": score, "classes": classes, "results": results,
               "mean_auroc": float(np.mean([r["auroc"] for r in results.values()]))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "one_class.json").write_text(json.dumps(summary, indent=2))
    return summary
