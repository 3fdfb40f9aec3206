"""What a search found: the trials ranked by the objective, how each parameter correlates with
it (Spearman's rank correlation), and the best configuration as a loadable experiment file."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from lvmkit.core import _toml
from lvmkit.core.config import make_config
from lvmkit.core.errors import LvmkitError
from lvmkit.search.space import Fixed, is_numeric, load_space


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
    Spearman's rho and its p-value for every numeric or bool parameter against the objective over
    the complete trials, and the best trial. ``best.toml`` is the base experiment with the best
    trial's parameters applied (``lvmkit.load_config`` reads it).

    Returns:
        The path of search.html.

    Raises:
        LvmkitError: ``path`` is not a search directory, or no trial has completed.
    """
    import optuna

    from lvmkit.search.study import _storage

    out = Path(path)
    if not (out / "study.json").is_file():
        raise LvmkitError(f"{str(out)!r} is not a search directory (no study.json); pass the directory 'lvmkit search' printed.")
    info = json.loads((out / "study.json").read_text())
    space = load_space(out / "space.toml")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=info["study"], storage=_storage(info["storage"]))
    sign = 1.0 if space.direction == "minimize" else -1.0

    rows = []
    for t in study.get_trials(deepcopy=False):
        sampled = [k for k, p in space.params.items() if not isinstance(p, Fixed)]
        values = space.values(t.params) if all(k in t.params for k in sampled) else dict(t.params)  # failed before sampling
        rows.append({"number": t.number, "state": t.state.name, "value": _finite(t.value) if t.value is not None else None,
                     "params": values, "run_dir": t.user_attrs.get("run_dir")})
    rows.sort(key=lambda r: (r["state"] != "COMPLETE" or r["value"] is None, sign * (r["value"] or 0.0), r["number"]))
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    if not done:
        raise LvmkitError(f"No trial of the search in {str(out)!r} has completed; run more with --resume {out}.")

    correlations = {}
    for name, p in space.params.items():
        if not is_numeric(p):
            continue
        xs = [float(r["params"][name]) for r in done]
        rho, pvalue = _spearman(xs, [r["value"] for r in done])
        correlations[name] = {"rho": rho, "pvalue": pvalue, "n": len(xs)}

    best = done[0]
    doc = space.document(best["params"])
    make_config(doc)  # the file we write must load
    header = (f"# Best trial {best['number']} of search {info['study']!r} ({out}): "
              f"{space.objective} = {best['value']:.6g} ({space.direction}).\n")
    (out / "best.toml").write_text(header + _toml.dumps(doc))

    summary = {"study": info["study"], "objective": space.objective, "direction": space.direction,
               "n_trials": len(rows), "states": {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})},
               "best": best, "spearman": correlations, "trials": rows}
    (out / "search.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "search.html").write_text(_html(summary, list(space.params)))
    return out / "search.html"


def _html(summary: dict[str, Any], names: list[str]) -> str:
    e = html.escape

    def fmt(v: Any) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else e(str(v))

    head = "".join(f"<th>{e(n)}</th>" for n in ["#", summary["objective"], "state", *names, "run"])
    body = "\n".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in [r["number"], r["value"], r["state"], *(r["params"].get(n) for n in names), r["run_dir"]]) + "</tr>"
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
<h2>Rank correlation with the objective (Spearman, complete trials)</h2>
<table><tr><th>parameter</th><th>rho</th><th>p-value</th><th>n</th></tr>
{corr}
</table>
<h2>Trials, best first</h2>
<table><tr>{head}</tr>
{body}
</table>
</body></html>
"""
