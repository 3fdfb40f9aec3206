"""report.html: one self-contained page per run (figures embedded as PNG data URIs).

The page is a list of sections; each section function takes the run and returns HTML or None
(when it has nothing to show). Later commands add their section to ``SECTIONS``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lvmkit.report import figures
from lvmkit.data import batches
from lvmkit.core.contract import (Encoder, Generator, ImageFilters, IterativeGenerator, LatentDecoder, Reconstructor,
                                  Stepwise, has)
from lvmkit.runs.run import Run
from lvmkit.report.summaries import describe_probe

SECTIONS: list[Callable[["_Context"], str | None]] = []


class _Context:
    """What the sections share: the run, its model and test codes, computed once."""

    def __init__(self, run: Run, device: str = "cpu", embedding: str = "pca") -> None:
        self.run = run
        self.embedding = embedding
        self.metrics = run.read_metrics()
        self.model = run.load_model("best", device)
        self.data = run.data()
        self.test = self.data.test.to(device)
        self.figures: list[Path] = []
        self._codes: np.ndarray | None = None

    def has(self, capability: type) -> bool:
        """Sections ask for a capability of the model (as this instance offers it), never for a family."""
        return has(self.model, capability)

    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = torch.cat([self.model.embed(xb) for xb, _ in batches(self.test, 512, shuffle=False)]).cpu().numpy()
        return self._codes

    def figure(self, name: str, fig, caption: str) -> str:
        """Save a figure under RUN/figures and return an <img> with it embedded."""
        self.run.figures.mkdir(exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        png = buf.getvalue()
        path = self.run.figures / f"{name}.png"
        path.write_bytes(png)
        self.figures.append(path)
        b64 = base64.b64encode(png).decode()
        return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: dict, title: str | None = None) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return html.escape(json.dumps(v) if isinstance(v, (list, dict)) else str(v))

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>" for k, v in rows.items())
    head = f"<h3>{html.escape(title)}</h3>" if title else ""
    return f"{head}<table>{body}</table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _summary(ctx: _Context) -> str:
    rows: dict = {}
    if ctx.metrics:
        last = ctx.metrics[-1]
        rows.update({"epochs trained": last["epoch"], "steps": last["step"], "final train loss": last.get("train_loss")})
        metric = ctx.model.selection_metric
        if metric and all(f"val_{metric}" in m for m in ctx.metrics):
            best = min(ctx.metrics, key=lambda m: m[f"val_{metric}"])
            rows.update({f"best val {metric}": best[f"val_{metric}"], "best epoch": best["epoch"]})
        else:
            rows["checkpoint"] = "the last epoch's (this family selects none on validation)"
        rows["training time (s)"] = sum(m["seconds"] for m in ctx.metrics)
        if ctx.run.read_json("optimizers.json"):
            rows["optimizers"] = ctx.run.read_json("optimizers.json")
    ev = ctx.run.read_json("eval.json")
    body = _table(rows, "training")
    if ev:
        body += _table(ev, "evaluation on the test split (eval.json)")
    else:
        body += "<p>No evaluation yet: run <code>lvmkit evaluate RUN</code>.</p>"
    return _section("Metrics", body)


def _curves(ctx: _Context) -> str | None:
    if not ctx.metrics:
        return None
    return _section("Loss curves", ctx.figure("loss_curves", figures.loss_curves(ctx.metrics), "loss and its terms per epoch (train solid, validation dashed)"))


def _recon(ctx: _Context) -> str | None:
    if not ctx.has(Reconstructor):
        return None
    x = ctx.test.x[:16]
    r = ctx.model.reconstruct(x)
    fig = figures.reconstructions(x.cpu().numpy(), r.cpu().numpy())
    body = ctx.figure("reconstructions", fig, "test inputs and their reconstructions (posterior mean code)")
    if ctx.has(Stepwise) and ctx.data.is_image:  # models that build an image over steps (DRAW)
        steps = [("input", x[:4].cpu().numpy())] + [(label, c.cpu().numpy()) for label, c in ctx.model.canvases(x[:4])]
        body += ctx.figure("canvas", figures.chain_strip(steps), "the canvas after each step for 4 test inputs (input first)")
    return _section("Reconstructions", body)


def _animation(ctx: _Context, name: str, gif: bytes, caption: str) -> str:
    """Save a GIF under RUN/figures and return it embedded, with a link to the file."""
    ctx.run.figures.mkdir(exist_ok=True)
    path = ctx.run.figures / f"{name}.gif"
    path.write_bytes(gif)
    ctx.figures.append(path)
    b64 = base64.b64encode(gif).decode()
    link = f"{ctx.run.figures.name}/{path.name}"
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/gif;base64,{b64}">'
            f'<figcaption>{html.escape(caption)} (<a href="{html.escape(link)}">{html.escape(link)}</a>)</figcaption></figure>')


def _steps(ctx: _Context) -> str | None:
    """Models that build their output over steps and report them through ``trace`` (DRAW): the
    canvas as an animation, the attention windows on the input, and the KL of each step's code."""
    if not ctx.has(Stepwise):
        return None
    trace = ctx.model.trace
    body = ""
    if ctx.data.is_image:
        x = ctx.test.x[:8]
        tr = trace(x)
        body += _animation(ctx, "canvas", figures.canvas_gif(x.cpu().numpy(), tr.canvases.cpu().numpy()),
                           f"the canvas over the steps for {len(x)} test inputs (top row), z_t at posterior means")
        if tr.read_windows is not None or tr.write_windows is not None:
            win = [None if w is None else w[:, :4].cpu().numpy() for w in (tr.read_windows, tr.write_windows)]
            body += ctx.figure("attention_windows", figures.attention_windows(x[:4].cpu().numpy(), *win),
                               "where each step reads (red) and writes (dashed cyan) on 4 test inputs: the extent "
                               "N delta of each N x N filter grid around its centre (g_x, g_y), z_t at posterior means")
    g = torch.Generator(device=ctx.test.x.device).manual_seed(ctx.run.config.train.seed)
    kls = [trace(xb, sample=True, generator=g).kl for xb, _ in batches(ctx.test, 512, shuffle=False)]
    if kls and kls[0] is not None:
        kl = torch.cat(kls, 1).mean(1).cpu().numpy()  # (T,), mean over the test split
        body += ctx.figure("step_kl", figures.step_kl(kl),
                           "KL(q(z_t | x, z_<t) || N(0, I)) of each step, mean over the test split, z_t sampled "
                           "as in the loss; the bars sum to the ELBO's KL term")
    return _section("Steps of the recurrence", body) if body else None


