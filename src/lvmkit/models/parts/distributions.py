"""Diagonal-Gaussian mathematics shared by every model: sampling, densities, divergences."""
from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(mean: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I) (Kingma & Welling 2013, eq. 4/10)."""
    if eps is None:
        eps = torch.randn_like(mean)
    return mean + torch.exp(0.5 * logvar) * eps


def log_normal(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def log_std_normal(x: Tensor) -> Tensor:
    """log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (_LOG_2PI + x**2).sum(-1)


def kl_std_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per row, in closed form (Kingma & Welling, app. B)."""
    return 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar).sum(-1)


def kl_normal_terms(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp logvar1) || N(mean2, exp logvar2)) elementwise, in closed form:
    (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1) / 2."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def kl_normal(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N1 || N2) between diagonal Gaussians per row (:func:`kl_normal_terms` summed over the last dimension)."""
    return kl_normal_terms(mean1, logvar1, mean2, logvar2).sum(-1)


def logmeanexp(x: Tensor, dim: int) -> Tensor:
    """log(mean(exp(x))) along ``dim``, computed stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
