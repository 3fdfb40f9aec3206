"""The GAN family's own mathematics: the optimal discriminator, the gradient penalty, the two
generator losses, and the alternating step (the shared conformance suite covers the rest)."""
from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import lvmkit
from lvmkit.core.contract import FAMILIES, Generator
from lvmkit.core.errors import ConfigError
from lvmkit.models.gan.gan import (GAN, GAN_LOSSES, GANConfig, build_gan, gradient_penalty, minimax_generator_loss,
                               non_saturating_generator_loss)

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "lvmkit" / "configs"


class StandInOptimizers:
    """``Optimizers.minimize`` semantics (zero the group's grads, backward, step) on one torch
    optimizer per group, counting the calls."""

    def __init__(self, model: GAN, make=lambda ps: torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999))) -> None:
        self.params = model.optimizer_groups()
        self.optimizers = {name: make(ps) for name, ps in self.params.items()}
        self.calls: Counter[str] = Counter()

    def minimize(self, group: str, loss: torch.Tensor) -> None:
        for p in self.params[group]:
            p.grad = None
        loss.backward()
        self.optimizers[group].step()
        self.calls[group] += 1


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_discriminator_approaches_the_optimal_discriminator():
    # Goodfellow et al. 2014, prop. 1: for a fixed G, the D maximising V is p / (p + q). With
    # p = N(0, 1) and q = N(2, 1): log p - log q = 2 - 2x, so D*(x) = sigmoid(2 - 2x).
    model = build_gan(GANConfig(loss="minimax", discriminator={"hidden": [32]}), (1,))
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    for _ in range(300):
        real, fake = torch.randn(512, 1), 2 + torch.randn(512, 1)
        loss, _, _ = model.discriminator_loss(real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = torch.linspace(-1, 3, 41).unsqueeze(1)
    with torch.no_grad():
        learned = torch.sigmoid(model.discriminator(grid))
    optimal = torch.sigmoid(2 - 2 * grid.squeeze(1))
    assert (learned - optimal).abs().max() < 0.06
    # and the loss at D* is log 4 - 2 JSD(p || q) (Goodfellow et al. thm. 1): below log 4
    assert loss.item() < math.log(4)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    # D(x) = w.x + b has gradient w everywhere, so the penalty is (||w|| - 1)^2 for any interpolates.
    critic = nn.Linear(6, 1)
    w = critic.weight.detach().squeeze(0)
    real, fake = torch.randn(32, 6), 5 * torch.rand(32, 6)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    assert torch.allclose(gp, (w.norm() - 1) ** 2, atol=1e-5)

    # The critic's loss is E D(fake) - E D(real) + gp_weight * gp (Gulrajani et al. alg. 1).
    model = build_gan(GANConfig(loss="wgan-gp", gp_weight=3.5, discriminator={"hidden": []}), (6,))
    with torch.no_grad():
        model.discriminator.net[-1].weight.copy_(critic.weight)
    loss, fake_out, terms = model.discriminator_loss(real, fake)
    expected = (critic(fake).mean() - critic(real).mean()) + 3.5 * (w.norm() - 1) ** 2
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(terms["gp"], (w.norm() - 1) ** 2, atol=1e-5)
    # the penalty trains the critic: its graph reaches the weights
    (grad,) = torch.autograd.grad(gradient_penalty(lambda x: critic(x).squeeze(1), real, fake), critic.weight)
    assert torch.allclose(grad.squeeze(0), 2 * (w.norm() - 1) * w / w.norm(), atol=1e-5)


def test_generator_losses_share_a_fixed_point_but_not_their_saturation():
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l) (minimax); d/dl -log sigmoid(l) = -(1 - sigmoid(l)).
    for value in (-10.0, 0.0, 3.0):
        logit = torch.tensor([value], requires_grad=True)
        (g_mm,) = torch.autograd.grad(minimax_generator_loss(logit), logit)
        (g_ns,) = torch.autograd.grad(non_saturating_generator_loss(logit), logit)
        s = torch.sigmoid(torch.tensor(value))
        assert torch.allclose(g_mm, -s) and torch.allclose(g_ns, -(1 - s))
        assert g_mm < 0 and g_ns < 0  # both push D(G(z)) up
    # At D(G(z)) = 1/2 (l = 0, where D* sits when p_g = p_data) the gradients agree; where D
    # rejects the samples (l = -10) the minimax gradient vanishes and the other does not.
    assert math.isclose(-torch.sigmoid(torch.tensor(0.0)).item(), -0.5)
    assert torch.sigmoid(torch.tensor(-10.0)) < 1e-4 and 1 - torch.sigmoid(torch.tensor(-10.0)) > 0.9999


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (1, 128, 128), (3, 28, 28), (5,)])
@pytest.mark.parametrize("loss", ["non-saturating", "wgan-gp"])
def test_sample_and_discriminator_shapes(shape, loss):
    model = build_gan(GANConfig(loss=loss, latent_dim=8, generator={"channels": [8, 4], "hidden": [16]},
                                discriminator={"channels": [4, 8], "hidden": [16]}), shape)
    assert isinstance(model, Generator)
    x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, *shape)
    # A sample is the generator (in eval mode) at z ~ N(0, I) drawn from the caller's generator:
    # a sampler that ignored the seed, kept batch-norm in training mode or drew z of another
    # width gives other images.
    model.generator.eval()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, model.generator(z).detach())
    assert model.discriminator(x).shape == (3,)
    again = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_a_discriminator_too_deep_for_the_image_is_a_config_error():
    cfg = GANConfig(discriminator={"channels": [4, 8, 8, 8]})
    message = r"4 entries, too many for 8x8 inputs.*8x8 -> 4x4 -> 2x2 -> 1x1 -> 0x0.*at most 3"
    with pytest.raises(ConfigError, match=message):
        build_gan(cfg, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"needs images \(C, H, W\); got examples of shape \(5,\)"):
        build_gan(GANConfig(network="conv"), (5,))


