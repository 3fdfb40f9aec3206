"""Runs of any family on one data set in one table: size, training and sampling cost, sample
quality, test likelihood or its bound, few-label probes, and their samples side by side.

Only two things are measured here, both seeded: the sampling time and the sample grids. Every
other figure is read from what ``lvmkit evaluate``, ``lvmkit quality`` and ``lvmkit probe``
stored in each run; where one is missing the table names the command that computes it, and a
figure older than its checkpoint is flagged rather than shown as current.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvmkit.analysis.sampling import sampler_for
from lvmkit.core.contract import DensityModel, Encoder, Generator, IterativeGenerator, capabilities, has
from lvmkit.core.errors import ConfigError
from lvmkit.runs.run import Run
from lvmkit.training.train import resolve_device

_GRID = 16  # samples per run in the side-by-side grids
_BATCH = 1000  # samples per call when timing, as lvmkit quality draws them
# Data settings that may differ between compared runs, but then the test split or the
# representation differs too: said in the notes rather than refused.
_DATA_FIELDS = ("limit", "binarize", "scale", "val_fraction", "test_fraction")
_COMMANDS = {"eval.json": "evaluate", "quality.json": "quality", "probe.json": "probe"}  # what writes each file
_NOT_RECORDED = "not recorded"
_ONE_PASS = "one pass (no sampler)"


def _open(runs) -> list[Run]:
    if isinstance(runs, (str, Path, Run)):
        runs = [runs]
    runs = [r if isinstance(r, Run) else Run.open(r) for r in runs]
    if not runs:
        raise ConfigError("lvmkit compare needs at least one run directory, got none; pass e.g. "
                          "'lvmkit compare runs/vae runs/gan'.")
    return runs


def _labels(runs: list[Run]) -> list[str]:
    """Column names: the directory's name, its path where two names clash, then a number."""
    names = [r.path.name for r in runs]
    labels = [n if names.count(n) == 1 else str(r.path) for n, r in zip(names, runs)]
    return [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]


def _data_source(run: Run) -> tuple[str, str | None, str | None]:
    """What identifies the data set: its source name, its file (relative paths taken from the
    directory training ran in) and, for files, the array read from it."""
    d = run.config.data
    if d.path is None:
        return d.name, None, None
    p = Path(d.path).expanduser()
    cwd = (run.read_json("meta.json") or {}).get("cwd")
    if not p.is_absolute() and cwd:
        p = Path(cwd) / p
    return d.name, str(p.resolve()), d.x_key


def _require_one(labels: list[str], keys: list[Any], describe) -> None:
    groups: dict[Any, list[str]] = {}
    for label, key in zip(labels, keys):
        groups.setdefault(key, []).append(label)
    if len(groups) > 1:
        parts = " and ".join(f"{', '.join(names)} {'uses' if len(names) == 1 else 'use'} {describe(key)}"
                             for key, names in groups.items())
        raise ConfigError(f"Runs compared must share one data set, but {parts}; compare runs trained on the same "
                          "data.name, data.path and input shape (data.limit and seeds may differ).")


def _describe_source(key: tuple[str, str | None, str | None]) -> str:
    name, path, x_key = key
    return f"{name!r}" if path is None else f"{name!r} from {path} (array {x_key!r})"


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _choice(q: dict | None) -> dict | None:
    """The sampler choice ``lvmkit quality`` recorded ({"name", "steps", "eta"}); None for the
    model's default (recorded as a sentence) or no record."""
    s = (q or {}).get("sampler")
    return s if isinstance(s, dict) else None


def _sampler(model: IterativeGenerator, cfg, choice: dict | None = None) -> dict:
    """The sampler an iterative generator draws with, by name with its steps: ``choice`` as
    ``lvmkit quality`` records one (None: the model's default), resolved as
    :func:`~lvmkit.analysis.sampling.sampler_for` resolves it."""
    name, steps, eta = ((choice or {}).get(k) for k in ("name", "steps", "eta"))
    if name is not None or eta is not None:  # a chosen sampler (without a name: the one that takes eta)
        s = model.make_sampler(name, steps=steps, eta=eta)
        name = s.name
    else:
        s = model.default_sampler if isinstance(model, IterativeGenerator) else None
        name = getattr(cfg.model, "sampler", None) or (type(s).__name__ if s is not None else "the model's default")
    # A sampler without its own step count takes every step of the chain (ancestral: all T), or
    # the family's sample_steps (an RBM's chain).
    steps = (steps or getattr(s, "steps", None) or getattr(cfg.model, "timesteps", None)
             or getattr(cfg.model, "sample_steps", None))
    out = {"name": name, "steps": steps}
    eta = eta if eta is not None else getattr(s, "eta", None)
    if eta is not None:
        out["eta"] = eta
    return out


