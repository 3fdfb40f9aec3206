"""compare.html: one self-contained page, runs as columns, measures as rows, sample grids side by
side in the last row (PNG data URIs, also written under OUT/samples/)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Callable

import numpy as np

from lvmkit.report import figures
from lvmkit.report.page import _CSS


def _png(samples: np.ndarray) -> bytes | None:
    """A grid of images (N, C, H, W), or two features against each other for tables; None for
    examples of other shapes (series)."""
    buf = io.BytesIO()
    if samples.ndim == 4:
        figures.save_grid_png(samples, buf, ncols=4)
    elif samples.ndim == 2 and samples.shape[1] >= 2:
        import matplotlib.pyplot as plt

        fig = figures.samples(samples)
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
    else:
        return None
    return buf.getvalue()


def _img(png: bytes, alt: str, pixels: bool) -> str:
    # Image grids are a few pixels per example: shown enlarged, without smoothing.
    style = ' style="width:200px;image-rendering:pixelated"' if pixels else ""
    return f'<img alt="{html.escape(alt)}"{style} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _se(v: float | None) -> str:
    return "" if v is None else f" &plusmn; {v:.2g}"


def _nll(d: dict) -> str:
    text = f"{d['nll']:.5g}{_se(d.get('nll_se'))} nats"
    if d.get("nll_interval") and d["nll_interval"][0] != d["nll_interval"][1]:
        text += f" <small>[{d['nll_interval'][0]:.5g}, {d['nll_interval'][1]:.5g}]</small>"
    if d.get("bits_per_dim") is not None:
        text += f" ({d['bits_per_dim']:.4g}{_se(d.get('bits_per_dim_se'))} bits/dim)"
    return (f"{text}<br><small>{html.escape(d['estimator'])}; {html.escape(d['bound'])}; {d.get('n_test')} test examples; "
            f"{_weights(d)}</small>")


def _sampler(s: dict | str) -> str:
    if isinstance(s, str):  # "one pass (no sampler)", "not recorded"
        return "sampler not recorded" if s == "not recorded" else html.escape(s)
    return f"sampler {html.escape(str(s['name']))}, {s['steps']} steps" + (f", eta {s['eta']:g}" if "eta" in s else "")


def _weights(d: dict) -> str:
    w = d.get("weights", "not recorded")
    return f"{html.escape(w)} weights" if w in ("ema", "raw") else "weights not recorded"


def _drawn_with(d: dict) -> str:
    """Which weights and sampler a sampled figure comes from."""
    return f"{_weights(d)}; {_sampler(d.get('sampler', 'not recorded'))}"


def _sampling(d: dict) -> str:
    text = f"{d['seconds_per_1000']:.3g} s<br><small>{d['n_timed']} drawn on {html.escape(d['device'])}"
    if d.get("threads"):
        text += f", {d['threads']} CPU thread{'s' if d['threads'] != 1 else ''}"
    return f"{text}; {_drawn_with(d)}</small>"


def _or_reason(fmt: Callable[[dict], str]) -> Callable[[object], str]:
    """Show a stored figure with ``fmt``, or a string entry as it is: the reason the figure is
    absent and the command that computes it."""
    return lambda v: html.escape(v) if isinstance(v, str) else fmt(v)


def _training(t: dict) -> str:
    return f"{t['seconds']:.4g} s<br><small>{t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}, {t['steps']} steps</small>"


def _quality(q: dict, key: str) -> str:
    floor = q.get("floor", {}).get(key)
    return (f"{q[key]:.4g}" + (f" <small>(floor {floor:.4g})</small>" if floor is not None else "")
            + f"<br><small>{_drawn_with(q)}</small>")


def _probe(p: dict) -> str:
    if not p["macro_f1"]:
        return "no budget probed"
    cells = "<br>".join(f"{n} labels/class: {r['mean']:.3f}{_se(r['std'])}" for n, r in p["macro_f1"].items())
    return f"{cells}<br><small>{p.get('width')}-number codes, {p.get('repeats')} draws (&plusmn; std); {_weights(p)}</small>"


def _scaling(d: dict) -> str:
    if "span" in d:
        text = f"{html.escape(d['name'])}: (x &minus; {d['shift']:.4g}) / {d['span']:.4g}"
        if d["shift"] == 0 and d["span"] == 1:
            text += ", values unchanged"
    else:
        text = f"{html.escape(d['name'])}, per feature ({d['per_feature']} values)"
    how = "unset: the default for this data" if d.get("configured") is None else f"data.scale = {d['configured']!r}"
    return f"{text}<br><small>{html.escape(how)}</small>"


def _vlb(v: object) -> str:
    return f"{v['vlb']['nll']:.5g} nats" if isinstance(v, dict) and "vlb" in v else "&mdash;"


_ROWS: list[tuple[str, str, Callable[..., str]]] = [  # (row title, the run's entry, how to show it)
    ("run directory", "run", lambda v: f"<code>{html.escape(v)}</code>"),
    ("family", "family", lambda v: html.escape(str(v))),
    ("kind", "kind", html.escape),
    ("capabilities", "capabilities", lambda v: html.escape(", ".join(v)) or "none"),
    ("parameters", "parameters", lambda v: f"{v:,}"),
    ("parameters by part", "parameters_by_part", lambda v: "<br>".join(f"{html.escape(k)} {n:,}" for k, n in v.items())),
    ("data scaling (data.scale, fitted on the training split)", "data_scale", _scaling),
    ("training time", "training", _or_reason(_training)),
    ("sampling time per 1,000 samples", "sampling", _or_reason(_sampling)),
    ("Frechet distance (lower is better)", "quality", _or_reason(lambda q: _quality(q, "frechet_distance"))),
    ("precision (k = 3)", "quality", _or_reason(lambda q: _quality(q, "precision"))),
    ("recall (k = 3)", "quality", _or_reason(lambda q: _quality(q, "recall"))),
    ("test NLL or its bound (lower is better)", "likelihood", _or_reason(_nll)),
    ("VLB (negative ELBO)", "likelihood", _vlb),
    ("probe macro F1", "probe", _or_reason(_probe)),
]


_EXPLAIN = (
    "Training time is the sum of the per-epoch seconds in each run's metrics.jsonl. Sampling time was measured "
    "now, after the grid was drawn, and scaled to 1,000 samples. Frechet distance, precision and recall come from "
    "<code>lvmkit quality</code>, in the features of a classifier trained on this data set's labels; the floor "
    "is the same figure for held-out training examples against the test set. The test NLL comes from "
    "<code>lvmkit evaluate</code> in nats per example; importance-weighted (IWAE) estimates and variational "
    "bounds are upper bounds on -log p(x), tighter for larger k. Probe F1 comes from <code>lvmkit probe</code>: "
    "a logistic regression on the codes of that many labelled training examples per class, scored on the test "
    "split. The samples of every run are drawn from one seed, with the weights and sampler of its stored sample "
    "quality (without one: the EMA weights where the run kept them, and the model's default sampler); each figure "
    "names the weights it came from, or says its file did not record them.")


def write_compare_html(result: dict, grids: dict[str, np.ndarray], out: Path) -> Path:
    """Write OUT/compare.html, and each grid to OUT/<the row's sample_grid>, from the result of
    :func:`lvmkit.analysis.compare.compare`; returns the page's path."""
    rows = result["runs"]
    body = ["<tr><th></th>" + "".join(f"<th>{html.escape(r['name'])}</th>" for r in rows) + "</tr>"]
    for title, key, fmt in _ROWS:
        body.append(f"<tr><th>{html.escape(title)}</th>" + "".join(f"<td>{fmt(r[key])}</td>" for r in rows) + "</tr>")
    images = []
    for r in rows:
        png = _png(grids[r["sample_grid"]]) if r["sample_grid"] else None
        if png is None:
            images.append("no picture for examples of this shape" if r["sample_grid"] else "&mdash;")
            continue
        path = out / r["sample_grid"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        grid = grids[r["sample_grid"]]
        images.append(_img(png, f"{len(grid)} samples of {r['name']}", grid.ndim == 4)
                      + f"<br><small>{_drawn_with(r['sampling'])}</small>")
    body.append(f"<tr><th>samples (seed {result['seed']})</th>" + "".join(f"<td>{c}</td>" for c in images) + "</tr>")

    data = result["data"]
    where = f" ({data['path']})" if data["path"] else ""
    title = f"lvmkit compare: {len(rows)} run{'s' if len(rows) != 1 else ''} on {data['name']}"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"])
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}\ntd{{vertical-align:top}}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Data {html.escape(data['name'] + where)}, examples of shape {tuple(data['input_shape'])}; "
            f"written {html.escape(result['written'])}.</p>"
            f"<div style='overflow-x:auto'><table>{''.join(body)}</table></div>"
            + (f"<h2>Read with care</h2><ul>{notes}</ul>" if notes else "")
            + f"<p><small>{_EXPLAIN}</small></p></body></html>")
    path = out / "compare.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path

