"""DRAW's own mathematics (the conformance suite covers the contract): the attention filterbanks,
the convolutional read and write, the T = 1 case against a VAE computed by hand, the thesis-code
defects that must stay fixed, the importance-weighted bound, and an end-to-end run with its report."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lvmkit
from lvmkit import ConfigError
from lvmkit.models.draw.draw import Draw
from lvmkit.models.draw.attention import filterbank, read_glimpse, write_patch


def _draw(shape=(1, 8, 8), **model) -> Draw:
    cfg = lvmkit.make_config({"model": {"kind": "draw", "time_steps": 3, "latent_dim": 2, "hidden": 8, **model}})
    return lvmkit.build_model(cfg.model, shape)


def test_filterbank_rows_sum_to_one():
    g = torch.tensor([1.0, 4.5, 9.0])
    f = filterbank(g, torch.tensor([0.3, 1.0, 4.0]), torch.tensor([1e-6, 1.0, 30.0]), 5, 8)
    assert f.shape == (3, 5, 8)
    torch.testing.assert_close(f.sum(-1), torch.ones(3, 5))


def test_full_size_window_with_unit_stride_and_vanishing_variance_reads_the_image():
    model = _draw(read="attention", read_size=8)
    lin = model.read.window.linear
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.0, 0.0, -30.0, 0.0, 0.0]))  # centre, sigma^2 = e^-30, delta = 7/7, gamma = 1
    x = torch.rand(4, 1, 8, 8)
    r = model.read(x, torch.zeros_like(x), torch.randn(4, 8))
    torch.testing.assert_close(r[:, :64], x.flatten(1))


def test_writing_a_patch_and_reading_it_back_recovers_it():
    # A 3 x 3 grid at stride 2 on whole pixels (2, 4, 6) with vanishing variance: F F^T = I,
    # and read's gamma cancels write's 1 / gamma.
    b = 2
    fy = filterbank(torch.full((b,), 4.0), torch.full((b,), 2.0), torch.full((b,), 1e-4), 3, 8)
    fx = filterbank(torch.full((b,), 5.0), torch.full((b,), 2.0), torch.full((b,), 1e-4), 3, 9)
    gamma = torch.tensor([0.5, 3.0])
    w = torch.randn(b, 2, 3, 3)
    canvas = write_patch(w, fy, fx, gamma)
    assert canvas.shape == (b, 2, 8, 9)
    torch.testing.assert_close(read_glimpse(canvas, fy, fx, gamma), w)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 7, 10)])
def test_conv_read_and_write_shapes_and_the_read_sees_the_decoder_state(shape):
    model = _draw(shape, read="conv", write="conv", conv_channels=[4, 6])
    x = torch.rand(5, *shape)
    h = torch.randn(5, 8)
    r = model.read(x, torch.zeros_like(x), h)
    side = [(n + 3) // 4 for n in shape[1:]]  # two 3x3 stride-2 layers, each rounding up
    assert r.shape == (5, 6 * side[0] * side[1]) == (5, model.read.out_features)
    assert not torch.allclose(r, model.read(x, torch.zeros_like(x), torch.zeros(5, 8)))
    assert model.write(h).shape == (5, *shape)
    assert model(x).loss.isfinite()


def _lstm(x, h, c, cell):
    """An LSTM cell written out (Hochreiter & Schmidhuber 1997; PyTorch's gate order i, f, g, o)."""
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_one_step_without_attention_is_a_vae_computed_by_hand():
    model = _draw(time_steps=1, read="none", write="none", hidden=6, latent_dim=3)
    x = torch.rand(5, 1, 8, 8).round()
    torch.manual_seed(7)
    out = model(x)
    torch.manual_seed(7)
    eps = torch.randn(5, 3)  # the one draw forward makes
    with torch.no_grad():
        zeros = torch.zeros(5, 6)
        r = torch.cat([x.flatten(1), (x - 0.5).flatten(1)], 1)  # c_0 = 0, so x^ = x - sigmoid(0)
        h_enc, _ = _lstm(torch.cat([r, zeros], 1), zeros, zeros, model.enc)
        mean, logvar = (h_enc @ model.posterior.weight.T + model.posterior.bias).chunk(2, 1)
        z = mean + torch.exp(0.5 * logvar) * eps
        h_dec, _ = _lstm(z, zeros, zeros, model.dec)
        logits = h_dec @ model.write.linear.weight.T + model.write.linear.bias  # an MLP decoder
        nll = -(x.flatten(1) * F.logsigmoid(logits) + (1 - x.flatten(1)) * F.logsigmoid(-logits)).sum(1)
        kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(1)
    torch.testing.assert_close(out.loss, (nll + kl).mean())
    torch.testing.assert_close(out.terms["elbo"], -(nll + kl).mean())
    torch.testing.assert_close(out.terms["kl_1"], kl.mean())


def test_the_read_sees_the_error_image():
    """Thesis defect: read(x, x, h) instead of read(x, x - sigmoid(c), h). The canvas must matter."""
    model = _draw(read="none", write="none")
    x = torch.rand(4, 1, 8, 8)
    state = list(model._initial(x))
    state[3] = torch.randn(4, 8)  # some decoder state
    _, r0, *_ = model._step(x, tuple(state), None)
    state[0] = torch.randn(4, 1, 8, 8)  # a different canvas
    _, r1, *_ = model._step(x, tuple(state), None)
    assert not torch.allclose(r0, r1)
    torch.testing.assert_close(r1, torch.cat([x.flatten(1), (x - torch.sigmoid(state[0])).flatten(1)], 1))


def test_the_sampled_code_reaches_the_decoder():
    """Thesis defect: z overwritten by a deterministic layer when the KL is on."""
    model = _draw()
    x = torch.rand(4, 1, 8, 8)
    eps = torch.randn(4, 2)
    (_, _, _, h_a, _), _, mean, logvar, z = model._step(x, model._initial(x), eps)
    (_, _, _, h_b, *_), *_ = model._step(x, model._initial(x), torch.zeros(4, 2))
    torch.testing.assert_close(z, mean + torch.exp(0.5 * logvar) * eps)
    assert not torch.allclose(h_a, h_b)
    torch.testing.assert_close(h_a, model.dec(z, (torch.zeros(4, 8), torch.zeros(4, 8)))[0])


def test_per_step_kl_is_the_analytic_gaussian_kl_with_unclipped_scales():
    """Thesis defects: (log sigma)^2 for 2 log sigma in the KL, and sigma clipped to >= 1."""
    model = _draw()
    with torch.no_grad():
        model.posterior.bias[2:] = -3.0  # log variances near -3: sigma ~ 0.22 < 1
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)
    tr = model._trace(x)
    total = 0.0
    for t, (mean, logvar) in enumerate(zip(tr.means, tr.logvars), start=1):
        assert (logvar.exp().sqrt() < 1).all()  # not clipped
        q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
        torch.testing.assert_close(out.terms[f"kl_{t}"], kl)
        total = total + kl
    torch.testing.assert_close(out.terms["kl"], total)
    recon = -model.likelihood.log_prob(tr.canvas, x).mean()
    torch.testing.assert_close(out.loss, recon + total)
    # the per-step KL the report plots is the same quantity, from the same draws
    steps = model.trace(x, sample=True, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    tr = model._trace(x)
    for t, (mean, logvar) in enumerate(zip(tr.means, tr.logvars)):
        q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
        torch.testing.assert_close(steps.kl[t], torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1))