def _loaded_weights(run: Run, q: dict | None) -> str:
    """The weights the grid and the timing use: those the stored sample quality was measured
    with, else (as every command) the EMA when the run kept one."""
    recorded = (q or {}).get("weights")
    if recorded in ("ema", "raw"):
        return recorded
    return "ema" if run.config.train.ema_decay > 0 else "raw"


def _recorded_weights(run: Run, record: dict) -> str:
    """The weights a stored figure came from, as its file recorded them; a run that kept no EMA
    has only its raw weights."""
    if record.get("weights") in ("ema", "raw"):
        return record["weights"]
    return "raw" if run.config.train.ema_decay == 0 else _NOT_RECORDED


@torch.no_grad()
def _sampling(model, cfg, choice: dict | None, weights: str, n_time: int, seed: int,
              device: torch.device) -> tuple[dict | str, np.ndarray | None]:
    """A grid of ``_GRID`` samples from seed ``seed`` (the same draw for every run), then the
    seconds per 1,000 samples: ``n_time`` drawn and the time scaled. Both use the sampler
    ``choice`` and the loaded ``weights``, those of the stored sample quality."""
    if not isinstance(model, Generator):
        return f"not available: the {cfg.model.kind} model does not generate", None
    iterative = isinstance(model, IterativeGenerator)
    choice = choice if iterative else None
    draw = sampler_for(model, *((choice or {}).get(k) for k in ("name", "steps", "eta")))
    # The grid, drawn first, is also the warm-up: first-call allocations are not sampling time.
    grid = draw(_GRID, torch.Generator(device).manual_seed(seed)).float().cpu().numpy()
    gen = torch.Generator(device).manual_seed(seed + 1)
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, n_time, _BATCH):
        draw(min(_BATCH, n_time - start), gen)
    _sync(device)
    seconds = time.perf_counter() - t0
    out: dict = {"seconds_per_1000": seconds * 1000 / n_time, "n_timed": n_time, "device": str(device),
                 "threads": torch.get_num_threads() if device.type == "cpu" else None, "weights": weights,
                 "sampler": _sampler(model, cfg, choice) if iterative else _ONE_PASS}
    return out, grid


def _training(run: Run) -> dict | str:
    metrics = run.read_metrics()
    if not metrics:
        return f"not recorded: {run.metrics_path} is missing or empty"
    return {"seconds": sum(m["seconds"] for m in metrics), "epochs": metrics[-1]["epoch"], "steps": metrics[-1]["step"]}


def _quality(run: Run, model, q: dict | None) -> dict | str:
    """The stored sample quality, with the weights and sampler its samples were drawn with."""
    if not isinstance(model, Generator):
        return f"not available: the {run.config.model.kind} model does not generate"
    if q is None:
        return f"not computed: run lvmkit quality {run.path}"
    keys = ("frechet_distance", "precision", "recall", "floor", "n_generated", "n_reference", "classes_present", "n_classes")
    out = {k: q[k] for k in keys if k in q}
    if not isinstance(model, IterativeGenerator):
        sampler: dict | str = _ONE_PASS
    elif "sampler" in q:
        sampler = _sampler(model, run.config, _choice(q))
    else:
        sampler = _NOT_RECORDED
    out.update(weights=_recorded_weights(run, q), sampler=sampler)
    return out