def test_config_rejects_unknown_losses_and_batch_norm_under_a_penalty():
    with pytest.raises(ValidationError, match=r"Unknown GAN loss 'hinge'; choose one of: minimax, non-saturating"):
        GANConfig(loss="hinge")
    with pytest.raises(ValidationError, match=r"norm = 'batch' couples the examples.*'wgan-gp'"):
        GANConfig(loss="wgan-gp", discriminator={"norm": "batch"})
    with pytest.raises(ValidationError, match="extra"):
        GANConfig(discriminator={"chanels": [4]})
    # through the config layer, one sentence each
    with pytest.raises(ConfigError, match=r"^Unknown GAN loss 'hinge'; choose one of"):
        lvmkit.make_config({"model": {"kind": "gan", "loss": "hinge"}})
    with pytest.raises(ConfigError, match=r"'model.generator.chanels'.*valid keys.*channels, hidden, norm"):
        lvmkit.make_config({"model": {"kind": "gan", "generator": {"chanels": [4]}}})


PURE_CASES = {
    "conv-batchnorm": ({"generator": {"channels": [8, 4]}, "discriminator": {"channels": [4, 8]}}, (1, 8, 8)),
    "conv-spectral": ({"discriminator": {"channels": [4, 8], "spectral_norm": True}, "generator": {"channels": [8, 4]}},
                      (1, 8, 8)),
    "mlp-wgan-gp": ({"loss": "wgan-gp", "generator": {"hidden": [16]}, "discriminator": {"hidden": [16]}}, (5,)),
}


@pytest.mark.parametrize("case", PURE_CASES, ids=list(PURE_CASES))
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_forward_is_pure_in_eval_mode(case, grad):
    fields, shape = PURE_CASES[case]
    model = build_gan(GANConfig(latent_dim=4, **fields), shape)
    # a few steps first, so running statistics and power iterations are not at their start
    opt = StandInOptimizers(model)
    for _ in range(2):
        model.training_step(torch.rand(8, *shape), 0, opt)
    model.eval()
    before = _state(model)
    with torch.set_grad_enabled(grad):
        out = model(torch.rand(8, *shape))
    after = _state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.loss.requires_grad == grad  # no graph kept under no_grad, even for the penalty
    assert set(out.terms) >= {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    model.sample(4)  # sampling leaves the state alone too, in either mode
    model.train()
    model.sample(4)
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())


@pytest.mark.parametrize("loss", ["non-saturating", "wgan-gp"])
def test_training_step_updates_both_groups_with_n_critic_discriminator_steps(loss):
    model = build_gan(GANConfig(loss=loss, n_critic=3, latent_dim=4, generator={"channels": [8, 4]},
                                discriminator={"channels": [4, 8]}), (1, 8, 8))
    opt = StandInOptimizers(model)
    before = {k: [p.detach().clone() for p in ps] for k, ps in model.optimizer_groups().items()}
    terms = model.training_step(torch.rand(16, 1, 8, 8), 0, opt)
    assert opt.calls == {"discriminator": 3, "generator": 1}
    for group, ps in model.optimizer_groups().items():
        assert all(not torch.equal(a, b) for a, b in zip(before[group], ps)), f"a {group} parameter did not move"
    expected = {"loss", "d_loss", "g_loss", "d_real", "d_fake"} | ({"gp"} if loss == "wgan-gp" else set())
    assert set(terms) == expected
    assert all(not v.requires_grad and torch.isfinite(v) for v in terms.values())
    assert all(p.requires_grad for p in model.parameters())  # the generator step's freeze is undone