def _grey(x: np.ndarray) -> np.ndarray:
    """Sample grids are stored as uint8 grey levels (float in [0, 1] in runs of early versions)."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _samples(ctx: _Context) -> str | None:
    if not ctx.has(Generator):
        return None
    g = torch.Generator(device=ctx.test.x.device).manual_seed(ctx.run.config.train.seed)
    s = ctx.model.sample(64, generator=g).cpu().numpy()
    fig = figures.samples(s, None if ctx.data.is_image else ctx.test.x.cpu().numpy())
    note = " (EMA weights)" if ctx.run.config.train.ema_decay > 0 else ""
    if not ctx.model.trained_prior:
        note += " (this autoencoder has no trained prior: samples show what N(0, I) codes decode to)"
    body = ctx.figure("samples", fig, f"64 samples of the {ctx.run.config.model.kind} model{note}")
    grids = sorted((ctx.run.path / "samples").glob("epoch_*.npy")) if (ctx.run.path / "samples").is_dir() else []
    if grids:
        keep = grids if len(grids) <= 12 else [grids[i] for i in np.linspace(0, len(grids) - 1, 12).round().astype(int)]
        rows = [(int(p.stem.split("_")[1]), _grey(np.load(p))) for p in keep]
        body += ctx.figure("epoch_samples", figures.epoch_samples(rows),
                           "samples from the same fixed noise as training went on (raw weights, one row per epoch)")
    return _section("Samples", body)


def _chain(ctx: _Context) -> str | None:
    """An iterative sampler's chain for a few samples, from noise to data; and, where
    ``lvmkit evaluate`` stored them, the variational bound's terms per timestep."""
    if not (ctx.has(IterativeGenerator) and ctx.data.is_image):
        return None
    g = torch.Generator(device=ctx.test.x.device).manual_seed(ctx.run.config.train.seed)
    _, chain = ctx.model.sample(4, generator=g, keep=8)
    steps = [(t, x.cpu().numpy()) for t, x in chain]
    body = ctx.figure("chain", figures.chain_strip(steps),
                      "the sampler's chain for 4 samples, from its starting states (left) to the samples (right)")
    if ctx.has(ImageFilters):  # models whose weights read as images (RBMs)
        body += ctx.figure("filters", figures.filters(ctx.model.filters().cpu().numpy()),
                           "learned filters: each hidden unit's weights to the visible units, as an image")
    ev = ctx.run.read_json("eval.json") or {}
    if ev.get("vlb_terms"):
        body += ctx.figure("bound_terms", figures.bound_terms(ev["vlb_terms"]),
                           "the variational bound's terms on the test split: L_0 (the discretized decoder), "
                           "L_1 ... L_{T-1} (KL per denoising step) and L_T (prior), in nats per example")
    return _section("Sampling chain", body)