def _likelihood(run: Run, model) -> dict | str:
    """The test NLL or its bound in nats per example, with the estimator that produced it."""
    ev = run.read_json("eval.json")
    if ev is None and not has(model, DensityModel):
        return f"not available: the {run.config.model.kind} model has no likelihood"
    if ev is None:
        return f"not computed: run lvmkit evaluate {run.path}"
    if "nll_bound" in ev:  # a variational bound (diffusion: all T terms, Ho et al. 2020 sec. 3.3)
        out = {"nll": ev["nll_bound"], "nll_se": _finite(ev.get("nll_bound_se")),
               "estimator": ev.get("bound_estimator", "variational bound"), "bound": "upper bound on -log p(x)"}
        if "bits_per_dim" in ev:
            out.update(bits_per_dim=ev["bits_per_dim"], bits_per_dim_se=_finite(ev.get("bits_per_dim_se")))
    elif "nll" in ev:  # importance-weighted (Burda et al. 2015): E[log p_k] <= log p(x), tighter as k grows
        out = {"nll": ev["nll"], "nll_se": _finite(ev.get("nll_stderr")),
               "estimator": ev.get("bound_estimator") or f"IWAE, k = {ev.get('k')}",
               "bound": "upper bound on -log p(x) in expectation"}
        if "test_elbo" in ev:
            out["vlb"] = {"nll": -ev["test_elbo"], "estimator": "VLB (single-sample ELBO)"}
    elif "log_likelihood" in ev:  # log p(x) with its estimator named (an RBM: -F(x) - log Z, log Z exact or by AIS)
        out = {"nll": -ev["log_likelihood"], "nll_se": None, "estimator": ev.get("estimator", "unnamed estimator"),
               "bound": "estimate"}
        if "log_likelihood_lower" in ev and "log_likelihood_upper" in ev:
            lo, hi = -ev["log_likelihood_upper"], -ev["log_likelihood_lower"]
            out.update(nll_interval=[lo, hi], bound="exact" if lo == hi else "estimate, within the interval shown")
    else:
        return f"none: eval.json of the {run.config.model.kind} model holds no likelihood or bound"
    out.update(unit="nats per example", n_test=ev.get("n_test"), weights=_recorded_weights(run, ev))
    return out


def _probe(run: Run, model) -> dict | str:
    if not isinstance(model, Encoder):
        return f"not available: the {run.config.model.kind} model has no encoder"
    p = run.read_json("probe.json")
    if p is None:
        return f"not computed: run lvmkit probe {run.path}"
    latent = p["results"].get("latent", {})
    return {"macro_f1": {n: {"mean": r["macro_f1"]["mean"], "std": r["macro_f1"]["std"]} for n, r in latent.items()},
            "width": p.get("widths", {}).get("latent"), "repeats": p.get("repeats"), "weights": _recorded_weights(run, p)}


def _scaling(run: Run) -> dict:
    """The scaling the run's data used (RUN/scaling.json, fitted on its training split), with
    ``data.scale`` as configured (None: the default for the data's shape)."""
    s = run.scaler()
    out: dict[str, Any] = {"name": s.name, "configured": run.config.data.scale}
    if s.shift.ndim == 0 and s.span.ndim == 0:  # one map for every value: (x - shift) / span
        out.update(shift=float(s.shift), span=float(s.span))
    else:
        out["per_feature"] = int(s.shift.size)
    return out


def _stale(run: Run) -> list[str]:
    """Stored results older than the checkpoint they describe (the run trained on since)."""
    ckpt = run.checkpoint_path("best")
    if not ckpt.is_file():
        return []
    made = ckpt.stat().st_mtime
    return [name for name in _COMMANDS if (run.path / name).is_file() and (run.path / name).stat().st_mtime < made]


def _notes(runs: list[Run], labels: list[str], rows: list[dict]) -> list[str]:
    """What makes figures in one row less comparable than they look."""
    notes = []
    for field in _DATA_FIELDS:
        # data.scale as resolved: an unset scale and the default it resolves to are one scaling
        values = [row["data_scale"]["name"] if field == "scale" else getattr(r.config.data, field)
                  for r, row in zip(runs, rows)]
        if len(set(map(str, values))) > 1:
            notes.append(f"data.{field} differs ({', '.join(f'{lab}: {v}' for lab, v in zip(labels, values))}): test "
                         "figures are measured on different examples or representations.")
    seeds = [r.config.train.seed for r in runs]
    if len(set(seeds)) > 1:
        notes.append(f"train.seed, which also draws the split, differs ({', '.join(f'{lab}: {s}' for lab, s in zip(labels, seeds))}): "
                     "test figures are measured on different test examples.")
    sizes = {row["name"]: row["quality"]["n_generated"] for row in rows
             if isinstance(row["quality"], dict) and "n_generated" in row["quality"]}
    weights = {row["name"]: row["quality"]["weights"] for row in rows if isinstance(row["quality"], dict)}
    if len(set(weights.values())) > 1:
        notes.append(f"The sample quality of the runs comes from different weights ({', '.join(f'{k}: {v}' for k, v in weights.items())}); "
                     "a moving average (ema) and the optimizer's last (raw) weights can score far apart: rerun lvmkit quality "
                     "with one --weights.")
    if len(set(sizes.values())) > 1:
        notes.append(f"lvmkit quality scored different numbers of samples ({', '.join(f'{k}: {v}' for k, v in sizes.items())}); "
                     "the Frechet distance and precision/recall depend on it: rerun with one --n.")
    if sum(isinstance(row["likelihood"], dict) for row in rows) > 1:
        notes.append("Likelihoods share a scale only under one observation model of one representation of the data: a "
                     "Bernoulli or Gaussian decoder on grey levels, binarized pixels and a diffusion model's discretized "
                     "8-bit decoder measure different things.")
    notes += [f"{row['name']}: {name} is older than the checkpoint (trained on since?); rerun lvmkit {_COMMANDS[name]} {row['run']}."
              for row in rows for name in row["stale"]]
    return notes