def test_training_step_is_the_alternation_of_two_gradient_steps():
    # With SGD, one step must equal: D -= lr grad_D d_loss(x, G(z)); then G -= lr grad_G g_loss(G(z)),
    # on the same z (DCGAN's reuse of the fake batch), where the second gradient is taken at the
    # updated D. Stale or mixed-up gradients would differ.
    lr = 0.1
    model = build_gan(GANConfig(latent_dim=3, generator={"hidden": [8]}, discriminator={"hidden": [8]}), (2,))
    manual = copy.deepcopy(model)
    x = torch.rand(16, 2)
    torch.manual_seed(5)
    model.training_step(x, 0, StandInOptimizers(model, make=lambda ps: torch.optim.SGD(ps, lr=lr)))

    torch.manual_seed(5)
    g, d = manual.generator, manual.discriminator
    z = torch.randn(16, 3)
    fake = g(z).detach()
    d_loss = GAN_LOSSES.get("non-saturating").discriminator(d(x), d(fake))
    with torch.no_grad():
        for p, grad in zip(d.parameters(), torch.autograd.grad(d_loss, list(d.parameters()))):
            p -= lr * grad
    g_loss = non_saturating_generator_loss(d(g(z)))
    with torch.no_grad():
        for p, grad in zip(g.parameters(), torch.autograd.grad(g_loss, list(g.parameters()))):
            p -= lr * grad
    for (name, a), b in zip(model.named_parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_small_gan_learns_a_gaussian_mixture():
    # 1-D data in [0, 1]: 0.5 N(0.3, 0.05^2) + 0.5 N(0.7, 0.05^2). The raw generator oscillates
    # around the equilibrium from step to step; an exponential moving average of its weights
    # (train.ema_decay in the loop) settles on it, so that is what is checked.
    def data(n):
        centre = torch.where(torch.rand(n, 1) < 0.5, 0.3, 0.7)
        return (centre + 0.05 * torch.randn(n, 1)).clamp(0, 1)

    model = build_gan(GANConfig(latent_dim=4, generator={"hidden": [32, 32]}, discriminator={"hidden": [32, 32]}), (1,))
    ema = copy.deepcopy(model)
    opt = StandInOptimizers(model, make=lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.5, 0.999)))
    for step in range(800):
        model.training_step(data(256), step, opt)
        with torch.no_grad():
            for avg, p in zip(ema.parameters(), model.parameters()):
                avg.lerp_(p, 0.01)
    x, target = ema.sample(4000), data(100_000)
    assert abs(float(x.mean()) - float(target.mean())) < 0.03
    assert abs(float(x.std()) - float(target.std())) < 0.03
    for mode in (0.3, 0.7):  # both modes are covered, about half the mass each
        assert 0.35 < float(((x - mode).abs() < 0.1).float().mean()) < 0.65


def test_evaluate_split_is_deterministic_and_leaves_the_mode():
    from lvmkit.data import Split

    cfg = GANConfig(loss="wgan-gp", latent_dim=4, generator={"hidden": [8]}, discriminator={"hidden": [8]})
    model = build_gan(cfg, (5,))
    split = Split(torch.rand(250, 5), None)
    first = model.evaluate_split(split, k=1, batch_size=100)
    assert model.training
    assert set(first) == {"loss", "d_loss", "g_loss", "d_real", "d_fake", "gp"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values())
    assert first == model.evaluate_split(split, k=1, batch_size=100)


def test_the_family_is_registered_and_its_examples_build():
    family = FAMILIES.get("gan")
    assert family.model_class is GAN and family.config is GANConfig
    for example in family.examples:
        model = family.build(GANConfig(**example["model"]), example["input_shape"])
        model.eval()
        out = model(torch.rand(4, *example["input_shape"]))
        out.loss.backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["gan_digits", "dcgan_fashion", "wgan_fashion"])
def test_shipped_configs_validate_and_build(name):
    cfg = lvmkit.load_config(CONFIGS / f"{name}.toml")
    assert isinstance(cfg.model, GANConfig)
    shape = (1, 8, 8) if cfg.data.name == "digits" else (1, 28, 28)
    model = build_gan(cfg.model, shape)
    assert model.sample(2).shape == (2, *shape)
