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

# The one table of activation names; configs take their allowed names from it and
# :func:`activation` builds the modules.
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def activation(name: str, leaky_slope: float = 0.01) -> nn.Module:
    """The activation module ``name`` names; ``leaky_slope`` is leaky_relu's negative slope."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"Unknown activation {name!r}; choose one of: {', '.join(_ACTIVATIONS)}.")
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    return _ACTIVATIONS[name]()


def _dense_stack(sizes: list[int], activation_name: str, last_activation: bool,
                 leaky_slope: float = 0.01) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation(activation_name, leaky_slope))
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
    slope = getattr(cfg, "leaky_slope", 0.01)
    encoder = nn.Sequential(nn.Flatten(), *_dense_stack([d, *cfg.hidden, out_features], cfg.activation, False, slope))
    decoder = nn.Sequential(
        *_dense_stack([cfg.latent_dim, *reversed(cfg.hidden), d], cfg.activation, False, slope), Unflatten(shape)
    )
    return encoder, decoder


def conv_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output width of a convolution: floor((W - K + 2P) / S) + 1 (the thesis's eq. 2.52;
    max pooling of size m is the case K = S = m, P = 0)."""
    return (n - kernel + 2 * padding) // stride + 1


class ConvDecoder(nn.Module):
    """Dense layers to a (channels[-1], h, w) map, then transposed convolutions, each preceded by
    nearest-neighbour upsampling where the encoder pooled, followed by batch norm where the
    encoder normalised, and by the activation (all but the last)."""

    def __init__(self, dense: nn.Sequential, convs: nn.ModuleList, sizes: list[tuple[int, int]],
                 act: nn.Module, norms: nn.ModuleList | None = None, unpools: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.dense = dense
        self.convs = convs
        self.sizes = sizes  # spatial size after each transposed convolution
        self.act = act
        # Empty lists without batch norm or pooling: today's layout and state_dict keys.
        self.norms = norms if norms is not None else nn.ModuleList()
        self.unpools = unpools if unpools is not None else nn.ModuleList()

    def forward(self, z: Tensor) -> Tensor:
        h = self.dense(z)
        for i, conv in enumerate(self.convs):
            if self.unpools:
                h = self.unpools[i](h)
            h = conv(h, output_size=self.sizes[i])
            if i < len(self.convs) - 1:
                if self.norms:
                    h = self.norms[i](h)
                h = self.act(h)
        return h


def _conv_layers(cfg) -> list[tuple[int, int, int, int]]:
    """(filters, kernel, stride, padding) per convolution; unset lists give today's 3x3,
    stride 2, padding 1 layers (configs without the keys as well)."""
    n = len(cfg.channels)
    kernels = getattr(cfg, "kernels", None) or [3] * n
    strides = getattr(cfg, "strides", None) or [2] * n
    padding = getattr(cfg, "padding", None)
    padding = padding if padding is not None else [k // 2 for k in kernels]
    return list(zip(cfg.channels, kernels, strides, padding))


def _too_small(shape: tuple[int, ...], what: str, before: tuple[int, int], after: tuple[int, int]) -> ConfigError:
    return ConfigError(
        f"model.network = 'conv' cannot fit images of shape {tuple(shape)}: {what} maps {before[0]}x{before[1]} "
        f"to {max(after[0], 0)}x{max(after[1], 0)}; use fewer layers (model.channels), smaller model.kernels, "
        "model.strides or model.pooling, or more model.padding."
    )


@NETWORKS.register("conv")
def conv(cfg, shape: tuple[int, ...], out_features: int) -> tuple[nn.Module, nn.Module]:
    """Convolutions (one per entry of ``channels``; ``kernels``, ``strides``, ``padding``,
    default 3, 2, kernel // 2), each followed by optional batch norm, the activation and optional
    max pooling, then dense layers ``hidden``; the decoder mirrors it with transposed
    convolutions back to exactly ``shape`` (the layout of the TensorFlow CVAE tutorial, and of the
    thesis's convolutional autoencoder, Solli 2019, Table 4.1)."""
    if len(shape) != 3:
        raise ConfigError(
            f"model.network = 'conv' needs image data of shape (channels, height, width), got examples of shape {tuple(shape)}; use model.network = 'mlp' for tabular data."
        )
    layers = _conv_layers(cfg)
    batch_norm = getattr(cfg, "batch_norm", False)
    pool = getattr(cfg, "pooling", 0)
    slope = getattr(cfg, "leaky_slope", 0.01)
    c, h, w = shape
    sizes = [(h, w)]  # spatial size entering each convolution, then the final map
    conv_sizes = []  # spatial size after each convolution (before pooling)
    enc_layers: list[nn.Module] = []
    for i, (a, (b, k, s, p)) in enumerate(zip([c, *cfg.channels[:-1]], layers)):
        out = tuple(conv_output_size(n, k, s, p) for n in sizes[-1])
        if min(out) < 1:
            raise _too_small(shape, f"convolution {i + 1} (kernel {k}, stride {s}, padding {p})", sizes[-1], out)
        conv_sizes.append(out)
        enc_layers.append(nn.Conv2d(a, b, k, stride=s, padding=p, bias=not batch_norm))
        if batch_norm:
            enc_layers.append(nn.BatchNorm2d(b))
        enc_layers.append(activation(cfg.activation, slope))
        if pool:
            pooled = tuple(conv_output_size(n, pool, pool, 0) for n in out)
            if min(pooled) < 1:
                raise _too_small(shape, f"the max pooling (size {pool}) after convolution {i + 1}", out, pooled)
            enc_layers.append(nn.MaxPool2d(pool))
            out = pooled
        sizes.append(out)
    hb, wb = sizes[-1]
    flat = cfg.channels[-1] * hb * wb
    encoder = nn.Sequential(
        *enc_layers, nn.Flatten(), *_dense_stack([flat, *cfg.hidden, out_features], cfg.activation, False, slope)
    )
    dense = nn.Sequential(
        *_dense_stack([cfg.latent_dim, *reversed(cfg.hidden), flat], cfg.activation, True, slope),
        Unflatten((cfg.channels[-1], hb, wb)),
    )
    rev = list(reversed(layers))
    # Transposed convolution i undoes encoder convolution n-1-i (same kernel, stride, padding);
    # output_size picks, of the S sizes it could produce, the one the encoder started from.
    convs = nn.ModuleList(
        nn.ConvTranspose2d(a, b, k, stride=s, padding=p, bias=not (batch_norm and i < len(rev) - 1))
        for i, ((a, k, s, p), b) in enumerate(zip(rev, [*cfg.channels[-2::-1], c]))
    )
    norms = nn.ModuleList(nn.BatchNorm2d(b) for b in cfg.channels[-2::-1]) if batch_norm else None
    unpools = nn.ModuleList(nn.Upsample(size=size, mode="nearest") for size in reversed(conv_sizes)) if pool else None
    return encoder, ConvDecoder(dense, convs, list(reversed(sizes[:-1])), activation(cfg.activation, slope),
                                norms, unpools)
