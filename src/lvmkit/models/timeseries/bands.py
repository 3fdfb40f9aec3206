"""Prediction bands of a forecaster: the mean and the 5%/95% quantiles of its sampled predictions."""
from __future__ import annotations

import torch
from torch import Tensor


def predict_bands(model, x: Tensor, samples: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, 5% and 95% quantiles (B, T, D) of the model's predictions at every row of x."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    draws = model.predict(x, samples=samples, generator=g)  # (S, B, T, D)
    if draws.shape[0] == 1:
        return draws[0], draws[0], draws[0]
    q = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=draws.dtype, device=draws.device), dim=0)
    return draws.mean(0), q[0], q[1]
