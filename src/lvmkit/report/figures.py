"""Figures of a run, each a function returning a matplotlib Figure (Agg backend, no display)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402  (matplotlib's own image dependency)


def image_grid(images: np.ndarray, ncols: int) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one (rows*H, ncols*W[, C]) array, 1-pixel gaps."""
    n, c, h, w = images.shape
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + 1) - 1, ncols * (w + 1) - 1, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, ncols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = images[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid[..., :3]


def _show(ax, grid: np.ndarray) -> None:
    ax.imshow(np.clip(grid, 0, 1), cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def loss_curves(metrics: list[dict]) -> Figure:
    """Training and validation loss per epoch, and each term of the objective."""
    epochs = [m["epoch"] for m in metrics]
    terms = sorted({k[len("train_"):] for m in metrics for k in m if k.startswith("train_") and k != "train_seconds"} - {"loss"})
    fig, axes = plt.subplots(1, 1 + len(terms), figsize=(4 * (1 + len(terms)), 3.2), squeeze=False)
    for ax, term in zip(axes[0], ["loss", *terms]):
        for split, style in (("train", "-"), ("val", "--")):
            ys = [m.get(f"{split}_{term}") for m in metrics]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, style, marker="o" if len(epochs) < 30 else None, ms=3, label=split)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return fig


def reconstructions(inputs: np.ndarray, recons: np.ndarray) -> Figure:
    """Inputs (top row of each pair) above their reconstructions."""
    if inputs.ndim == 4:
        n = len(inputs)
        ncols = min(n, 16)
        fig, axes = plt.subplots(2, 1, figsize=(ncols * 0.7, 1.7))
        _show(axes[0], image_grid(inputs, ncols))
        axes[0].set_title("inputs", fontsize=9)
        _show(axes[1], image_grid(recons, ncols))
        axes[1].set_title("reconstructions", fontsize=9)
        return fig
    k = min(len(inputs), 6)
    fig, axes = plt.subplots(1, k, figsize=(2.5 * k, 2.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.plot(inputs[i], "o-", ms=2, label="input")
        ax.plot(recons[i], "x--", ms=2, label="reconstruction")
        ax.set_xlabel("feature")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def samples(x: np.ndarray, data: np.ndarray | None = None) -> Figure:
    """Samples from the prior: an image grid, or a scatter of two features beside the data."""
    if x.ndim == 4:
        ncols = int(np.ceil(np.sqrt(len(x))))
        fig, ax = plt.subplots(figsize=(ncols * 0.55, ncols * 0.55))
        _show(ax, image_grid(x, ncols))
        return fig
    fig, ax = plt.subplots(figsize=(4, 4))
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=4, alpha=0.4, label="data")
    ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.6, label="samples")
    ax.set_xlabel("feature 0")
    ax.set_ylabel("feature 1")
    ax.legend()
    return fig


def epoch_samples(grids: list[tuple[int, np.ndarray]], per_row: int = 16) -> Figure:
    """One row of samples (N, C, H, W) from the same fixed noise per recorded epoch."""
    fig, axes = plt.subplots(len(grids), 1, figsize=(min(per_row, 16) * 0.6, 0.75 * len(grids) + 0.3), squeeze=False)
    for ax, (epoch, x) in zip(axes[:, 0], grids):
        _show(ax, image_grid(x[:per_row], per_row))
        ax.set_title(f"epoch {epoch}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def class_histogram(names: list[str], fractions: list[float], reference: list[float]) -> Figure:
    """Share of each class among generated samples (as the feature classifier labels them)
    beside its share in the reference set: missing classes show mode collapse."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.0))
    idx = np.arange(len(names))
    ax.bar(idx - 0.2, fractions, width=0.4, label="samples")
    ax.bar(idx + 0.2, reference, width=0.4, label="test set", alpha=0.6)
    ax.set_xticks(idx, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_grid_png(images: np.ndarray, path, ncols: int | None = None) -> None:
    """Write (N, C, H, W) images as one PNG grid."""
    ncols = ncols or int(np.ceil(np.sqrt(len(images))))
    grid = image_grid(images, ncols)
    plt.imsave(path, np.clip(grid, 0, 1), cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)


def latent_scatter(codes2d: np.ndarray, labels: np.ndarray | None, title: str, class_names: list[str] | None = None) -> Figure:
    """Test-set codes in two dimensions, coloured by label where labels exist."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    if labels is None:
        ax.scatter(codes2d[:, 0], codes2d[:, 1], s=5, alpha=0.6)
    else:
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            sel = labels == c
            name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
            ax.scatter(codes2d[sel, 0], codes2d[sel, 1], s=5, alpha=0.7, color=cmap(i % cmap.N), label=name)
        ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def latent_grid(images: np.ndarray, n: int) -> Figure:
    """Decoded means over an n x n grid of the 2-D latent space (seed report, figure 14b)."""
    fig, ax = plt.subplots(figsize=(6, 6))
    _show(ax, image_grid(images, n))
    ax.set_title("decoded latent grid (Gaussian quantiles 0.05..0.95)", fontsize=9)
    return fig


def learning_curve(probe: dict) -> Figure:
    """Probe macro f1 and accuracy against labelled examples per class, one line per representation."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = probe["labels"]
    for name, res in probe["results"].items():
        for ax, key in zip(axes, ("macro_f1", "accuracy")):
            m = [res[str(n)][key]["mean"] for n in labels]
            s = [res[str(n)][key]["std"] for n in labels]
            ax.errorbar(labels, m, yerr=s, marker="o", capsize=3, label=name)
    for ax, key in zip(axes, ("macro f1", "accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle(f"logistic-regression probe, mean +- std over {probe['repeats']} draws", fontsize=10)
    fig.tight_layout()
    return fig


def confusion(table: np.ndarray, class_names: list[str] | None = None) -> Figure:
    """Classes (rows) against clusters (columns), counts annotated."""
    fig, ax = plt.subplots(figsize=(0.5 * table.shape[1] + 2.5, 0.45 * table.shape[0] + 1.5))
    ax.imshow(table, cmap="Blues")
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > table.max() / 2 else "black")
    ax.set_xlabel("cluster")
    ax.set_ylabel("class")
    ax.set_yticks(range(table.shape[0]))
    if class_names and len(class_names) == table.shape[0]:
        ax.set_yticklabels(class_names, fontsize=7)
    fig.tight_layout()
    return fig


def anomaly_curves(scores: np.ndarray, is_anomaly: np.ndarray | None, curves, thresholds: dict,
                   auroc: float | None, auprc: float | None) -> Figure:
    """Score histograms with the validation-chosen thresholds; ROC and precision-recall curves."""
    n = 1 if curves is None else 3
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    ax = axes[0][0]
    bins = np.histogram_bin_edges(scores, 50)
    if is_anomaly is None:
        ax.hist(scores, bins, alpha=0.7, label="all")
    else:
        ax.hist(scores[~is_anomaly], bins, alpha=0.6, density=True, label="normal")
        ax.hist(scores[is_anomaly], bins, alpha=0.6, density=True, label="anomalous")
    for r, t in thresholds.items():
        ax.axvline(t, ls="--", color="k", lw=0.8)
        ax.text(t, ax.get_ylim()[1] * 0.9, f" fpr {r:g}", fontsize=7, rotation=90, va="top")
    ax.set_xlabel("anomaly score")
    ax.legend(fontsize=7)
    if curves is not None:
        fpr, tpr, rec, prec = curves
        axes[0][1].plot(fpr, tpr)
        axes[0][1].plot([0, 1], [0, 1], ":", color="grey")
        axes[0][1].set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC, AUC {auroc:.3f}")
        axes[0][2].plot(rec, prec)
        axes[0][2].set(xlabel="recall", ylabel="precision", title=f"precision-recall, AP {auprc:.3f}")
    fig.tight_layout()
    return fig


def event_grid(rows: list[tuple[str, np.ndarray, np.ndarray]]) -> Figure:
    """Per class: a row of input events and a row of their reconstructions (first channel)."""
    ncols = max(len(x) for _, x, _ in rows)
    fig, axes = plt.subplots(2 * len(rows), ncols, figsize=(1.6 * ncols, 3.3 * len(rows)), squeeze=False)
    for r, (name, x, rec) in enumerate(rows):
        for j in range(ncols):
            for k, (arr, what) in enumerate(((x, "input"), (rec, "reconstruction"))):
                ax = axes[2 * r + k][j]
                ax.set_axis_off()
                if j < len(arr):
                    ax.imshow(arr[j, 0], origin="lower", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                if j == 0:
                    ax.set_title(f"{name}: {what}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def chain_strip(steps: list[tuple[str, np.ndarray]]) -> Figure:
    """One column per kept state (label, x (n, C, H, W) in [0, 1]), one row per sample."""
    n = steps[0][1].shape[0]
    fig, axes = plt.subplots(n, len(steps), figsize=(1.1 * len(steps), 1.1 * n), squeeze=False)
    for j, (t, x) in enumerate(steps):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(x[i, 0] if x.shape[1] == 1 else np.moveaxis(x[i], 0, -1), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
        axes[0][j].set_title(str(t), fontsize=7)
    fig.tight_layout()
    return fig


def bound_terms(terms: list[float]) -> Figure:
    """The variational bound's terms L_0 .. L_T against the timestep (log scale)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    t = np.arange(len(terms))
    ax.semilogy(t, np.maximum(np.asarray(terms), 1e-6))
    ax.set(xlabel="t (L_t)", ylabel="nats per example", title=f"bound {sum(terms):.4g} nats in all")
    fig.tight_layout()
    return fig


def filters(w: np.ndarray, n: int = 64) -> Figure:
    """The first ``n`` filters (units, C, H, W), each scaled to its own range."""
    w = w[:n]
    cols = int(np.ceil(np.sqrt(len(w))))
    rows = int(np.ceil(len(w) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 0.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, f in zip(axes.flat, w):
        ax.imshow(f[0] if f.shape[0] == 1 else np.moveaxis(f, 0, -1).mean(-1), cmap="RdBu_r")
    fig.tight_layout()
    return fig


def _planes(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) as grey (C = 1) or RGB (C = 3) images; other channel counts show channel 0."""
    return x if x.shape[1] in (1, 3) else x[:, :1]


def canvas_gif(inputs: np.ndarray, canvases: np.ndarray, ms_per_step: int = 400) -> bytes:
    """An animated GIF of a canvas built over steps: per frame t, the inputs (n, C, H, W) in the
    top row above the canvases c_t (T, n, C, H, W) in [0, 1], labelled "t = k / T"; the last
    frame is held longer so that the loop reads."""
    top = image_grid(_planes(inputs), len(inputs))
    scale = max(1, 64 // inputs.shape[2])  # pixels drawn large enough to see, not blurred
    frames = []
    for t, c in enumerate(canvases, start=1):
        grid = np.concatenate([top, np.ones((1, *top.shape[1:]), np.float32), image_grid(_planes(c), len(c))])
        img = Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        frame = Image.new("RGB", (img.width, img.height + 14), "white")
        frame.paste(img, (0, 14))
        ImageDraw.Draw(frame).text((2, 1), f"t = {t} / {len(canvases)}", fill="black")
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=[ms_per_step] * (len(frames) - 1) + [4 * ms_per_step])
    return buf.getvalue()


def _window_box(ax, row: np.ndarray, h: int, w: int, **style) -> None:
    # An N x N grid of filters centred at (g_x, g_y) with stride delta (1-based pixels, eq. 19-20)
    # covers N * delta pixels a side; imshow puts pixel i (1-based) at coordinate i - 1. The box is
    # cut to the image (a window wider than the image, as at initialisation, runs along its border).
    gx, gy, delta, n = row
    half = n * delta / 2
    x0, x1 = max(gx - 1 - half, -0.5), min(gx - 1 + half, w - 0.5)
    y0, y1 = max(gy - 1 - half, -0.5), min(gy - 1 + half, h - 0.5)
    if x0 < x1 and y0 < y1:
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, clip_on=False, **style))


_READ = {"edgecolor": "red", "label": "read"}
_WRITE = {"edgecolor": "cyan", "ls": "--", "label": "write"}


def attention_windows(x: np.ndarray, read: np.ndarray | None, write: np.ndarray | None) -> Figure:
    """The inputs (n, C, H, W) once per step with that step's read (red) and write (dashed
    cyan) windows; ``read``/``write`` are (T, n, 4) rows (g_x, g_y, delta, N) or None."""
    steps = len(read if read is not None else write)
    n, _, h, w = x.shape
    fig, axes = plt.subplots(n, steps, figsize=(1.1 * steps, 1.1 * n + 0.3), squeeze=False)
    shown = _planes(x)
    for i in range(n):
        for t in range(steps):
            ax = axes[i][t]
            ax.imshow(shown[i, 0] if shown.shape[1] == 1 else np.moveaxis(shown[i], 0, -1), cmap="gray", vmin=0, vmax=1)
            if read is not None:
                _window_box(ax, read[t, i], h, w, **_READ)
            if write is not None:
                _window_box(ax, write[t, i], h, w, **_WRITE)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"t={t + 1}", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, fill=False, **style) for style, win in ((_READ, read), (_WRITE, write))
               if win is not None]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def step_kl(kl: np.ndarray) -> Figure:
    """The mean KL of each step's code, one bar per step t = 1 .. T (nats per example)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(kl) + 1.5), 3.0))
    t = np.arange(1, len(kl) + 1)
    ax.bar(t, kl)
    ax.set(xlabel="step t", ylabel="KL_t (nats per example)", title=f"sum over steps {kl.sum():.4g} nats")
    ax.set_xticks(t if len(t) <= 20 else t[:: int(np.ceil(len(t) / 20))])
    fig.tight_layout()
    return fig


def top_trials(curves: list[tuple[int, float, list[float]]], metric: str, objective: str) -> Figure:
    """A search's best trials (the thesis's Figure 4.5): each trial's per-epoch ``metric``,
    coloured by its objective value; ``curves`` holds (trial number, objective, values)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    values = np.array([v for _, v, _ in curves], dtype=float)
    lo, hi = float(values.min()), float(values.max())
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-12)
    for number, value, ys in curves:
        ax.plot(range(1, len(ys) + 1), ys, color=cmap(norm(value)), lw=1.4, label=f"trial {number}")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=objective)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"the {len(curves)} best trials")
    fig.tight_layout()
    return fig
