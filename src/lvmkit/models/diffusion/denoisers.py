"""Denoiser networks of the diffusion family: ``net(x_t, t)`` for a noisy batch and its timesteps.

Both take one constructor, ``(shape, out_channels, channels, blocks, attention, dropout, groups)``,
so a diffusion model builds either through :data:`DENOISERS` from its config. ``shape`` is one
example's shape, ``(C, H, W)`` for images or ``(D,)`` for tables. The output keeps the input's
layout with its axis 1 resized, so a model that predicts several quantities (say eps and the
variance interpolation v, Nichol & Dhariwal 2021) splits it with ``out.chunk(m, dim=1)``:

* :class:`UNet`, images: ``(B, C, H, W) -> (B, out_channels, H, W)``; ``out_channels`` is
  ``C`` for an eps, x0 or v prediction and ``2 * C`` when the variance is learned too.
* :class:`MLPDenoiser`, tables: ``(B, D) -> (B, out_channels * D)``; here ``out_channels`` is
  the multiplier ``m`` itself (a table has no channel axis, so ``C = 1``), and chunk ``k`` is
  ``out[:, k * D:(k + 1) * D]``.

The last layer of each starts at zero, so an untrained denoiser predicts 0 (the mean of eps)
and every residual path starts from the identity; this is common practice (guided-diffusion)
and steadies the first steps. The timestep enters through :func:`timestep_embedding`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError
from lvmkit.core.registry import Registry

DENOISERS: Registry = Registry("denoiser")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017 sec. 3.5, as used by Ho et al. 2020).

    With ``half = dim // 2`` and frequencies ``f_i = max_period ** (-i / half)`` (that is,
    ``1 / 10000^(2i / dim)``) for ``i = 0 .. half - 1``, the embedding is
    ``[sin(t f_0), ..., sin(t f_{half-1}), cos(t f_0), ..., cos(t f_{half-1})]``, sines first;
    an odd ``dim`` gets one trailing zero column.

    Args:
        t: timesteps, shape ``(batch,)``, integer or float (fractional steps are allowed).
        dim: embedding width, at least 2.
        max_period: the longest wavelength, ``2 pi max_period``.

    Returns:
        ``(batch, dim)``, float64 when ``t`` is float64 and float32 otherwise.

    Raises:
        ValueError: ``t`` is not one-dimensional or ``dim < 2``.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding needs timesteps of shape (batch,); got shape {tuple(t.shape)}.")
    if dim < 2:
        raise ValueError(f"timestep_embedding needs dim >= 2; got {dim}.")
    dtype = t.dtype if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None, :]  # (batch, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _check_common(name: str, out_channels: int, channels: list[int], blocks: int, dropout: float) -> None:
    if out_channels < 1:
        raise ConfigError(f"The {name} denoiser needs out_channels >= 1; got {out_channels}.")
    if not channels or min(channels) < 1:
        raise ConfigError(f"The {name} denoiser's channels must be a non-empty list of positive widths; got {channels}.")
    if blocks < 1:
        raise ConfigError(f"The {name} denoiser needs blocks >= 1 (residual blocks per level); got {blocks}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"The {name} denoiser's dropout must be in [0, 1); got {dropout}.")


def _group_norm(groups: int, width: int) -> nn.GroupNorm:
    # gcd so any width works: 8 groups for 64 channels, 4 for 12, 1 (layer norm) for 7.
    return nn.GroupNorm(math.gcd(groups, width), width)


def _time_mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden))


class _ResBlock(nn.Module):
    # Ho et al. 2020 appendix B (their resnet_block): norm-act-conv, + dense(act(temb)), norm-act-dropout-conv.
    def __init__(self, c_in: int, c_out: int, temb: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb, c_out)
        self.norm2 = _group_norm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    # Single-head self-attention over the H*W positions, residual (Ho et al. 2020's attn_block).
    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.norm = _group_norm(groups, width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)  # (b, hw, c) each
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class _Stage(nn.Module):
    # One residual block, then self-attention when the level runs it (Ho et al. 2020 appendix B).
    def __init__(self, res: _ResBlock, attention: _Attention | None) -> None:
        super().__init__()
        self.res = res
        self.attention = attention

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return h if self.attention is None else self.attention(h, emb)


class _Down(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # Nearest x2 written as expand + reshape: F.interpolate's CUDA backward is nondeterministic.
        b, c, h, w = x.shape
        x = x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
        return self.conv(x)


class _Pass(nn.Module):
    # A level boundary without a resolution change (the size could not be halved further).
    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return x


def _halvings(h: int, w: int, wanted: int) -> int:
    """How many times (h, w) can be halved, at most ``wanted``, keeping both sides even before
    halving and at least 4 after: 28 -> 14 -> 7 gives 2, 8 -> 4 gives 1, 16x12 -> 8x6 gives 1 (not 4x3)."""
    n = 0
    while n < wanted and h % 2 == 0 and w % 2 == 0 and h // 2 >= 4 and w // 2 >= 4:
        h, w, n = h // 2, w // 2, n + 1
    return n


@DENOISERS.register("unet")
class UNet(nn.Module):
    """The U-Net of Ho et al. 2020 (appendix B), scaled down and sized from the input shape:
    ``(B, C, H, W), t (B,) -> (B, out_channels, H, W)``.

    3x3 conv stem to ``channels[0]``; level ``i`` holds ``blocks`` residual blocks of width
    ``channels[i]`` (GroupNorm with ``gcd(groups, width)`` groups, SiLU, the time embedding added
    after the first conv, dropout before the second, 1x1 skip when the width changes); a stride-2
    3x3 conv joins consecutive levels while the size can be halved (see :attr:`levels`), later
    levels keep the lowest resolution. Single-head self-attention follows every residual block
    at the lowest resolution when ``attention`` is on, and the middle block is res-attn-res
    (res-res without attention). The upsampling path mirrors it with ``blocks + 1`` residual
    blocks per level, each taking a skip connection by concatenation, and nearest x2 + 3x3 conv
    to grow. It ends with GroupNorm, SiLU and a zero-initialised 3x3 conv. The time embedding is
    :func:`timestep_embedding` of width ``channels[0]``, then Linear-SiLU-Linear to
    ``4 * channels[0]``.

    Attributes:
        levels: the number of downsamplings, ``len(channels) - 1`` or fewer: halving stops
            when a side is odd or would fall below 4 (28 -> 14 -> 7: 2; 8 -> 4: 1;
            16x12 -> 8x6: 1; 128 -> ... -> 4: up to 5).
        resolution: ``(h, w)`` at the lowest level, where attention runs.
    """

    def __init__(self, shape: tuple[int, ...], out_channels: int, channels: list[int] = [32, 64], blocks: int = 1,
                 attention: bool = True, dropout: float = 0.0, groups: int = 8) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(
                f"The unet denoiser needs images of shape (C, H, W); got shape {tuple(shape)}. "
                f"Use the mlp denoiser for tables."
            )
        _check_common("unet", out_channels, channels, blocks, dropout)
        if groups < 1:
            raise ConfigError(f"The unet denoiser needs groups >= 1; got {groups}.")
        c, h, w = shape
        self.shape = tuple(shape)
        self.out_channels = out_channels
        self.levels = _halvings(h, w, len(channels) - 1)
        self.resolution = (h >> self.levels, w >> self.levels)
        base = channels[0]
        temb = 4 * base
        self.time = _time_mlp(base, temb)
        self.stem = nn.Conv2d(c, base, 3, padding=1)

        def stage(c_in: int, c_out: int, attend: bool) -> _Stage:
            return _Stage(_ResBlock(c_in, c_out, temb, dropout, groups), _Attention(c_out, groups) if attend else None)

        # Down path; `skips` records the width of every tensor pushed for the up path.
        self.down = nn.ModuleList()
        skips, width = [base], base
        for i, ch in enumerate(channels):
            for _ in range(blocks):  # levels from self.levels on share the lowest resolution
                self.down.append(stage(width, ch, attention and i >= self.levels))
                width = ch
                skips.append(width)
            if i < len(channels) - 1:
                self.down.append(_Down(width) if i < self.levels else _Pass())
                skips.append(width)
        self.middle = nn.ModuleList([stage(width, width, attention), stage(width, width, False)])
        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            for _ in range(blocks + 1):
                self.up.append(stage(width + skips.pop(), ch, attention and i >= self.levels))
                width = ch
            if i > 0:
                self.up.append(_Up(width) if i <= self.levels else _Pass())
        self.out = nn.Sequential(_group_norm(groups, width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape or t.shape != x.shape[:1]:
            raise ValueError(
                f"UNet expects x of shape (batch, {', '.join(map(str, self.shape))}) and t of shape (batch,); "
                f"got x {tuple(x.shape)} and t {tuple(t.shape)}."
            )
        emb = self.time(timestep_embedding(t, self.stem.out_channels).to(x.dtype))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb)
            hs.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, _Stage):
                h = torch.cat([h, hs.pop()], dim=1)  # (B, width + skip width, h, w)
            h = layer(h, emb)
        return self.out(h)


class _MLPBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int, temb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_in)
        self.fc1 = nn.Linear(d_in, d_out)
        self.temb = nn.Linear(temb, d_out)
        self.norm2 = nn.LayerNorm(d_out)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_out, d_out)
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.fc1(F.silu(self.norm1(x))) + self.temb(F.silu(emb))
        h = self.fc2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


@DENOISERS.register("mlp")
class MLPDenoiser(nn.Module):
    """Residual MLP for tables: ``(B, D), t (B,) -> (B, out_channels * D)``.

    A linear map to ``channels[0]``, then ``blocks`` residual blocks per entry of ``channels``
    (the U-Net's block with LayerNorm and Linear layers: norm-SiLU-linear, + the time embedding,
    norm-SiLU-dropout-linear, a linear skip when the width changes), then LayerNorm, SiLU and a
    zero-initialised linear map. The time embedding is :func:`timestep_embedding` of width
    ``channels[0]``, then Linear-SiLU-Linear, added in every block. ``groups`` is accepted so all
    denoisers share one constructor and is unused (LayerNorm has no groups); ``attention`` must
    be off, as a table's columns are not a sequence.
    """

    def __init__(self, shape: tuple[int, ...], out_channels: int, channels: list[int] = [256, 256], blocks: int = 1,
                 attention: bool = False, dropout: float = 0.0, groups: int = 8) -> None:
        super().__init__()
        if len(shape) != 1:
            raise ConfigError(
                f"The mlp denoiser needs tables of shape (D,); got shape {tuple(shape)}. Use the unet denoiser for images."
            )
        _check_common("mlp", out_channels, channels, blocks, dropout)
        if attention:
            raise ConfigError("The mlp denoiser has no attention; got attention=True, set it to false.")
        self.shape = tuple(shape)
        self.out_channels = out_channels
        base = channels[0]
        self.time = _time_mlp(base, base)
        self.stem = nn.Linear(shape[0], base)
        self.blocks = nn.ModuleList()
        width = base
        for ch in channels:
            for _ in range(blocks):
                self.blocks.append(_MLPBlock(width, ch, base, dropout))
                width = ch
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, out_channels * shape[0]))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape or t.shape != x.shape[:1]:
            raise ValueError(
                f"MLPDenoiser expects x of shape (batch, {self.shape[0]}) and t of shape (batch,); "
                f"got x {tuple(x.shape)} and t {tuple(t.shape)}."
            )
        emb = self.time(timestep_embedding(t, self.stem.out_features).to(x.dtype))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
