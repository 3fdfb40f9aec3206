"""Retrain one configuration with several seeds and report mean +- std of every metric (the
thesis's Table 4.4: the selected configuration re-run N = 10 times). This is where a search's
selected configuration meets the test split, once.

Layout of ``DIR``::

    DIR/seed-S/        one run directory per seed S = train.seed, ..., train.seed + seeds - 1
    DIR/repeat.json    per-run metrics and their mean, std (sample, ddof = 1) and values
    DIR/repeat.html    the same as tables

A seed sets the weights' initialisation, the training order and the train/val/test split, so
the spread covers all three. Precision and recall are the standard ones, precision = TP / (TP +
FP) and recall = TP / (TP + FN); the thesis's equations 4.2 and 4.3 swap the two names.
"""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lvmkit.core.config import ExperimentConfig, load_config, make_config
from lvmkit.core.errors import LvmkitError
from lvmkit.search.objectives import SPLITS, make_objective

DEFINITIONS = ("lvmkit uses the standard definitions: precision = TP / (TP + FP), recall = TP / (TP + FN); "
               "the thesis's equations 4.2 and 4.3 (Solli 2019) swap the two names.")
_SPREAD = "std is the sample standard deviation (ddof = 1) over the seeds"


def _stats(values: list[float | None]) -> dict[str, Any]:
    v = np.array([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "values": [None if x is None else float(x) for x in values]}


def _objective_names(objective: str) -> dict[str, str]:
    """The objective's name on each split: a metrics key takes the split's prefix (val_loss on
    the test split is test_loss, the figure it is), any other metric says its split."""
    prefix, _, term = objective.partition("_")
    if prefix in SPLITS and term:
        return {SPLITS[s]: f"{s}_{term}" for s in ("val", "test")}
    return {SPLITS[s]: f"{objective} ({SPLITS[s]})" for s in ("val", "test")}


def _train_or_continue(cfg: ExperimentConfig, path: Path, progress: bool):
    """Train the seed's run, or continue it when DIR already holds it with the same config (a
    repeat that was killed picks up where it stopped)."""
    from lvmkit.runs.run import Run
    from lvmkit.training.train import resume, train

    if not (path / "config.toml").is_file():
        return train(cfg, path, progress=progress)
    if Run.open(path).config.to_dict() != cfg.to_dict():
        raise LvmkitError(f"{str(path)!r} holds a run of another configuration; choose another --out or remove it.")
    return resume(path, progress=progress)


def _train_in_worker(args: tuple[dict, str, bool, int]) -> None:
    """One seed trained in a worker process (``repeat(workers=W)``), with ``threads`` torch threads."""
    import torch

    doc, path, progress, threads = args
    torch.set_num_threads(threads)
    _train_or_continue(make_config(doc), Path(path), progress)


def _measure(run, metric, thesis: bool) -> dict[str, Any]:
    """Every metric of one trained run: the objective on validation and test, the loss terms of
    the selected checkpoint on both, training length, and the thesis protocol's per-class rows."""
    import torch

    from lvmkit.training.train import mean_loss

    data = run.data()
    model = run.load_model("best")
    out: dict[str, Any] = {"objective": {"val": metric.measure(run, "val"), "test": metric.measure(run, "test")}}
    for split in ("val", "test"):
        torch.manual_seed(run.config.train.seed + 1)
        out.update({f"{split}_{k}": v for k, v in mean_loss(model, getattr(data, split), 256).items()})
    records = run.read_metrics()
    out["epochs"] = float(len(records))
    out["training_seconds"] = float(sum(r.get("train_seconds", 0.0) for r in records))
    if thesis:
        from lvmkit.analysis.latent import LatentEncoder
        from lvmkit.analysis.probe import thesis_scores

        codes = LatentEncoder(run).fit().transform(data.evaluated_train().x.numpy())
        out["thesis"] = thesis_scores(codes, data.train.y.numpy(), rows=("train", "test"))
    return out


def repeat(config: ExperimentConfig | str | Path, seeds: int = 10, out: str | Path | None = None, *,
           overrides: list[str] | None = None, objective: str = "val_loss", objective_class: int | str | None = None,
           objective_labels: int | None = None, objective_repeats: int | None = None, progress: bool = False,
           workers: int = 1) -> dict:
    """Train ``config`` with seeds ``train.seed`` .. ``train.seed + seeds - 1`` and summarise.

    For every run: the objective (as ``lvmkit search`` computes it, see
    :mod:`lvmkit.search.objectives`) on the validation and the test split, every loss term of the
    selected checkpoint on both splits, the epochs and training time, and for an encoder with
    labelled data the thesis protocol's per-class precision, recall and f1 on the classifier's
    training and test rows (15% of each class of the training split labelled, split 70/30, 10
    draws; Solli 2019 Table 4.4). Writes DIR/repeat.json and DIR/repeat.html.

    Args:
        config: an experiment (or the path of its TOML file, e.g. a search's best.toml).
        seeds: how many seeds (runs).
        out: the directory (default: repeats/KIND-DATA-TIME); a run already in it with the same
            config is continued, not retrained.
        overrides: ``key=value`` strings applied to a config file.
        objective, objective_class, objective_labels, objective_repeats: as ``[search]`` keys.
        progress: per-epoch lines on stderr.
        workers: local processes training seeds in parallel (each with ``cpu_count // workers``
            torch threads); measuring follows in this process. The numbers do not depend on it.

    Returns:
        The summary written to repeat.json.

    Raises:
        ConfigError: the config is invalid or a run of it cannot compute the objective (checked
            before any training).
        LvmkitError: ``seeds`` is not positive, or DIR holds a run of another configuration.
    """
    from lvmkit.data import load_data
    from lvmkit.core.contract import Encoder, isinstance_family
    from lvmkit.runs.run import Run

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise LvmkitError(f"seeds must be a positive number of runs, got {seeds!r}.")
    if workers < 1:
        raise LvmkitError(f"workers must be a positive number of processes, got {workers}.")
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, list(overrides or []))
    options = {"objective_class": objective_class, "objective_labels": objective_labels, "objective_repeats": objective_repeats}
    metric = make_objective(objective, options)
    data = load_data(cfg.data, cfg.train.seed)
    metric.check(cfg, data)
    thesis = isinstance_family(cfg.model.family, Encoder) and data.train.y is not None and cfg.data.normal_class is None
    out = Path(out) if out is not None else Path("repeats") / f"{cfg.model.kind}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    configs = []
    for i in range(seeds):
        c = cfg.model_copy(deep=True)
        c.train.seed = cfg.train.seed + i
        configs.append(c)
    parallel = workers > 1 and seeds > 1
    if parallel:  # train in parallel; the loop below then only measures
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // min(workers, seeds))
        with mp.get_context("spawn").Pool(min(workers, seeds)) as pool:
            pool.map(_train_in_worker, [(c.to_dict(), str(out / f"seed-{c.train.seed}"), progress, threads)
                                        for c in configs], chunksize=1)
    per_run = []
    for c in configs:
        path = out / f"seed-{c.train.seed}"
        run = Run.open(path) if parallel else _train_or_continue(c, path, progress)
        per_run.append({"seed": c.train.seed, "run": str(run.path), **_measure(run, metric, thesis)})
        if progress:
            print(f"seed {c.train.seed}: {objective} validation {per_run[-1]['objective']['val']}, "
                  f"test {per_run[-1]['objective']['test']}", flush=True)

    summary: dict[str, Any] = {
        "config": cfg.to_dict(), "seeds": [r["seed"] for r in per_run], "runs": [r["run"] for r in per_run],
        "objective": {"name": objective, "description": metric.describe(), "names": _objective_names(objective),
                      **{SPLITS[s]: _stats([r["objective"][s] for r in per_run]) for s in ("val", "test")}},
        "metrics": {}, "definitions": DEFINITIONS, "spread": _SPREAD,
        "note": "A seed sets the initial weights, the training order and the train/val/test split of its run.",
    }
    scalar = [k for k in per_run[0] if k not in ("seed", "run", "objective", "thesis")]
    for key in scalar:
        split = SPLITS.get(key.split("_", 1)[0], "run")
        summary["metrics"][key] = {"split": split, **_stats([r.get(key) for r in per_run])}
    if thesis:
        rows = {}
        for row in ("train", "test"):
            rows[row] = {m: {"mean": np.mean([r["thesis"][row][m]["mean"] for r in per_run], 0).tolist(),
                             "std": (np.std([r["thesis"][row][m]["mean"] for r in per_run], 0, ddof=1).tolist()
                                     if len(per_run) > 1 else None)}
                         for m in ("f1", "recall", "precision")}
        classes = per_run[0]["thesis"]["test"]["classes"]
        names = data.class_names
        summary["thesis_protocol"] = {
            "classes": classes, "class_names": [names[c] if names and c < len(names) else str(c) for c in classes],
            "protocol": "15% of each class of the training split labelled, split 70/30 into the classifier's training "
                        "(train row) and test (test row) rows, logistic regression, 10 draws per run; mean over the draws "
                        "of each run, then mean and std over the runs",
            **rows}
    summary["per_run"] = per_run
    (out / "repeat.json").write_text(json.dumps(summary, indent=2))
    (out / "repeat.html").write_text(_html(summary))
    return summary


