"""Evaluation of a trained run on its test split: objective, ELBO, log-likelihood, reconstruction."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .data import batches
from .model import LatentVariableModel
from .run import Run
from .train import FULL_WEIGHT_STEP, mean_loss, resolve_device


def evaluate(run: Run | str | Path, k: int | None = None, *, batch_size: int | None = None,
             max_examples: int | None = None, device: str | None = None, write: bool = True) -> dict:
    """Evaluate the run's best checkpoint on its test split and write ``RUN/eval.json``.

    Returns a dict with the test objective and its terms; for models with a stochastic encoder
    also the mean single-sample ELBO and the importance-weighted estimate of log p(x) with
    ``k`` samples (Burda et al. 2015), its standard error, and the evaluation throughput.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    ecfg = run.config.eval
    k = k or ecfg.k
    batch_size = batch_size or ecfg.batch_size
    max_examples = max_examples or ecfg.max_examples
    dev = resolve_device(device or run.config.train.device)
    model = run.load_model("best", dev)
    test = run.data().test
    if max_examples:
        test = type(test)(test.x[:max_examples], None if test.y is None else test.y[:max_examples])
    test = test.to(dev)
    torch.manual_seed(run.config.train.seed + 1)
    result: dict = {"n_test": len(test), "data": run.config.data.name, "binarize": run.config.data.binarize}
    result.update({f"test_{name}": v for name, v in mean_loss(model, test, FULL_WEIGHT_STEP, 256).items()})
    if not isinstance(model, LatentVariableModel):
        # Other families bring their own test metrics (e.g. interpolation/extrapolation error).
        result.update(model.evaluate_split(test, k=k))
        if write:
            run.write_json("eval.json", result)
        return result

    sq, n = 0.0, 0
    for xb, _ in batches(test, 256, shuffle=False):
        sq += float(((model.reconstruct(xb) - xb) ** 2).flatten(1).sum(1).sum())
        n += xb.shape[0]
    result["recon_sq_error"] = sq / n  # per example, summed over dimensions

    if model.stochastic:
        parts: dict[str, list[torch.Tensor]] = {}
        for xb, _ in batches(test, 256, shuffle=False):
            for name, v in model.elbo(xb).items():
                parts.setdefault(name, []).append(v)
        for name, v in parts.items():
            result[f"test_{name}"] = float(torch.cat(v).mean())
        t0 = time.perf_counter()
        ll = torch.cat([model.log_likelihood(xb, k) for xb, _ in batches(test, batch_size, shuffle=False)])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        result.update({
            "k": k,
            "log_likelihood": float(ll.mean()),
            "nll": -float(ll.mean()),
            "nll_stderr": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0,
            "iw_seconds": seconds,
            "iw_examples_per_second": len(ll) / seconds if seconds > 0 else float("inf"),
        })
    if write:
        run.write_json("eval.json", result)
    return result
