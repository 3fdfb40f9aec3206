"""The convolutional network's architecture keys: layer sizes follow floor((W - K + 2P) / S) + 1
(the thesis's eq. 2.52), the decoder returns exactly the input shape, the defaults rebuild the
network of earlier releases weight for weight, and bad keys get one-sentence errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lvmkit
from lvmkit import ConfigError
from lvmkit.models import build_model


def _model_cfg(**model):
    doc = {"kind": "ae", "network": "conv", "latent_dim": 2, "hidden": [8], **model}
    return lvmkit.make_config({"model": doc}).model


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n - k + 2 * p) // s + 1


def _sizes_seen(model, x):
    """Spatial sizes after every convolution and pooling of the encoder, and after every
    transposed convolution of the decoder, from forward hooks."""
    seen = {"enc": [], "dec": []}
    hooks = [m.register_forward_hook(lambda m, i, o, key=key: seen[key].append((type(m), tuple(o.shape[-2:]))))
             for key, part, types in (("enc", model.encoder, (nn.Conv2d, nn.MaxPool2d)),
                                      ("dec", model.decoder, (nn.ConvTranspose2d,)))
             for m in part.modules() if isinstance(m, types)]
    with torch.no_grad():
        out = model.decode(model.embed(x))
    for h in hooks:
        h.remove()
    return seen, out


CASES = [  # (shape, channels, kernels, strides, padding, pooling)
    ((1, 128, 128), [16, 16, 8], [11, 5, 3], [2, 2, 2], None, 0),  # the thesis's Table 4.3
    ((1, 28, 28), [4, 8], [5, 3], [2, 2], [0, 1], 0),
    ((1, 28, 28), [4, 8], [3, 3], [1, 1], None, 2),
    ((1, 8, 8), [4, 8], None, None, None, 0),
    ((2, 9, 13), [3, 5], [4, 3], [3, 1], [0, 2], 0),  # odd, non-square, even kernel, wide padding
    ((3, 20, 17), [4, 4], [3, 2], [1, 1], [1, 0], 3),
]


@pytest.mark.parametrize("shape,channels,kernels,strides,padding,pooling", CASES)
def test_layer_sizes_follow_the_formula_and_the_decoder_returns_the_input_shape(
        shape, channels, kernels, strides, padding, pooling):
    cfg = _model_cfg(channels=channels, kernels=kernels, strides=strides, padding=padding, pooling=pooling)
    model = build_model(cfg, shape).eval()
    x = torch.rand(2, *shape)
    seen, out = _sizes_seen(model, x)

    ks = kernels or [3] * len(channels)
    ss = strides or [2] * len(channels)
    ps = padding if padding is not None else [k // 2 for k in ks]
    expected, inputs = [], []
    size = shape[1:]
    for k, s, p in zip(ks, ss, ps):
        inputs.append(size)
        size = tuple(_out(n, k, s, p) for n in size)
        expected.append((nn.Conv2d, size))
        if pooling:
            size = tuple(_out(n, pooling, pooling, 0) for n in size)  # max pooling: K = S = m, P = 0
            expected.append((nn.MaxPool2d, size))
    assert seen["enc"] == expected
    # Each transposed convolution restores the size its encoder convolution started from.
    assert seen["dec"] == [(nn.ConvTranspose2d, s) for s in reversed(inputs)]
    assert out.shape == x.shape


def _old_conv(cfg, shape, out_features):
    """The conv factory before the architecture keys (3x3, stride 2, padding 1 per channel),
    built here from torch modules directly."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}[cfg.activation]

    def dense(sizes, last):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if last or i < len(sizes) - 2:
                layers.append(act())
        return layers

    c, h, w = shape
    for _ in cfg.channels:
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    enc = []
    for a, b in zip([c, *cfg.channels[:-1]], cfg.channels):
        enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), act()]
    flat = cfg.channels[-1] * h * w
    encoder = nn.Sequential(*enc, nn.Flatten(), *dense([flat, *cfg.hidden, out_features], False))
    decoder = nn.Module()
    decoder.dense = nn.Sequential(*dense([cfg.latent_dim, *reversed(cfg.hidden), flat], True))
    rev = list(reversed(cfg.channels))
    decoder.convs = nn.ModuleList(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1) for a, b in zip(rev, [*rev[1:], c]))
    return encoder, decoder