def _html(s: dict[str, Any]) -> str:
    e = html.escape

    def pm(stat: dict[str, Any] | None, i: int | None = None) -> str:
        if not stat or stat.get("mean") is None:
            return ""
        mean, std = (stat["mean"], stat["std"]) if i is None else (stat["mean"][i], (stat["std"] or [None] * (i + 1))[i])
        return f"{mean:.4g}" + (f" &plusmn; {std:.2g}" if std is not None else "")

    obj = s["objective"]
    names = obj["names"]
    roles = {"validation": f"the objective ({obj['name']})", "test": f"the objective ({obj['name']}) on the test split"}
    rows = [f"<tr><td>{e(names[split])}</td><td>{split}</td><td>{e(roles[split])}</td><td>{pm(obj[split])}</td></tr>"
            for split in ("validation", "test")]
    # A loss term that is the objective's own figure (val_loss, test_loss: one computation) is shown once, above.
    rows += [f"<tr><td>{e(k)}</td><td>{e(m['split'])}</td><td>{'loss term of the selected checkpoint' if m['split'] != 'run' else ''}"
             f"</td><td>{pm(m)}</td></tr>" for k, m in s["metrics"].items() if k not in names.values()]
    thesis = ""
    if "thesis_protocol" in s:
        t = s["thesis_protocol"]
        head = "".join(f"<th colspan=3>{e(n)}</th>" for n in t["class_names"])
        sub = "<th></th>" + "<th>f1</th><th>recall</th><th>precision</th>" * len(t["classes"])
        body = "".join(
            f"<tr><th>{row.capitalize()}</th>"
            + "".join(f"<td>{pm(t[row][m], i)}</td>" for i in range(len(t["classes"])) for m in ("f1", "recall", "precision"))
            + "</tr>" for row in ("train", "test"))
        thesis = (f"<h2>Per-class scores, the thesis protocol (Table 4.4)</h2><p>{e(t['protocol'])}.</p>"
                  f"<div class=\"wide\"><table><tr><th></th>{head}</tr><tr>{sub}</tr>{body}</table></div>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Repeat: {len(s['seeds'])} seeds</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.wide{{max-width:100%;overflow-x:auto}}</style>
</head><body>
<h1>{len(s['seeds'])} seeds of one configuration</h1>
<p>Seeds {', '.join(map(str, s['seeds']))}. Mean &plusmn; std over the runs; {e(s['spread'])}. {e(s['note'])}</p>
<p><b>Precision and recall:</b> {e(s['definitions'])}</p>
<p><b>Objective:</b> {e(obj['description'])} Its test row is the same metric on the test split.</p>
<div class="wide"><table><tr><th>metric</th><th>split</th><th>what it is</th><th>mean &plusmn; std</th></tr>
{''.join(rows)}
</table></div>
{thesis}
</body></html>
"""
