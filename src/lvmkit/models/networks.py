"""Encoder and decoder networks, sized from the data's shape.

A network factory takes the model config, the shape of one example and the encoder's output
width, and returns ``(encoder, decoder)``: the encoder maps (batch, *shape) to (batch, out),
the decoder maps (batch, latent_dim) to likelihood parameters of shape (batch, *shape).
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor, nn

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry

NETWORKS: Registry[Callable[..., tuple[nn.Module, nn.Module]]] = Registry("network")

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def _dense_stack(sizes: list[int], activation: str, last_activation: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return layers


class Unflatten(nn.Module):
    """(batch, prod(shape)) -> (batch, *shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)


@NETWORKS.register("mlp")
def mlp(cfg, shape: tuple[int, ...], out_features: int) -> tuple[nn.Module, nn.Module]:
    """Fully connected: D -> hidden... -> out; latent -> reversed(hidden)... -> D."""
    d = math.prod(shape)
    encoder = nn.Sequential(nn.Flatten(), *_dense_stack([d, *cfg.hidden, out_features], cfg.activation, False))
    decoder = nn.Sequential(
        *_dense_stack([cfg.latent_dim, *reversed(cfg.hidden), d], cfg.activation, False), Unflatten(shape)
    )
    return encoder, decoder


def _halve(n: int) -> int:
    # Output size of Conv2d(kernel=3, stride=2, padding=1).
    return (n - 1) // 2 + 1


class ConvDecoder(nn.Module):
    """Dense layers to a (channels[-1], h, w) map, then stride-2 transposed convolutions."""

    def __init__(self, dense: nn.Sequential, convs: nn.ModuleList, sizes: list[tuple[int, int]], activation: str) -> None:
        super().__init__()
        self.dense = dense
        self.convs = convs
        self.sizes = sizes  # spatial size after each transposed convolution
        self.act = _ACTIVATIONS[activation]()

    def forward(self, z: Tensor) -> Tensor:
        h = self.dense(z)
        for i, conv in enumerate(self.convs):
            h = conv(h, output_size=self.sizes[i])
            if i < len(self.convs) - 1:
                h = self.act(h)
        return h


@NETWORKS.register("conv")
def conv(cfg, shape: tuple[int, ...], out_features: int) -> tuple[nn.Module, nn.Module]:
    """Strided 3x3 convolutions (one per entry of ``channels``) then dense layers, mirrored with
    transposed convolutions in the decoder (the layout of the TensorFlow CVAE tutorial)."""
    if len(shape) != 3:
        raise ConfigError(
            f"model.network = 'conv' needs image data of shape (channels, height, width), got examples of shape {tuple(shape)}; use model.network = 'mlp' for tabular data."
        )
    c, h, w = shape
    sizes = [(h, w)]
    for _ in cfg.channels:
        sizes.append((_halve(sizes[-1][0]), _halve(sizes[-1][1])))
    act = _ACTIVATIONS[cfg.activation]
    enc_layers: list[nn.Module] = []
    for a, b in zip([c, *cfg.channels[:-1]], cfg.channels):
        enc_layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), act()]
    hb, wb = sizes[-1]
    flat = cfg.channels[-1] * hb * wb
    encoder = nn.Sequential(
        *enc_layers, nn.Flatten(), *_dense_stack([flat, *cfg.hidden, out_features], cfg.activation, False)
    )
    dense = nn.Sequential(
        *_dense_stack([cfg.latent_dim, *reversed(cfg.hidden), flat], cfg.activation, True),
        Unflatten((cfg.channels[-1], hb, wb)),
    )
    rev = list(reversed(cfg.channels))
    convs = nn.ModuleList(
        nn.ConvTranspose2d(a, b, 3, stride=2, padding=1) for a, b in zip(rev, [*rev[1:], c])
    )
    return encoder, ConvDecoder(dense, convs, list(reversed(sizes[:-1])), cfg.activation)
