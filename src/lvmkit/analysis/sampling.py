"""Draw samples from a trained run's prior and write them to a file."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lvmkit.core.errors import ConfigError
from lvmkit.core.contract import Forecaster, Generator, IterativeGenerator, has, require
from lvmkit.runs.run import Run


def ema_choice(weights: str | None) -> bool | None:
    """``--weights``: "ema" (the moving average; an error when the run kept none), "raw" (the
    optimizer's last weights) or None (the EMA when the run kept one)."""
    if weights not in (None, "ema", "raw"):
        raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}.")
    return None if weights is None else weights == "ema"


def sampler_for(model, sampler: str | None = None, steps: int | None = None,
                eta: float | None = None) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``draw(n, generator)`` for ``model`` with the sampler named and its options (iterative
    models only; ``sampler`` None: the model's default if it takes the options given, else the
    first of its samplers that does). The choice is checked before anything is drawn: a
    ConfigError for a sampler choice on a one-pass generator, an option no sampler of the
    model takes (``eta`` of an RBM), or a value the sampler rejects. A one-pass generator
    ignores ``steps``."""
    if sampler is not None or eta is not None:
        require(model, IterativeGenerator, "Choosing a sampler (--sampler, --eta)",
                "leave them out: this model draws its samples in one pass")
    if (sampler is None and steps is None and eta is None) or not has(model, IterativeGenerator):
        return lambda n, g: model.sample(n, steps=steps, generator=g)
    chosen = model.make_sampler(sampler, steps=steps, eta=eta)
    return lambda n, g: model.sample(n, generator=g, sampler=chosen)


def sample(run: Run | str | Path, n: int = 64, out: str | Path | None = None, *, seed: int = 0,
           device: str = "cpu", units: str = "model", sampler: str | None = None, steps: int | None = None,
           eta: float | None = None, weights: str | None = None) -> np.ndarray:
    """Return ``n`` samples (means of p(x|z), z ~ N(0, I)) of shape (n, *input_shape).

    ``units = "model"`` gives them as the model sees data (after ``data.scale``); ``"data"``
    maps them back to the data's own units with the training split's scaling. With ``out``,
    also write them: ``.png`` as an image grid (image data only, model units), ``.npy`` as an
    array, ``.csv`` as rows (tabular data only). ``sampler``, ``steps`` and ``eta`` choose an
    iterative model's sampler and its options (diffusion: ``"ancestral"`` or ``"ddim"``; RBM and
    DBN: ``"gibbs"`` or ``"mh"``; EBM: ``"langevin"``); None keeps the model's default, and an
    option none of its samplers takes is refused (:func:`sampler_for`).
    """
    if n <= 0:
        raise ConfigError(f"The number of samples must be positive, got {n}; pass e.g. --n 64.")
    if units not in ("model", "data"):
        raise ConfigError(f"Sample units must be 'model' or 'data', got {units!r}; pass --units model or --units data.")
    run = run if isinstance(run, Run) else Run.open(run)
    model = run.load_model("best", device, ema=ema_choice(weights))
    series = "a series model forecasts instead: use 'lvmkit forecast RUN --input FILE --until T'"
    require(model, Generator, "lvmkit sample", series if isinstance(model, Forecaster) else None)
    draw = sampler_for(model, sampler, steps, eta)
    x = draw(n, torch.Generator(device=device).manual_seed(seed)).cpu().numpy()
    if out is not None and Path(out).suffix.lower() == ".png" and units == "data":
        raise ConfigError("A .png grid shows samples as grey levels in model units; write .npy or .csv with --units data.")
    if units == "data":
        x = run.scaler().inverse(x)
    if out is not None:
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix not in (".png", ".npy", ".csv"):
            raise ConfigError(f"Cannot write samples to {str(out)!r}: use a .png, .npy or .csv file name.")
        if suffix == ".png" and x.ndim != 4:
            raise ConfigError(f"Samples of tabular data (shape {x.shape[1:]}) cannot be drawn as a .png grid; write .npy or .csv instead.")
        if suffix == ".csv" and x.ndim != 2:
            raise ConfigError(f"Image samples (shape {x.shape[1:]}) cannot be written as .csv rows; write .png or .npy instead.")
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            from lvmkit.report.figures import save_grid_png

            save_grid_png(x, out)
        elif suffix == ".npy":
            np.save(out, x)
        else:
            np.savetxt(out, x, delimiter=",", fmt="%.6g")
    return x
