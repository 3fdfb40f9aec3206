"""Input corruptions for denoising autoencoders (Vincent et al. 2008), applied in training only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lvmkit.core.registry import Registry

CORRUPTIONS: Registry = Registry("corruption")


class _Corruption(nn.Module):
    def __init__(self, noise: float = 0.3) -> None:
        super().__init__()
        self.noise = noise

    @classmethod
    def from_config(cls, cfg) -> "_Corruption":
        return cls(cfg.noise)


@CORRUPTIONS.register("none")
class NoCorruption(_Corruption):
    """The identity."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@CORRUPTIONS.register("gaussian")
class GaussianNoise(_Corruption):
    """x + noise * N(0, 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return x + self.noise * torch.randn_like(x)


@CORRUPTIONS.register("mask")
class MaskingNoise(_Corruption):
    """Sets each input value to 0 with probability ``noise``."""

    def forward(self, x: Tensor) -> Tensor:
        keep = torch.rand_like(x) >= self.noise
        return x * keep