def test_importance_weighted_bound_rises_with_k():
    model = _draw()
    with torch.no_grad():  # a narrow posterior away from the prior and a decoder that listens to z:
        model.posterior.weight.mul_(4.0)  # the gaps between the bounds are then ~10 standard errors
        model.posterior.bias[2:] = -2.0
        model.dec.weight_ih.mul_(4.0)
    x = torch.rand(16, 1, 8, 8).round()
    ll = {k: torch.stack([(torch.manual_seed(s), model.log_likelihood(x, k))[1].mean() for s in range(8)]) for k in (1, 5, 50)}
    assert ll[1].mean() < ll[5].mean() < ll[50].mean()
    assert torch.isfinite(ll[50]).all()


def test_tiny_draw_trains_on_digits_and_samples_and_evaluates(tmp_path):
    cfg = lvmkit.make_config({
        "data": {"name": "digits", "limit": 300},
        "model": {"kind": "draw", "time_steps": 3, "latent_dim": 4, "hidden": 32, "read_size": 2, "write_size": 3},
        "train": {"epochs": 2, "batch_size": 32, "patience": 0, "device": "cpu", "seed": 0, "sample_every": 0},
        "eval": {"k": 5},
    })
    run = lvmkit.train(cfg, tmp_path / "run", progress=False)
    m = run.read_metrics()
    assert len(m) == 2 and all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in m)
    s = lvmkit.sample(run, n=6)
    assert s.shape == (6, 1, 8, 8) and ((s >= 0) & (s <= 1)).all()
    result = lvmkit.evaluate(run, k=5, write=False)
    assert math.isfinite(result["nll"]) and result["nll_stderr"] > 0 and result["k"] == 5
    assert result["test_elbo"] <= result["log_likelihood"] + 5 * result["nll_stderr"]
    model = run.load_model("best")
    x = run.data().test.x[:3]
    assert model.embed(x).shape == (3, 12) and model.reconstruct(x).shape == x.shape
    # the last canvas is the reconstruction; the report shows every step's
    steps = model.canvases(x)
    assert [label for label, _ in steps][-1] == f"t={model.time_steps}"
    torch.testing.assert_close(steps[-1][1], model.reconstruct(x))
    page = lvmkit.write_report(run).read_text()
    assert "canvas after each step" in page and "Steps of the recurrence" in page
    from PIL import Image

    with Image.open(run.figures / "canvas.gif") as gif:
        assert gif.n_frames == model.time_steps
    assert 'src="data:image/gif;base64,' in page and 'href="figures/canvas.gif"' in page
    assert (run.figures / "attention_windows.png").is_file() and (run.figures / "step_kl.png").is_file()
    tr = model.trace(x)  # windows of both attention operators, (T, batch, (g_x, g_y, delta, N))
    assert tr.read_windows.shape == (3, 3, 4) and (tr.read_windows[..., 3] == 2).all()
    assert tr.write_windows.shape == (3, 3, 4) and (tr.write_windows[..., 3] == 3).all()


