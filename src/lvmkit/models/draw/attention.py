"""DRAW's selective attention (Gregor et al. 2015, section 3.2): an N x N grid of Gaussian
filters placed by a linear layer on the decoder state, read as a glimpse and written as a patch.
Read/write choices are objects (:data:`READERS`, :data:`WRITERS`; the convolutional pair is in
:mod:`lvmkit.models.draw.conv`) built as ``cls.from_config(cfg, input_shape)``, which reads the
keys the operator uses and checks them against the data's shape; the model never dispatches on
their names. A reader maps (x, x^, h_dec) to (batch, out_features); a writer maps h_dec to
(batch, *input_shape). An operator with a ``window`` (a :class:`Window`) places an attention grid,
which :meth:`lvmkit.models.draw.draw.Draw.trace` reports for figures."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry

if TYPE_CHECKING:
    from lvmkit.models.draw.draw import DrawConfig

READERS: Registry = Registry("DRAW read")
WRITERS: Registry = Registry("DRAW write")


def require_image(shape: tuple[int, ...], op: str, name: str) -> tuple[int, int, int]:
    """(C, H, W) of image data, or a ConfigError for ``model.<op> = '<name>'`` on other shapes."""
    if len(shape) != 3:
        raise ConfigError(f"model.{op} = '{name}' needs images (C, H, W); got examples of shape {tuple(shape)}. "
                          f"Use model.{op} = 'none'.")
    return tuple(shape)


def _attention_size(cfg: "DrawConfig", shape: tuple[int, ...], op: str) -> int:
    _, h, w = require_image(shape, op, "attention")
    size = getattr(cfg, f"{op}_size")
    if size > min(h, w):
        raise ConfigError(f"model.{op}_size must be at most the image size {h}x{w}; got {size}. "
                          f"Choose a smaller {op}_size.")
    return size

def filterbank(g: Tensor, delta: Tensor, sigma2: Tensor, n: int, size: int) -> Tensor:
    """Normalised Gaussian filters along one image axis, eq. 19-20, 25-26: (batch, n, size).

    ``g``, ``delta``, ``sigma2`` (batch,) are the grid centre, stride and filter variance in
    1-based pixel coordinates (so the centre of an axis of A pixels is (A + 1) / 2, eq. 22-23).
    """
    i = torch.arange(n, dtype=g.dtype, device=g.device)
    mu = g[:, None] + (i - (n - 1) / 2) * delta[:, None]  # eq. 19-20, i - N/2 - 0.5 for i = 1..N
    a = torch.arange(1, size + 1, dtype=g.dtype, device=g.device)
    # exp(-(a - mu)^2 / 2 sigma^2) / Z as a softmax over pixels: each row sums to 1 even where
    # every exp underflows (a vanishing variance with a filter centre between or off the pixels).
    return torch.softmax(-((a[None, None, :] - mu[:, :, None]) ** 2) / (2 * sigma2[:, None, None]), -1)


class Window(nn.Module):
    """The attention parameters from the decoder state, eq. 21-24: a linear layer gives
    (g~x, g~y, log sigma^2, log delta~, log gamma); ``delta`` (pixels), when given, fixes the
    stride instead of learning it (as the thesis does)."""

    def __init__(self, hidden: int, n: int, height: int, width: int, delta: float | None = None) -> None:
        super().__init__()
        self.n, self.height, self.width, self.fixed_delta = n, height, width, delta
        self.linear = nn.Linear(hidden, 4 if delta is not None else 5)

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(gx, gy, delta, sigma^2, gamma), each (batch,), for decoder states h (batch, hidden)."""
        out = self.linear(h)
        gx_, gy_, log_sigma2, log_gamma = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
        gx = (self.width + 1) / 2 * (gx_ + 1)  # eq. 22
        gy = (self.height + 1) / 2 * (gy_ + 1)  # eq. 23
        if self.fixed_delta is not None:
            delta = torch.full_like(gx, self.fixed_delta)
        else:
            delta = (max(self.height, self.width) - 1) / max(self.n - 1, 1) * torch.exp(out[:, 4])  # eq. 24
        return gx, gy, delta, torch.exp(log_sigma2), torch.exp(log_gamma)

    def placement(self, h: Tensor) -> Tensor:
        """(batch, 4): centre g_x, g_y (1-based pixels), stride delta and N of the grid, the
        rectangle a figure draws; N repeats so that each row describes its window alone."""
        gx, gy, delta, _, _ = self.params(h)
        return torch.stack([gx, gy, delta, torch.full_like(gx, self.n)], 1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Filterbanks F_y (batch, N, H), F_x (batch, N, W) and intensity gamma (batch,)."""
        gx, gy, delta, sigma2, gamma = self.params(h)
        return (filterbank(gy, delta, sigma2, self.n, self.height),
                filterbank(gx, delta, sigma2, self.n, self.width), gamma)


def read_glimpse(img: Tensor, fy: Tensor, fx: Tensor, gamma: Tensor) -> Tensor:
    """gamma F_y x F_x^T per channel, eq. 27: (batch, C, H, W) -> (batch, C, N, N)."""
    return gamma[:, None, None, None] * torch.einsum("bnh,bchw,bmw->bcnm", fy, img, fx)


def write_patch(w: Tensor, fy: Tensor, fx: Tensor, gamma: Tensor) -> Tensor:
    """(1 / gamma) F_y^T w F_x per channel, eq. 29: (batch, C, N, N) -> (batch, C, H, W)."""
    return torch.einsum("bnh,bcnm,bmw->bchw", fy, w, fx) / gamma[:, None, None, None]


@READERS.register("none")
class FullRead(nn.Module):
    """Read without attention, eq. 17: the image and the error image, flattened."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, size: int, delta: float | None) -> None:
        super().__init__()
        self.out_features = 2 * math.prod(input_shape)

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "FullRead":
        return cls(input_shape, cfg.hidden, cfg.read_size, cfg.glimpse_delta)

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        return torch.cat([x.flatten(1), x_hat.flatten(1)], 1)


@READERS.register("attention")
class AttentionRead(nn.Module):
    """Read an N x N glimpse of the image and of the error image through one window, eq. 27."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, size: int, delta: float | None) -> None:
        super().__init__()
        c, h, w = input_shape
        self.window = Window(hidden, size, h, w, delta)
        self.out_features = 2 * c * size * size

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "AttentionRead":
        return cls(input_shape, cfg.hidden, _attention_size(cfg, input_shape, "read"), cfg.glimpse_delta)

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        fy, fx, gamma = self.window(h_dec)
        return torch.cat([read_glimpse(x, fy, fx, gamma).flatten(1), read_glimpse(x_hat, fy, fx, gamma).flatten(1)], 1)


@WRITERS.register("none")
class FullWrite(nn.Module):
    """Write the whole canvas increment from a linear layer, eq. 18."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, size: int, delta: float | None) -> None:
        super().__init__()
        self.shape = tuple(input_shape)
        self.linear = nn.Linear(hidden, math.prod(input_shape))

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "FullWrite":
        return cls(input_shape, cfg.hidden, cfg.write_size, cfg.glimpse_delta)

    def forward(self, h_dec: Tensor) -> Tensor:
        return self.linear(h_dec).view(-1, *self.shape)


@WRITERS.register("attention")
class AttentionWrite(nn.Module):
    """Write an N x N patch (a linear layer on h_dec, eq. 28) through its own window, eq. 29."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, size: int, delta: float | None) -> None:
        super().__init__()
        c, h, w = input_shape
        self.patch_shape = (c, size, size)
        self.patch = nn.Linear(hidden, c * size * size)
        self.window = Window(hidden, size, h, w, delta)

    @classmethod
    def from_config(cls, cfg: "DrawConfig", input_shape: tuple[int, ...]) -> "AttentionWrite":
        return cls(input_shape, cfg.hidden, _attention_size(cfg, input_shape, "write"), cfg.glimpse_delta)

    def forward(self, h_dec: Tensor) -> Tensor:
        fy, fx, gamma = self.window(h_dec)
        return write_patch(self.patch(h_dec).view(-1, *self.patch_shape), fy, fx, gamma)


__all__ = ["READERS", "WRITERS", "AttentionRead", "AttentionWrite", "FullRead", "FullWrite", "Window", "filterbank",
           "read_glimpse", "require_image", "write_patch"]