def _latent(ctx: _Context) -> str | None:
    if not ctx.has(Encoder):
        return None
    codes = ctx.codes()
    labels = None if ctx.test.y is None else ctx.test.y.cpu().numpy()
    d = codes.shape[1]
    if d == 1:
        codes2, how = np.column_stack([codes[:, 0], np.zeros(len(codes))]), "1-D latent"
    elif d == 2:
        codes2, how = codes, "latent dimensions 1 and 2"
    elif ctx.embedding == "tsne":
        from sklearn.manifold import TSNE

        codes2 = TSNE(2, init="pca", random_state=0, perplexity=min(30, len(codes) - 1)).fit_transform(codes)
        how = f"t-SNE of the {d}-D posterior means"
    else:
        from sklearn.decomposition import PCA

        pca = PCA(2).fit(codes)
        codes2 = pca.transform(codes)
        how = f"PCA of the {d}-D posterior means ({100 * pca.explained_variance_ratio_.sum():.0f}% of variance)"
    fig = figures.latent_scatter(codes2, labels, how, ctx.data.class_names)
    body = ctx.figure("latent_scatter", fig, "test-set posterior means, " + how)
    if d == 2 and ctx.data.is_image and ctx.has(LatentDecoder):
        from scipy.stats import norm

        n = 15
        q = norm.ppf(np.linspace(0.05, 0.95, n))
        # Rows run from high z2 (top) to low z2, columns from low z1 to high z1.
        zz = torch.tensor([[a, b] for b in q[::-1] for a in q], dtype=torch.float32, device=ctx.test.x.device)
        with torch.no_grad():
            imgs = ctx.model.decode_mean(zz).cpu().numpy()
        body += ctx.figure("latent_grid", figures.latent_grid(imgs, n), "decoded means over a grid of latent codes")
    return _section("Latent space", body)


def _events(ctx: _Context) -> str | None:
    """Event displays (AT-TPC sets): a few test events of each class above their reconstructions."""
    if not ctx.has(Reconstructor) or ctx.data.info.get("display") != "events" or ctx.test.y is None:
        return None
    y = ctx.test.y.cpu().numpy()
    rows = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)[:6]
        x = ctx.test.x[idx]
        name = ctx.data.class_names[c] if ctx.data.class_names and c < len(ctx.data.class_names) else str(c)
        rows.append((name, x.cpu().numpy(), ctx.model.reconstruct(x).cpu().numpy()))
    fig = figures.event_grid(rows)
    return _section("Event displays", ctx.figure("events", fig, "test events of each class (first channel; top: input, bottom: reconstruction)"))


def _config(ctx: _Context) -> str:
    meta = ctx.run.read_json("meta.json") or {}
    cfg = html.escape(ctx.run.config.to_toml())
    return _section("Configuration", f"<pre>{cfg}</pre>" + _table({k: meta[k] for k in ("command", "seed", "versions", "git_revision", "created") if k in meta}, "provenance"))


def _image_file(ctx: _Context, name: str, caption: str) -> str:
    path = ctx.run.figures / name
    b64 = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _probe(ctx: _Context) -> str | None:
    res = ctx.run.read_json("probe.json")
    thesis = ctx.run.read_json("probe_thesis.json")
    if not res and thesis:
        return _section("Few-label probes (probe_thesis.json)", _thesis_table(thesis))
    if not res:
        return None
    rows = {}
    for name, by_n in res["results"].items():
        for n, r in by_n.items():
            rows[f"{name}, {n} labels/class"] = (f"macro f1 {r['macro_f1']['mean']:.3f} +- {r['macro_f1']['std']:.3f}, "
                                                 f"accuracy {r['accuracy']['mean']:.3f} +- {r['accuracy']['std']:.3f}")
    notes = "".join(f"<p>{html.escape(name)}: {html.escape(note)}</p>" for name, note in res.get("notes", {}).items())
    body = f"<p>{html.escape(describe_probe(res))}</p>" + notes + _table(rows)
    if (ctx.run.figures / "probe.png").is_file():
        body += _image_file(ctx, "probe.png", "probe metrics against the number of labelled examples per class")
    if thesis:
        body += _thesis_table(thesis)
    return _section("Few-label probes (probe.json)", body)


def _thesis_table(res: dict) -> str:
    names = res.get("class_names")
    rows = {}
    for name, r in res["results"].items():
        per_class = ", ".join(f"{c}: {m:.3f}" for c, m in zip(names or r["classes"], r["f1"]["mean"]))
        rows[name] = f"macro f1 {r['macro_f1']['mean']:.3f} +- {r['macro_f1']['std']:.3f}; f1 per class {per_class}"
    title = (f"thesis protocol: {100 * res['fraction']:g}% of each training class labelled, split "
             f"{100 * (1 - res['test_share']):g}/{100 * res['test_share']:g}, {res['repeats']} draws (training split only)")
    return _table(rows, title)