def _file_name(i: int, label: str) -> str:
    return f"samples/{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(label).name)[:60]}.png"


def compare(runs: list[Run | str | Path], out: str | Path = "compare", *, n_time: int = 100, seed: int = 0,
            device: str = "cpu") -> dict:
    """Compare runs trained on one data set; writes OUT/compare.json and OUT/compare.html.

    One row per run: its directory, family and kind, parameter count (all parameters, and per
    top-level part, e.g. a GAN's generator and discriminator), training time (the sum of the
    metrics' per-epoch seconds), epochs and steps; for generators the time to draw 1,000
    samples, measured now on ``device`` by drawing ``n_time`` (after the grid) and scaling,
    with the sampler and its steps for iterative generators; the Frechet distance, precision
    and recall stored by ``lvmkit quality``; the test NLL or its bound stored by ``lvmkit
    evaluate``, naming the estimator (IWAE with its k, the VLB, ...), in nats per example and
    in bits per dimension where stored; the probe macro F1 stored by ``lvmkit probe`` at each
    label budget, for encoders; the scaling the run's data used (``data.scale`` resolved); and a
    grid of 16 samples drawn from seed ``seed``.

    Every stored figure names the weights it came from ("ema", "raw", or "not recorded" where
    its file does not say and the run kept an EMA), and sample quality its sampler too. The grid
    and the timing use the weights and sampler of the stored sample quality (without one: the
    EMA when the run kept one, and the model's default sampler), and say which.

    Args:
        runs: run directories (or :class:`Run` handles).
        out: directory for compare.json, compare.html and the grids (OUT/samples/*.png).
        n_time: samples drawn to time sampling.
        seed: seed of the sample grids (the timed draws use seed + 1).
        device: where models sample: cpu, cuda or auto.

    Returns:
        The comparison, as written to compare.json: ``runs`` (one row each; a figure that is
        absent is a string saying why and which command computes it), ``data``, ``notes``
        (differences that make a row less comparable), and the settings used.

    Raises:
        ConfigError: no runs, ``n_time`` < 1, or runs on different data sets (source, file or
            input shape).
        CheckpointError: a run directory is missing or not a run.
    """
    if n_time < 1:
        raise ConfigError(f"The number of samples to time (n_time, --n-time) must be positive, got {n_time}; pass e.g. 100.")
    runs = _open(runs)
    labels = _labels(runs)
    _require_one(labels, [_data_source(r) for r in runs], _describe_source)
    dev = resolve_device(device)
    stored = [r.read_json("quality.json") for r in runs]
    weights = [_loaded_weights(r, q) for r, q in zip(runs, stored)]
    models = [r.load_model("best", dev, ema=w == "ema") for r, w in zip(runs, weights)]
    _require_one(labels, [tuple(m.input_shape) for m in models], lambda shape: f"examples of shape {shape}")

    rows, grids = [], {}
    for i, (run, label, model, q, w) in enumerate(zip(runs, labels, models, stored, weights)):
        cfg = run.config
        sampling, grid = _sampling(model, cfg, _choice(q), w, n_time, seed, dev)
        parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
        row = {"name": label, "run": str(run.path), "family": cfg.model.family, "kind": cfg.model.kind,
               "capabilities": capabilities(model), "parameters": sum(p.numel() for p in model.parameters()),
               "parameters_by_part": {k: v for k, v in parts.items() if v}, "training": _training(run),
               "data_scale": _scaling(run), "sampling": sampling, "quality": _quality(run, model, q),
               "likelihood": _likelihood(run, model), "probe": _probe(run, model), "sample_grid": None,
               "stale": _stale(run)}
        if grid is not None:
            row["sample_grid"] = _file_name(i, label)
            grids[row["sample_grid"]] = grid
        rows.append(row)
    first = runs[0].config.data
    result = {"data": {"name": first.name, "path": first.path, "input_shape": list(models[0].input_shape)},
              "runs": rows, "notes": _notes(runs, labels, rows), "seed": seed, "n_time": n_time, "device": str(dev),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from lvmkit.report.compare import write_compare_html  # plotting only when writing the page

    write_compare_html(result, grids, out)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    return result


__all__ = ["compare"]
