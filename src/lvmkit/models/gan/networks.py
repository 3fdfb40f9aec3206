"""Generator and discriminator networks of the GAN family, sized from the data's shape.

Convolutional networks follow DCGAN (Radford et al. 2015): the generator projects the noise to a
small feature map and doubles its size with stride-2 transposed convolutions (BatchNorm + ReLU
between them); the discriminator mirrors it with stride-2 convolutions and LeakyReLU(0.2), no
normalization on the first layer, and one linear logit at the end. Their weights start from
N(0, 0.02), normalization scales from N(1, 0.02), as in the DCGAN paper. The MLPs (tabular
data) keep PyTorch's default initialisation: without batch norm to rescale activations,
N(0, 0.02) weights make the first generator ignore z (a collapsed start), and in our 1-D
mixture experiments most seeds then ended collapsed onto one mode.

Generators end in a sigmoid: lvmkit scales data to [0, 1], and sigmoid(2a) = (1 + tanh(a)) / 2
is DCGAN's tanh output mapped to that range, so nothing is lost by using it directly.
Discriminators return one logit per example, shape (batch,). ``output_bias=False`` drops the
last layer's bias: a Wasserstein critic's loss does not change when a constant is added to
its output, so that bias would never receive a gradient.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from lvmkit.core.errors import ConfigError

Norm = Literal["batch", "layer", "none"]


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation of one layer (apply with ``net.apply``)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _norm(kind: Norm, width: int, image: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width) if image else nn.BatchNorm1d(width)
    if kind == "layer":  # per example over all features; GroupNorm(1, C) is layer norm over (C, H, W)
        return nn.GroupNorm(1, width) if image else nn.LayerNorm(width)
    return nn.Identity()


def _finish(net: nn.Module, spectral: bool, dcgan: bool) -> nn.Module:
    """Initialise (DCGAN's way, or PyTorch's), then (optionally) wrap every convolution and
    linear map in spectral normalisation (Miyato et al. 2018), which must follow initialisation."""
    if dcgan:
        net.apply(dcgan_init)
    if spectral:
        for module in list(net.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                _spectral_norm(module)
    return net


class ConvGenerator(nn.Module):
    """z (batch, latent) -> linear -> (channels[0], h0, w0) -> len(channels) transposed convs
    (kernel 4, stride 2, padding 1), the last to C -> centre crop to (H, W) -> sigmoid.

    ``h0 = ceil(H / 2**L)`` with ``L = len(channels)``, so 28 -> 7 -> 14 -> 28 with two entries,
    8 -> 2 -> 4 -> 8, and 30 -> 8 -> 16 -> 32, cropped to 30.
    """

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: list[int], norm: Norm = "batch") -> None:
        super().__init__()
        c, h, w = shape
        depth = len(channels)
        self.shape = tuple(shape)
        self.start = (channels[0], math.ceil(h / 2**depth), math.ceil(w / 2**depth))
        # A bias before a normalization that subtracts the mean is redundant.
        self.project = nn.Linear(latent_dim, math.prod(self.start), bias=norm == "none")
        self.start_norm = _norm(norm, channels[0], image=True)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(channels, [*channels[1:], c])):
            last = i == depth - 1
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=last or norm == "none"))
            if not last:
                layers += [_norm(norm, b, image=True), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        _finish(self, spectral=False, dcgan=True)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(z.shape[0], *self.start)
        h = self.body(torch.relu(self.start_norm(h)))  # (batch, C, h0 * 2**L, w0 * 2**L)
        top = (h.shape[-2] - self.shape[1]) // 2
        left = (h.shape[-1] - self.shape[2]) // 2
        h = h[..., top : top + self.shape[1], left : left + self.shape[2]]
        return torch.sigmoid(h)


class ConvDiscriminator(nn.Module):
    """x (batch, C, H, W) -> len(channels) convs (kernel 4, stride 2, padding 1; each halves
    the size, rounding down) with LeakyReLU(0.2), normalization after all but the first ->
    flatten -> one logit (batch,)."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], norm: Norm = "batch",
                 spectral_norm: bool = False, output_bias: bool = True) -> None:
        super().__init__()
        c, h, w = shape
        sizes = [(h, w)]
        for _ in channels:
            sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
        if min(sizes[-1]) == 0:
            fit = next(i for i, s in enumerate(sizes) if min(s) <= 1)
            path = " -> ".join(f"{a}x{b}" for a, b in sizes)
            raise ConfigError(
                f"model.discriminator.channels has {len(channels)} entries, too many for {h}x{w} inputs: each "
                f"halves the size ({path}); give at most {fit}."
            )
        layers: list[nn.Module] = []
        for i, width in enumerate(channels):
            layers.append(nn.Conv2d(c, width, 4, stride=2, padding=1, bias=i == 0 or norm != "batch"))
            if i > 0:
                layers.append(_norm(norm, width, image=True))
            layers.append(nn.LeakyReLU(0.2))
            c = width
        layers += [nn.Flatten(), nn.Linear(c * sizes[-1][0] * sizes[-1][1], 1, bias=output_bias)]
        self.net = _finish(nn.Sequential(*layers), spectral_norm, dcgan=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class MLPGenerator(nn.Module):
    """z (batch, latent) -> hidden layers (ReLU) -> prod(shape) -> sigmoid -> (batch, *shape)."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], hidden: list[int], norm: Norm = "none") -> None:
        super().__init__()
        self.shape = tuple(shape)
        layers: list[nn.Module] = []
        for a, b in zip([latent_dim, *hidden], hidden):
            layers += [nn.Linear(a, b, bias=norm != "batch"), _norm(norm, b, image=False), nn.ReLU()]
        layers.append(nn.Linear(hidden[-1] if hidden else latent_dim, math.prod(shape)))
        self.net = _finish(nn.Sequential(*layers), spectral=False, dcgan=False)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z)).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    """x (batch, *shape) -> flatten -> hidden layers (LeakyReLU(0.2)) -> one logit (batch,)."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], norm: Norm = "none",
                 spectral_norm: bool = False, output_bias: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip([math.prod(shape), *hidden], hidden):
            layers += [nn.Linear(a, b, bias=norm != "batch"), _norm(norm, b, image=False), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(hidden[-1] if hidden else math.prod(shape), 1, bias=output_bias))
        self.net = _finish(nn.Sequential(*layers), spectral_norm, dcgan=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


__all__ = ["ConvDiscriminator", "ConvGenerator", "MLPDiscriminator", "MLPGenerator", "dcgan_init"]
