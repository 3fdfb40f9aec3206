"""Figures and the page of the Ising analyses: thermodynamics of the simulator against a model,
lattices side by side, the leading latent against |M| and T, the phase probe's crossing and
the finite-size extrapolation of T_c. Each figure function takes plain rows and arrays."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

T_C = 2.0 / np.log(1.0 + np.sqrt(2.0))  # Onsager
_LABELS = {"energy": "energy per spin E", "abs_magnetization": "magnetization |M|", "specific_heat": "specific heat C",
           "susceptibility": "susceptibility chi", "binder": "Binder cumulant U"}


def _tc_line(ax) -> None:
    ax.axvline(T_C, color="grey", lw=0.8, ls=":", label="T_c (Onsager)")


def thermodynamics(rows: Sequence[dict], model_label: str = "RBM",
                   quantities: Sequence[str] = ("energy", "abs_magnetization", "specific_heat", "susceptibility")) -> Figure:
    """E, |M|, C and chi against T with error bars: ``row["simulator"]`` and ``row["model"]`` per
    temperature (each a dict of quantities and ``<q>_error``), and ``row["exact"]`` where given."""
    t = np.array([r["temperature"] for r in rows])
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.0 * len(quantities), 3.3), squeeze=False)
    for ax, q in zip(axes[0], quantities):
        for key, label, style in (("simulator", "Monte Carlo", dict(fmt="o-", ms=4, capsize=2)),
                                  ("model", model_label, dict(fmt="s--", ms=4, capsize=2, mfc="none"))):
            if all(key in r for r in rows):
                ax.errorbar(t, [r[key][q] for r in rows], yerr=[r[key][f"{q}_error"] for r in rows], label=label, **style)
        if all(r.get("exact") for r in rows):
            ax.plot(t, [r["exact"][q] for r in rows], "k:", lw=1, label="exact")
        _tc_line(ax)
        ax.set_xlabel("T")
        ax.set_title(_LABELS.get(q, q), fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def lattices(columns: Sequence[tuple[float, np.ndarray, np.ndarray]], model_label: str = "RBM", per: int = 3) -> Figure:
    """Per temperature, ``per`` lattices (+-1) of the simulator (top rows) above ``per`` of the
    model (bottom rows): ``columns`` holds (T, simulator (k, L, L), model (k, L, L))."""
    n = len(columns)
    fig, axes = plt.subplots(2 * per, n, figsize=(1.3 * n, 2.6 * per * 0.55 + 0.6), squeeze=False)
    for j, (t, sim, mod) in enumerate(columns):
        for i in range(per):
            for row, (arr, name) in enumerate(((sim, "Monte Carlo"), (mod, model_label))):
                ax = axes[row * per + i][j]
                if i < len(arr):
                    ax.imshow(arr[i], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0 and i == 0:
                    ax.set_ylabel(name, fontsize=7)
        axes[0][j].set_title(f"T={t:.3g}", fontsize=8)
    fig.tight_layout(h_pad=0.2, w_pad=0.2)
    return fig


def latent_against_order(temperature: np.ndarray, latent: np.ndarray, abs_m: np.ndarray, name: str = "PC 1") -> Figure:
    """The leading latent of each configuration against T and against |M| (Wetzel 2017, fig. 2)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    sc = axes[0].scatter(temperature + np.random.default_rng(0).uniform(-0.02, 0.02, len(temperature)), latent, s=2,
                         c=abs_m, cmap="viridis", alpha=0.5)
    _tc_line(axes[0])
    axes[0].set_xlabel("T")
    axes[0].set_ylabel(name)
    fig.colorbar(sc, ax=axes[0], label="|M|")
    axes[1].scatter(abs_m, np.abs(latent), s=2, c=temperature, cmap="coolwarm", alpha=0.5)
    axes[1].set_xlabel("|M|")
    axes[1].set_ylabel(f"|{name}|")
    fig.tight_layout()
    return fig


def crossing(curves: Sequence[dict]) -> Figure:
    """Per lattice size, a curve against T (``curve["temperature"]``, ``curve["value"]``, its
    ``error``) and the estimate ``curve["t_c"]``; a horizontal line at ``curve["level"]`` if set."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in curves:
        line = ax.errorbar(c["temperature"], c["value"], yerr=c.get("error"), fmt="o-", ms=3, capsize=2, label=c["label"])
        if c.get("t_c") is not None:
            ax.axvline(c["t_c"], color=line[0].get_color(), lw=0.8, ls="--")
        if c.get("level") is not None:
            ax.axhline(c["level"], color="grey", lw=0.6)
    _tc_line(ax)
    ax.set_xlabel("T")
    ax.set_ylabel(curves[0].get("ylabel", "") if curves else "")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def finite_size(estimates: Sequence[dict], fits: Sequence[dict]) -> Figure:
    """T_c(L) against 1/L per estimator, with the fitted lines T_c + a / L (``fit["t_c"]``, ``fit["a"]``)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for est, fit in zip(estimates, fits):
        inv = 1.0 / np.array(est["sizes"], dtype=float)
        pts = ax.plot(inv, est["t_c"], "o", label=f"{est['label']}: T_c = {fit['t_c']:.4f}" if fit else est["label"])
        if fit:
            xs = np.linspace(0, inv.max() * 1.1, 20)
            ax.plot(xs, fit["t_c"] + fit["a"] * xs, "--", color=pts[0].get_color(), lw=0.8)
    ax.axhline(T_C, color="grey", lw=0.8, ls=":", label="Onsager 2.2692")
    ax.set_xlabel("1 / L")
    ax.set_ylabel("T_c(L)")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _embed(fig: Figure, path: Path, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    b64 = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table_html(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: str | Path, title: str, sections: Sequence[tuple[str, Sequence]]) -> Path:
    """One HTML page: each section a heading and parts, each part an HTML string or a
    (name, Figure, caption) saved as PATH's folder/figures/name.png and embedded."""
    path = Path(path)
    body = []
    for heading, parts in sections:
        html_parts = []
        for part in parts:
            if isinstance(part, tuple):
                name, fig, caption = part
                html_parts.append(_embed(fig, path.parent / "figures" / f"{name}.png", caption))
            else:
                html_parts.append(part)
        body.append(f"<section><h2>{html.escape(heading)}</h2>{''.join(html_parts)}</section>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
    return path


__all__ = ["crossing", "finite_size", "latent_against_order", "lattices", "table_html", "thermodynamics", "write_page"]