@pytest.mark.parametrize("model,shape,match", [
    ({"read_size": 9}, (1, 8, 8), r"model.read_size must be at most the image size 8x8; got 9"),
    ({"write_size": 12}, (1, 8, 8), r"model.write_size must be at most"),
    ({"read": "attention"}, (6,), r"model.read = 'attention' needs images \(C, H, W\); got examples of shape \(6,\)"),
    ({"read": "conv"}, (6,), r"model.read = 'conv' needs images \(C, H, W\); got examples of shape \(6,\)\. Use model.read = 'none'"),
    ({"read": "none", "write": "conv"}, (6,), r"model.write = 'conv' needs images"),
    ({"read": "conv", "conv_channels": [4, 4, 4]}, (1, 4, 6),
     r"model.conv_channels = \[4, 4, 4\] halves the image 3 times, which needs images of at least 5x5 pixels; got 4x6\. "
     r"Use fewer entries"),
    ({"write": "conv", "conv_channels": [2] * 5}, (1, 8, 8), r"at least 17x17 pixels; got 8x8"),
])
def test_build_errors_name_the_problem(model, shape, match):
    with pytest.raises(ConfigError, match=match):
        _draw(shape, **model)


@pytest.mark.parametrize("model,match", [
    ({"time_steps": 0}, r"time_steps"),
    ({"regularizer": "dec"}, r"must be one of kl, mmd, none; got 'dec'"),
    ({"conv_channels": []}, r"model.conv_channels must list at least one positive channel count; got \[\]"),
    ({"conv_channels": [8, 0]}, r"model.conv_channels must list .* got \[8, 0\]"),
    ({"write": "glimpse"}, r"Unknown DRAW write 'glimpse'; choose one of: attention, conv, none"),
])
def test_config_errors_name_the_problem(model, match):
    with pytest.raises(ConfigError, match=match):
        lvmkit.make_config({"model": {"kind": "draw", **model}})
