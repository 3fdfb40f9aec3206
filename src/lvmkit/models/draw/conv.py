"""DRAW's convolutional read and write: a convolutional feature extractor in place of the Gaussian
glimpse (Solli 2019, sec. 2.9.4 and Table 4.2, "one of attention or convolutional"). The thesis
names the pair without fixing its layers, so the layout here is lvmkit's:

- read: x and the error image x^ stacked as 2C channels, then one 3x3 stride-2 convolution per
  entry of ``model.conv_channels`` (ReLU after each). The decoder state h_{t-1}^dec, projected by a
  linear layer to the first layer's channels, is added to that layer's features before the ReLU,
  so what is extracted can depend on what has been drawn (the part the window placement plays in
  attention, eq. 21). r_t is the last feature map flattened; the encoder LSTM receives h_dec as
  well, concatenated with r_t (eq. 5), as for every read.
- write: a linear layer from h_dec to the last map (channels[-1], h_L, w_L), then 3x3 stride-2
  transposed convolutions through the channels in reverse to (C, H, W), with no activation on
  the canvas increment (as eq. 18's linear write).

The strided layers are the convolutional autoencoder's (3x3, padding 1, each halving a side,
rounding up); every layer must see at least 2 pixels a side, so L layers need images of at
least 2^(L-1) + 1 pixels on their shorter side.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError
from lvmkit.models.draw.attention import READERS, WRITERS, require_image

if TYPE_CHECKING:
    from lvmkit.models.draw.draw import DrawConfig


def map_sizes(shape: tuple[int, ...], channels: list[int], op: str) -> list[tuple[int, int]]:
    """(H, W) before the first and after every stride-2 layer, len(channels) + 1 entries; a
    ConfigError names the fix when the data are not images or are too small for the layers."""
    _, h, w = require_image(shape, op, "conv")
    need = 2 ** (len(channels) - 1) + 1
    if min(h, w) < need:
        raise ConfigError(f"model.conv_channels = {list(channels)} halves the image {len(channels)} times, which needs "
                          f"images of at least {need}x{need} pixels; got {h}x{w}. Use fewer entries in model.conv_channels.")
    sizes = [(h, w)]
    for _ in channels:
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))  # Conv2d(3, stride 2, padding 1)
    return sizes


@READERS.register("conv")
class ConvRead(nn.Module):
    """Strided convolutions over [x, x^] (2C channels) with h_dec added to the first layer's
    features; r_t is the last map flattened, channels[-1] * h_L * w_L numbers."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, channels: list[int]) -> None:
        super().__init__()
        sizes = map_sizes(input_shape, channels, "read")
        ins = [2 * input_shape[0], *channels[:-1]]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(ins, channels))
        self.state = nn.Linear(hidden, channels[0], bias=False)  # the first conv holds the bias
        self.act = nn.ReLU()
        self.out_features = channels[-1] * sizes[-1][0] * sizes[-1][1]

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "ConvRead":
        return cls(input_shape, cfg.hidden, cfg.conv_channels)

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        f = self.convs[0](torch.cat([x, x_hat], 1)) + self.state(h_dec)[:, :, None, None]  # (batch, c_1, h_1, w_1)
        f = self.act(f)
        for conv in self.convs[1:]:
            f = self.act(conv(f))
        return f.flatten(1)


@WRITERS.register("conv")
class ConvWrite(nn.Module):
    """A linear layer from h_dec to a (channels[-1], h_L, w_L) map, then strided transposed
    convolutions through reversed(channels) to the canvas increment (C, H, W)."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, channels: list[int]) -> None:
        super().__init__()
        sizes = map_sizes(input_shape, channels, "write")
        self.map_shape = (channels[-1], *sizes[-1])
        self.linear = nn.Linear(hidden, channels[-1] * sizes[-1][0] * sizes[-1][1])
        outs = [*reversed(channels[:-1]), input_shape[0]]
        # ConvTranspose2d(3, stride 2, padding 1) gives 2n - 1 + output_padding: 1 restores an even side
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=(1 - h % 2, 1 - w % 2))
            for a, b, (h, w) in zip(reversed(channels), outs, reversed(sizes[:-1])))
        self.act = nn.ReLU()

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "ConvWrite":
        return cls(input_shape, cfg.hidden, cfg.conv_channels)

    def forward(self, h_dec: Tensor) -> Tensor:
        f = self.act(self.linear(h_dec)).view(-1, *self.map_shape)  # (batch, channels[-1], h_L, w_L)
        for i, conv in enumerate(self.convs):
            f = conv(f)
            if i < len(self.convs) - 1:
                f = self.act(f)
        return f


__all__ = ["ConvRead", "ConvWrite", "map_sizes"]
