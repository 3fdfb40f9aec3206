"""Evaluation of a trained run on its test split: objective, ELBO, log-likelihood, reconstruction."""
from __future__ import annotations

from pathlib import Path

import torch

from lvmkit.core.contract import Forecaster, has
from lvmkit.runs.run import Run
from lvmkit.data import Split
from lvmkit.training.train import mean_loss, resolve_device


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
        test = Split(test.x[:max_examples], None if test.y is None else test.y[:max_examples])
    test = test.to(dev)
    torch.manual_seed(run.config.train.seed + 1)
    result: dict = {"n_test": len(test), "data": run.config.data.name, "binarize": run.config.data.binarize}
    result.update({f"test_{name}": v for name, v in mean_loss(model, test, 256).items()})
    # Each family brings its own test metrics (likelihood estimates, forecast errors, ...);
    # forecasters report errors in the data's own units through the training split's scaling.
    extra = {"scaler": run.scaler()} if has(model, Forecaster) else {}
    result.update(model.evaluate_split(test, k=k, batch_size=batch_size, **extra))
    if write:
        run.write_json("eval.json", result)
    return result
