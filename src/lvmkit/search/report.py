"""What a search found: the trials ranked by the objective, how each parameter correlates with
it (Spearman's rank correlation), and the best configuration as a loadable experiment file.
Every number a search reports comes from the validation split (or, for a ``train_*``
objective, the training split); the report says which, and never shows a test number."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from lvmkit.core import _toml
from lvmkit.core.config import make_config
from lvmkit.core.errors import LvmkitError
from lvmkit.search.objectives import ProbeF1


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _spearman(xs: list[float], ys: list[float]) -> tuple[float | None, float | None]:
    # Fewer than 3 points or a constant column: rho is undefined (scipy would warn and give nan).
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None
    from scipy.stats import spearmanr

    res = spearmanr(xs, ys)
    return _finite(float(res.statistic)), _finite(float(res.pvalue))


def search_report(path: str | Path) -> Path:
    """Write DIR/search.html, DIR/search.json and DIR/best.toml for a search directory.

    ``search.json`` holds the trials sorted by the objective (best first; unfinished trials last),
    Spearman's rho and its p-value for every numeric or bool parameter (and, for a layers
    parameter, the number of layers and each entry's largest value) against the objective over
    the complete trials, the best trial, and the split the objective comes from. ``best.toml`` is
    the base experiment with the best trial's parameters applied (``lvmkit.load_config`` reads
    it; ``lvmkit repeat`` retrains it with several seeds and computes its test numbers).

    Returns:
        The path of search.html.

    Raises:
        LvmkitError: ``path`` is not a search directory, or no trial has completed.
    """
    import optuna

    from lvmkit.search.study import _storage, search_space

    out = Path(path)
    if not (out / "study.json").is_file():
        raise LvmkitError(f"{str(out)!r} is not a search directory (no study.json); pass the directory 'lvmkit search' printed.")
    info = json.loads((out / "study.json").read_text())
    space = search_space(out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=info["study"], storage=_storage(info["storage"]))
    sign = 1.0 if space.direction == "minimize" else -1.0

    trials = study.get_trials(deepcopy=False)
    # a trial the heartbeat failed takes no user attrs after it failed; its retry names it
    retried_as = {t.user_attrs["retried_from"]: t.number for t in trials if "retried_from" in t.user_attrs}
    rows = []
    for t in trials:
        done_sampling = space.sampled(t.params)
        values = space.values(t.params) if done_sampling else dict(t.params)  # failed before sampling
        rows.append({"number": t.number, "state": t.state.name, "value": _finite(t.value) if t.value is not None else None,
                     "params": values, "ranked": space.summaries(values) if done_sampling else {},
                     "run_dir": t.user_attrs.get("run_dir"),
                     "note": t.user_attrs.get("stopped_because") or t.user_attrs.get("failed_because")
                     or (f"its worker stopped beating (killed or lost); retried as trial {retried_as[t.number]}"
                         if t.number in retried_as else None)
                     or (f"retry of trial {t.user_attrs['retried_from']}" if "retried_from" in t.user_attrs else None)})
    rows.sort(key=lambda r: (r["state"] != "COMPLETE" or r["value"] is None, sign * (r["value"] or 0.0), r["number"]))
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    if not done:
        raise LvmkitError(f"No trial of the search in {str(out)!r} has completed; run more with --resume {out}.")

    correlations = {}
    for name in done[0]["ranked"]:
        xs = [r["ranked"][name] for r in done]
        rho, pvalue = _spearman(xs, [r["value"] for r in done])
        correlations[name] = {"rho": rho, "pvalue": pvalue, "n": len(xs)}

    best = done[0]
    doc = space.document(best["params"])
    make_config(doc)  # the file we write must load
    metric = space.metric
    again = f"lvmkit repeat {out / 'best.toml'} --seeds 10 --objective {space.objective}"
    if isinstance(metric, ProbeF1):
        again += f" --objective-class {metric.target} --objective-labels {metric.labels}"
    header = (f"# Best trial {best['number']} of search {info['study']!r} ({out}): "
              f"{space.objective} = {best['value']:.6g} ({space.direction}) on the {metric.split} split.\n"
              f"# Test numbers for this configuration: {again}\n")
    (out / "best.toml").write_text(header + _toml.dumps(doc))

    summary = {"study": info["study"], "objective": space.objective, "direction": space.direction,
               "objective_split": metric.split, "objective_description": metric.describe(),
               "n_trials": len(rows), "states": {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})},
               "best": best, "spearman": correlations, "trials": rows, "repeat_command": again}
    summary["figure"] = _top_trials_figure(done[:10], space.objective, out)
    (out / "search.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "search.html").write_text(_html(summary, space.keys()))
    return out / "search.html"


def _incomparable(curves: list[list[float]]) -> bool:
    """Curves of mixed sign, or whose last values differ by more than a factor of 10."""
    last = [abs(ys[-1]) for ys in curves]
    mixed_sign = min(y for ys in curves for y in ys) < 0 < max(y for ys in curves for y in ys)
    return mixed_sign or max(last) > 10 * min(last)


def _unit_range(ys: list[float]) -> list[float]:
    lo, hi = min(ys), max(ys)
    return [(y - lo) / (hi - lo) if hi > lo else 0.0 for y in ys]


def _top_trials_figure(best: list[dict], objective: str, out: Path) -> str | None:
    """DIR/top_trials.png: the validation loss per epoch of the best trials, coloured by the
    objective (Figure 4.5); None when no run logged one."""
    from lvmkit.runs.run import Run
    from lvmkit.report import figures

    curves = []
    for r in best:
        if r["run_dir"] and (Path(r["run_dir"]) / "metrics.jsonl").is_file():
            ys = [m.get("val_loss") for m in Run.open(r["run_dir"]).read_metrics()]
            if ys and all(y is not None for y in ys):
                curves.append((r["number"], r["value"], ys))
    if not curves:
        return None
    label = "validation loss"
    if _incomparable([ys for _, _, ys in curves]):
        # Trials with different reconstruction losses (a Gaussian NLL may be negative, a Bernoulli
        # one is not) share no scale: show each curve's course between its own extremes.
        curves = [(n, v, _unit_range(ys)) for n, v, ys in curves]
        label = "validation loss, each trial scaled to [0, 1]"
    fig = figures.top_trials(curves, label, objective)
    fig.savefig(out / "top_trials.png", dpi=110)
    figures.plt.close(fig)
    return "top_trials.png"


def _html(summary: dict[str, Any], names: list[str]) -> str:
    e = html.escape

    def fmt(v: Any) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else e(str(v))

    split = summary["objective_split"]
    head = "".join(f"<th>{e(n)}</th>" for n in ["#", f"{summary['objective']} ({split})", "state", *names, "run", "note"])
    body = "\n".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in [r["number"], r["value"], r["state"], *(r["params"].get(n) for n in names), r["run_dir"], r.get("note")]) + "</tr>"
        for r in summary["trials"])
    corr = "\n".join(f"<tr><td>{e(n)}</td><td>{fmt(c['rho'])}</td><td>{fmt(c['pvalue'])}</td><td>{c['n']}</td></tr>"
                     for n, c in summary["spearman"].items())
    states = ", ".join(f"{n} {s.lower()}" for s, n in summary["states"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Search {e(summary['study'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style>
</head><body>
<h1>Search {e(summary['study'])}</h1>
<p>{summary['n_trials']} trials ({e(states)}); objective {e(summary['objective'])}, {e(summary['direction'])}d.
Best: trial {summary['best']['number']}, {fmt(summary['best']['value'])}; its configuration is best.toml.</p>
<p><b>Split:</b> every number on this page comes from the {e(split)} split. {e(summary['objective_description'])}
The test split is never used to select; test numbers for the selected configuration come from
<code>{e(summary['repeat_command'])}</code>.</p>
<h2>Rank correlation with the {e(split)} objective (Spearman, complete trials)</h2>
<table><tr><th>parameter</th><th>rho</th><th>p-value</th><th>n</th></tr>
{corr}
</table>
{f'<h2>Validation loss of the best trials</h2><img src="{summary["figure"]}" alt="top trials">' if summary.get("figure") else ""}
<h2>Trials, best first</h2>
<table><tr>{head}</tr>
{body}
</table>
</body></html>
"""
