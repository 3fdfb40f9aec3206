"""Maximum mean discrepancy between samples (Gretton et al. 2012), used by InfoVAE/WAE."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from lvmkit.core.registry import Registry

KERNELS: Registry = Registry("MMD kernel")


@KERNELS.register("imq")
def imq_kernel(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """Inverse multiquadratic kernel C / (C + |x - y|^2), C = 2 d scale^2 (Tolstikhin et al. 2018)."""
    c = 2.0 * x.shape[-1] * scale**2
    return c / (c + torch.cdist(x, y).pow(2))


@KERNELS.register("rbf")
def rbf_kernel(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """Gaussian kernel exp(-|x - y|^2 / (2 scale^2))."""
    return torch.exp(-torch.cdist(x, y).pow(2) / (2.0 * scale**2))


def mmd2_unbiased(x: Tensor, y: Tensor, kernel: str = "imq", scale: float = 1.0) -> Tensor:
    """Unbiased estimate of MMD^2 between samples x (n, d) and y (m, d) (Gretton et al., eq. 3)."""
    k = KERNELS.get(kernel)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"The unbiased MMD needs at least 2 samples on each side; got {n} and {m} (use a batch size of 2 or more).")
    kxx, kyy, kxy = k(x, x, scale), k(y, y, scale), k(x, y, scale)
    # Drop the diagonals: k(x_i, x_i) terms bias the within-sample means upwards.
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * kxy.mean()


def mmd2_biased(x: Tensor, y: Tensor, kernel: str = "imq", scale: float = 1.0) -> Tensor:
    """Biased (V-statistic) estimate of MMD^2 (Gretton et al., eq. 5): never negative and defined
    for a single sample on each side, where :func:`mmd2_unbiased` is not."""
    k = KERNELS.get(kernel)
    return k(x, x, scale).mean() + k(y, y, scale).mean() - 2.0 * k(x, y, scale).mean()


def mmd2_rbf_gaussians(delta: float, sigma: float, dim: int, scale: float) -> float:
    """Closed-form MMD^2 between N(mu1, sigma^2 I) and N(mu2, sigma^2 I), |mu1 - mu2| = delta,
    under the RBF kernel of bandwidth ``scale``: with s = scale^2 + 2 sigma^2,
    MMD^2 = 2 (scale^2 / s)^(d/2) (1 - exp(-delta^2 / (2 s)))."""
    s = scale**2 + 2.0 * sigma**2
    return 2.0 * (scale**2 / s) ** (dim / 2) * (1.0 - math.exp(-(delta**2) / (2.0 * s)))