@pytest.mark.parametrize("model,shape", [
    ({"kind": "vae"}, (1, 28, 28)),  # the family's default channels and hidden
    ({"kind": "ae", "channels": [4, 8, 8], "hidden": [16, 8], "activation": "tanh"}, (3, 9, 7)),
])
def test_default_keys_rebuild_the_earlier_network_weight_for_weight(model, shape):
    cfg = lvmkit.make_config({"model": {"network": "conv", **model}}).model
    torch.manual_seed(0)
    new = build_model(cfg, shape)
    torch.manual_seed(0)
    enc, dec = _old_conv(cfg, shape, 2 * cfg.latent_dim if cfg.stochastic else cfg.latent_dim)
    old = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
           **{f"decoder.{k}": v for k, v in dec.state_dict().items()}}
    got = {k: v for k, v in new.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    assert list(got) == list(old)  # same names, so earlier checkpoints load
    for k, v in old.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)
    assert [type(m) for m in new.encoder] == [type(m) for m in enc]
    assert [(type(m), m.kernel_size, m.stride, m.padding) for m in new.decoder.convs] == [
        (type(m), m.kernel_size, m.stride, m.padding) for m in dec.convs]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d, nn.Upsample)) for m in new.modules())


@pytest.mark.parametrize("key,value", [("kernels", [5, 3]), ("strides", [2]), ("padding", [1, 1, 1, 1])])
def test_a_list_of_the_wrong_length_names_the_key_and_the_fix(key, value):
    with pytest.raises(ConfigError, match=rf"model\.{key} has {len(value)} entries but model\.channels has 3 "
                                          rf".*give model\.{key} 3 entries or leave it unset"):
        _model_cfg(channels=[4, 8, 8], **{key: value})


def test_an_image_too_small_for_the_layers_names_the_layer_and_sizes():
    with pytest.raises(ConfigError, match=r"cannot fit images of shape \(1, 8, 8\): convolution 2 \(kernel 5, "
                                          r"stride 2, padding 0\) maps 4x4 to 0x0; use fewer layers"):
        build_model(_model_cfg(channels=[4, 4], kernels=[3, 5], padding=[1, 0]), (1, 8, 8))
    with pytest.raises(ConfigError, match=r"the max pooling \(size 2\) after convolution 2 maps 1x1 to 0x0"):
        build_model(_model_cfg(channels=[4, 4], pooling=2), (1, 8, 8))  # 8 -> 4 -> 2 -> 1 -> 0


def test_unknown_activation_and_conv_keys_on_an_mlp_are_errors():
    with pytest.raises(ConfigError, match=r"model\.activation.*'leaky_relu' \(got 'swish'\)"):
        _model_cfg(activation="swish")
    with pytest.raises(ConfigError, match=r"model\.batch_norm applies to convolutional networks only.*"
                                          r"set model\.network = 'conv'"):
        _model_cfg(network="mlp", batch_norm=True)
    from lvmkit.models.parts.networks import activation

    with pytest.raises(ConfigError, match=r"Unknown activation 'swish'; choose one of: relu, tanh"):
        activation("swish")


def test_batch_norm_follows_every_convolution_but_the_decoders_last():
    cfg = _model_cfg(channels=[4, 8, 8], batch_norm=True)
    model = build_model(cfg, (1, 16, 16))
    enc = list(model.encoder)
    convs = [i for i, m in enumerate(enc) if isinstance(m, nn.Conv2d)]
    assert all(isinstance(enc[i + 1], nn.BatchNorm2d) and enc[i + 1].num_features == enc[i].out_channels
               for i in convs) and len(convs) == 3
    assert [m.num_features for m in model.decoder.norms] == [8, 4]
    assert [m.bias is None for m in model.decoder.convs] == [True, True, False]  # batch norm has the shift
    model.train()
    model(torch.rand(4, 1, 16, 16))
    assert all(m.num_batches_tracked == 1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_leaky_relu_uses_the_configured_slope():
    for network in ("conv", "mlp"):
        cfg = _model_cfg(network=network, activation="leaky_relu", leaky_slope=0.2, channels=[4])
        model = build_model(cfg, (1, 8, 8))
        acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
        assert acts and all(m.negative_slope == 0.2 for m in acts)
        assert not any(isinstance(m, nn.ReLU) for m in model.modules())
        torch.testing.assert_close(acts[0](torch.tensor([-1.0, 2.0])), torch.tensor([-0.2, 2.0]))


def test_the_thesis_configuration_loads_builds_and_runs():
    from conftest import CONFIGS

    cfg = lvmkit.load_config(CONFIGS / "attpc_thesis_best.toml")
    m = cfg.model
    assert (m.channels, m.kernels, m.strides) == ([16, 16, 8], [11, 5, 3], [2, 2, 2])
    assert (m.latent_dim, m.regularizer, m.mmd_weight) == (3, "mmd", 10.0)
    assert m.batch_norm and m.activation == "relu" and cfg.train.betas == (0.55, 0.99)
    torch.manual_seed(0)
    model = build_model(m, (1, 128, 128))
    x = torch.rand(2, 1, 128, 128)
    seen, recon = _sizes_seen(model.eval(), x)
    assert [s for _, s in seen["enc"]] == [(64, 64), (32, 32), (16, 16)]
    assert recon.shape == x.shape
    out = model.train()(x)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert model.embed(x).shape == (2, 3)