def _clusters(ctx: _Context) -> str | None:
    res = ctx.run.read_json("cluster.json")
    if not res:
        return None
    rows = {}
    for name, r in res["results"].items():
        rows[f"{name} ({r['method']}, k={res['k']})"] = (f"ACC {r['acc']:.3f}, NMI {r['nmi']:.3f}, ARI {r['ari']:.3f}"
                                                        if "acc" in r else f"sizes {r['sizes']}")
    notes = "".join(f"<p>{html.escape(name)}: {html.escape(note)}</p>" for name, note in res.get("notes", {}).items())
    body = notes + _table(rows)
    if (ctx.run.figures / "cluster_confusion.png").is_file():
        body += _image_file(ctx, "cluster_confusion.png", "classes (rows) against latent clusters (columns)")
    return _section("Clustering (cluster.json)", body)


def _anomaly(ctx: _Context) -> str | None:
    res = ctx.run.read_json("anomaly.json")
    if not res:
        return None
    rows = {"score": res["score"], "data": res["data"], "normal class": res["normal_class"]}
    if "auroc" in res:
        rows.update({"AUROC": res["auroc"], "AUPRC": res["auprc"]})
        for r, v in res["at_target_fpr"].items():
            rows[f"target fpr {r}"] = f"threshold {v['threshold']:.4g}: test TPR {v['tpr']:.3f}, test FPR {v['fpr']:.3f}"
    body = _table(rows)
    matrices = [_confusion(r, v) for r, v in res.get("at_target_fpr", {}).items() if "confusion" in v]
    if matrices:
        body += "<p>Confusion matrices of the test data at each threshold (rows: true class; columns: decision)</p>"
        body += "<div style='display:flex;gap:2em;flex-wrap:wrap'>" + "".join(matrices) + "</div>"
    if (ctx.run.figures / "anomaly.png").is_file():
        body += _image_file(ctx, "anomaly.png", "anomaly scores with thresholds chosen on normal validation data; ROC and precision-recall")
    return _section("Anomaly detection (anomaly.json)", body)


def _confusion(rate: str, at: dict) -> str:
    c = at["confusion"]
    cells = [("normal", c["tn"], c["fp"]), ("anomalous", c["fn"], c["tp"])]
    rows = "".join(f"<tr><th>{name}</th><td>{below}</td><td>{above}</td></tr>" for name, below, above in cells)
    return (f"<table><caption>target FPR {html.escape(rate)} (score &gt; {at['threshold']:.4g})</caption>"
            f"<tr><th></th><th>called normal</th><th>called anomalous</th></tr>{rows}</table>")


def _quality(ctx: _Context) -> str | None:
    res = ctx.run.read_json("quality.json")
    if not res:
        return None
    fl = res["floor"]
    rows = {name: f"{res[key]:.4g}  (floor, training vs test set: {fl[key]:.4g})"
            for name, key in (("Frechet distance", "frechet_distance"), ("precision (k=3)", "precision"),
                              ("recall (k=3)", "recall"))}
    rows.update({"classes present": f"{res['classes_present']} of {res['n_classes']}",
                 "generated / reference examples": f"{res['n_generated']} / {res['n_reference']}",
                 "feature classifier test accuracy": res["classifier"]["test_accuracy"]})
    hist = res["class_histogram"]
    fig = figures.class_histogram([str(h["class"]) for h in hist], [h["fraction"] for h in hist],
                                  [h["reference"] or 0.0 for h in hist])
    body = _table(rows) + ctx.figure("class_histogram", fig, "classes of the samples under the feature classifier")
    return _section("Sample quality (quality.json)", body)


SECTIONS.extend([_summary, _curves, _recon, _steps, _samples, _chain, _latent, _events, _quality, _probe, _clusters, _anomaly, _config])

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .6em;text-align:left;font-size:.9em}th{background:#f5f5f5}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}"""


def write_report(run: Run | str | Path, *, embedding: str = "pca", device: str = "cpu", progress: bool = False) -> Path:
    """Render ``RUN/report.html`` (and ``RUN/figures/*.png``) from what the run holds."""
    run = run if isinstance(run, Run) else Run.open(run)
    ctx = _Context(run, device, embedding)
    parts = [s for s in (section(ctx) for section in SECTIONS) if s]
    cfg = run.config
    fields = cfg.model.model_dump()  # the family's own config: not every family has a network or latent_dim
    parts_desc = ", ".join(f"{k} {fields[k]}" for k in ("network", "latent_dim") if k in fields)
    title = f"lvmkit run {run.path.name}: {cfg.model.kind}{f' ({parts_desc})' if parts_desc else ''} on {cfg.data.name}"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p>Written {time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(str(run.path))}.</p>"
            + "".join(parts) + "</body></html>")
    out = run.path / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    if progress:
        print(f"wrote {out}", file=sys.stderr)
    return out

