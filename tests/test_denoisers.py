"""Denoiser networks of the diffusion family: the timestep embedding against its closed form, the
U-Net's sizing rule, output layouts, the zero start, and that gradients reach every parameter."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lvmkit.core.errors import ConfigError
from lvmkit.models.diffusion.denoisers import DENOISERS, MLPDenoiser, UNet, timestep_embedding


def _perturb_last(net: nn.Module) -> None:
    """Replace the zero-initialised last layer with small random weights."""
    last = net.out[-1]
    nn.init.normal_(last.weight, 0.0, 0.1)
    nn.init.normal_(last.bias, 0.0, 0.1)


@pytest.mark.parametrize("dim", [6, 5])
def test_timestep_embedding_matches_closed_form(dim):
    t = torch.tensor([0, 1, 7, 999])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    for b, step in enumerate(t.tolist()):
        for i in range(half):  # sin(t / 10000^(2i/dim)) first, then the cosines
            angle = step / 10000 ** (i / half)
            assert emb[b, i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert emb[b, half + i].item() == pytest.approx(math.cos(angle), abs=1e-5)
    if dim % 2:
        assert torch.all(emb[:, -1] == 0)
    # float64 timesteps keep float64 (for gradcheck-style tests of the models using it)
    assert timestep_embedding(t.double() + 0.5, dim).dtype == torch.float64


def test_timestep_embedding_separates_timesteps():
    emb = timestep_embedding(torch.arange(1000), 32)
    dist = torch.cdist(emb.double(), emb.double())
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 0.1


@pytest.mark.parametrize(
    "shape, channels, levels, lowest",
    [
        ((1, 8, 8), [4, 8, 8], 1, (4, 4)),  # 8 -> 4, never below 4
        ((1, 28, 28), [4, 8, 8, 8], 2, (7, 7)),  # 28 -> 14 -> 7, odd: stop
        ((1, 128, 128), [4] * 7, 5, (4, 4)),  # 128 -> 64 -> 32 -> 16 -> 8 -> 4
        ((1, 128, 128), [4, 8], 1, (64, 64)),  # len(channels) - 1 caps it
        ((3, 16, 12), [4, 8, 8], 1, (8, 6)),  # 16x12 -> 8x6, not 4x3: every side stays >= 4
        ((1, 7, 9), [4, 8], 0, (7, 9)),
    ],
)
def test_unet_downsamplings_follow_the_size_rule(shape, channels, levels, lowest):
    net = UNet(shape, shape[0], channels, attention=False)
    assert net.levels == levels and net.resolution == lowest
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in net.modules()) == levels


@pytest.mark.parametrize(
    "shape, channels",
    [((1, 8, 8), [8, 16]), ((1, 28, 28), [4, 8]), ((3, 16, 12), [8, 16]), ((2, 128, 128), [4, 8, 8, 8])],
)
def test_unet_output_shape_and_zero_start(shape, channels):
    c = shape[0]
    net = UNet(shape, 2 * c, channels)
    x, t = torch.randn(2, *shape), torch.tensor([0, 999])
    out = net(x, t)
    assert out.shape == (2, 2 * c, *shape[1:])
    assert torch.all(out == 0)  # zero-initialised last conv: the first prediction is 0


def test_unet_depends_on_t_and_not_on_the_rest_of_the_batch():
    net = UNet((1, 8, 8), 2, [4, 8], groups=4).eval()
    _perturb_last(net)
    x = torch.randn(3, 1, 8, 8)
    a, b = net(x, torch.tensor([1, 1, 1])), net(x, torch.tensor([500, 500, 500]))
    assert (a - b).abs().max() > 1e-4
    # GroupNorm and attention act per example: no statistics leak across the batch
    torch.testing.assert_close(net(x[1:2], torch.tensor([1])), a[1:2])


@pytest.mark.parametrize("shape, channels", [((3, 16, 12), [4, 8]), ((1, 8, 8), [4, 8, 8])])
def test_unet_gradients_reach_every_parameter(shape, channels):
    # (1, 8, 8) with three levels also covers a level boundary that cannot halve the size.
    net = UNet(shape, 2 * shape[0], channels, blocks=1, attention=True, dropout=0.1, groups=4)
    x, t, target = torch.randn(2, *shape), torch.tensor([3, 700]), torch.randn(2, 2 * shape[0], *shape[1:])
    (net(x, t) - target).square().sum().backward()
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"out.2.weight", "out.2.bias"}  # a zero last conv blocks the rest
    net.zero_grad(set_to_none=True)
    _perturb_last(net)
    (net(x, t) - target).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("m", [1, 2])
def test_mlp_shapes_zero_start_and_gradients(m):
    d = 5
    net = MLPDenoiser((d,), m, channels=[16, 8], blocks=1)
    x, t = torch.randn(4, d), torch.tensor([0, 1, 10, 999])
    out = net(x, t)
    assert out.shape == (4, m * d) and torch.all(out == 0)
    assert [c.shape for c in out.chunk(m, dim=1)] == [(4, d)] * m
    _perturb_last(net)
    out = net(x, t)
    assert (out - net(x, t.flip(0))).abs().max() > 1e-4  # depends on t
    out.square().sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


def test_registry_resolves_names_and_lists_them_when_unknown():
    assert DENOISERS.get("unet") is UNet and DENOISERS.get("mlp") is MLPDenoiser
    with pytest.raises(ConfigError, match=r"Unknown denoiser 'transformer'; choose one of: .*mlp, unet"):
        DENOISERS.get("transformer")


def test_bad_shapes_and_options_are_one_sentence_errors():
    with pytest.raises(ConfigError, match=r"unet denoiser needs images .* got shape \(10,\)\. Use the mlp"):
        UNet((10,), 1)
    with pytest.raises(ConfigError, match=r"mlp denoiser needs tables .* got shape \(1, 8, 8\)\. Use the unet"):
        MLPDenoiser((1, 8, 8), 1)
    with pytest.raises(ConfigError, match="mlp denoiser has no attention"):
        MLPDenoiser((4,), 1, attention=True)
    with pytest.raises(ConfigError, match=r"channels must be a non-empty list .* got \[\]"):
        UNet((1, 8, 8), 1, channels=[])
    net = UNet((1, 8, 8), 1, [4], attention=False)
    with pytest.raises(ValueError, match=r"x of shape \(batch, 1, 8, 8\) .* got x \(2, 1, 8, 9\) and t \(2,\)"):
        net(torch.zeros(2, 1, 8, 9), torch.zeros(2, dtype=torch.long))
