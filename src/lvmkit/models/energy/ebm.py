"""Energy-based models trained with Langevin negatives and a replay buffer (Du & Mordatch 2019,
"Implicit Generation and Generalization in Energy-Based Models").

An energy network E(x) (:class:`ConvEnergy` for images, :class:`MLPEnergy` for tables) defines
p(x) ~ exp(-E(x)). The gradient of the negative log-likelihood is E_data grad E(x+) - E_p grad
E(x-) (Du & Mordatch eq. 2); each training step estimates the second expectation with negatives
x- from a short Langevin chain (:class:`~lvmkit.models.mcmc.langevin.Langevin`) and minimises

    loss = mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2),

the second part being their L2 penalty on energies (sec. 3.3), which keeps the energies' scale
from drifting. Chains start from a replay buffer of past chain ends (size ``buffer_size``),
except a fraction ``reinit_fraction`` that starts from fresh uniform noise (their 5%); the ends
are written back. The buffer is a registered buffer: checkpoints carry it, so a killed run
resumes with the same persistent chains. Only ``training_step`` writes it; ``forward`` (the
validation objective) runs the same chains from the buffer without writing back.

The data lie in [0, 1] (``data_support``); chains are clamped to it at every step.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from lvmkit.core.config import ModelConfig, Section
from lvmkit.core.contract import FAMILIES, AbstractModel, EnergyModel, Family, IterativeGenerator, LossOutput
from lvmkit.core.errors import ConfigError
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.mcmc.base import choose_sampler
from lvmkit.models.mcmc.langevin import Langevin


# -- energy networks -------------------------------------------------------------------------
# SiLU (swish) everywhere: Langevin follows grad_x E, and a ReLU network's input gradient is
# piecewise constant; Du & Mordatch's later models and the JEM code use swish as well. The
# last layer has no bias: the contrastive term does not see a constant added to E, and the L2
# penalty can centre the energies through the other weights.
def _with_spectral_norm(net: nn.Module) -> nn.Module:
    """Every convolution and linear map divided by its largest singular value (Miyato et al.
    2018; power iteration on the weight reshaped to (out, in x k x k)), after initialisation."""
    for module in list(net.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _spectral_norm(module)
    return net


class ConvEnergy(nn.Module):
    """x (batch, C, H, W) -> one 3x3 stride-2 convolution per entry of ``channels`` (each halves
    the size, rounding up) with SiLU -> flatten -> linear to ``channels[-1]`` -> SiLU -> linear
    -> E(x) (batch,)."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], spectral_norm: bool = False) -> None:
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.SiLU()]
            c, h, w = width, math.ceil(h / 2), math.ceil(w / 2)
        layers += [nn.Flatten(), nn.Linear(c * h * w, channels[-1]), nn.SiLU(), nn.Linear(channels[-1], 1, bias=False)]
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            _with_spectral_norm(self.net)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class MLPEnergy(nn.Module):
    """x (batch, *shape) -> flatten -> hidden layers (SiLU) -> linear -> E(x) (batch,)."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], spectral_norm: bool = False) -> None:
        super().__init__()
        sizes = [math.prod(shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(sizes[-1], 1, bias=False))
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            _with_spectral_norm(self.net)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


# -- the model -------------------------------------------------------------------------------
class EBM(AbstractModel, IterativeGenerator, EnergyModel):
    """An energy network, a Langevin sampler and a replay buffer of persistent chains.

    ``selection_metric`` is None: the contrastive loss compares data with the model's own
    current samples, so it hovers near zero whether or not the model is good; the last
    checkpoint is the model. :meth:`energy` (low = typical) doubles as an anomaly score.

    Args:
        energy_net: (batch, *input_shape) -> (batch,).
        input_shape: the shape of one example.
        sampler: the Langevin chain of each training step (its ``bounds``: the data's range).
        buffer_size: persistent chain states kept (Du & Mordatch: 10000).
        reinit_fraction: the probability that a chain starts from fresh uniform noise instead
            of a buffer state (Du & Mordatch: 0.05).
        alpha: the weight of the L2 penalty on energies.
        sample_init: where :meth:`sample` starts its chains: "buffer" (persistent chain states,
            as Du & Mordatch show samples) or "noise" (short-run chains from uniform noise).
        sample_steps: Langevin steps of :meth:`sample`; None: the training chain's.
    """

    data_support = (0.0, 1.0)
    selection_metric = None
    # Du & Mordatch 2019, appendix A: Adam with beta1 = 0 (momentum fights the moving
    # negatives), lr 1e-4.
    optimizer_defaults = {"main": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.999)}}

    def __init__(self, energy_net: nn.Module, *, input_shape: tuple[int, ...], sampler: Langevin,
                 buffer_size: int = 10000, reinit_fraction: float = 0.05, alpha: float = 0.1,
                 sample_init: str = "buffer", sample_steps: int | None = None) -> None:
        super().__init__()
        self.energy_net = energy_net
        self.input_shape = tuple(input_shape)
        self.sampler = sampler
        self._sample_sampler = sampler.replace(steps=sample_steps)  # what `sample` uses
        self.reinit_fraction, self.alpha, self.sample_init = reinit_fraction, alpha, sample_init
        low, high = self.data_support
        # Persistent: checkpoints and EMA copies carry the chains (exact resume).
        self.register_buffer("buffer", low + (high - low) * torch.rand(buffer_size, *self.input_shape))

    @property
    def buffer_size(self) -> int:
        return self.buffer.shape[0]

    def energy(self, x: Tensor) -> Tensor:
        """E(x) per example (batch,): low for typical data, high for anomalies."""
        return self.energy_net(x)

    def _noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        low, high = self.data_support
        u = torch.rand((n, *self.input_shape), generator=generator, device=self.buffer.device)
        return low + (high - low) * u

    def chain_starts(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Starting states of ``n`` chains: distinct buffer rows (with replacement only when
        ``n`` exceeds the buffer), each replaced by uniform noise with probability
        ``reinit_fraction``. Returns (starts, buffer indices, fresh mask); reads the buffer only."""
        device = self.buffer.device
        if n <= self.buffer_size:
            index = torch.randperm(self.buffer_size, generator=generator, device=device)[:n]
        else:
            index = torch.randint(self.buffer_size, (n,), generator=generator, device=device)
        fresh = torch.rand(n, generator=generator, device=device) < self.reinit_fraction
        noise = self._noise(n, generator)
        starts = torch.where(fresh.view(-1, *[1] * len(self.input_shape)), noise, self.buffer[index])
        return starts, index, fresh

    def contrastive_loss(self, positives: Tensor, negatives: Tensor) -> LossOutput:
        """mean E(x+) - mean E(x-) (Du & Mordatch eq. 2's surrogate) + alpha (mean E(x+)^2 +
        mean E(x-)^2) (their L2 penalty); terms: loss, cd, reg, e_pos, e_neg."""
        n = positives.shape[0]
        e = self.energy(torch.cat([positives, negatives.detach()]))  # one pass: one power iteration
        e_pos, e_neg = e[:n], e[n:]
        cd = e_pos.mean() - e_neg.mean()
        reg = self.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        loss = cd + reg
        terms = {"loss": loss, "cd": cd, "reg": reg, "e_pos": e_pos.mean(), "e_neg": e_neg.mean()}
        return LossOutput(loss, {k: v.detach() for k, v in terms.items()})

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        """The training objective with negatives from the buffer's chains, without writing them
        back (pure; random draws from torch's global stream)."""
        starts, _, _ = self.chain_starts(x.shape[0])
        negatives, _ = self.sampler.run(self.energy, starts)
        return self.contrastive_loss(x, negatives)

    def training_step(self, x: Tensor, step: int, opt) -> dict[str, Tensor]:
        n = x.shape[0]
        if n > self.buffer_size:
            raise ConfigError(
                f"model.buffer_size = {self.buffer_size} is smaller than the batch of {n} examples (train.batch_size); "
                f"set model.buffer_size to at least {n} (Du & Mordatch keep 10000) or lower train.batch_size."
            )
        starts, index, _ = self.chain_starts(n)
        negatives, _ = self.sampler.run(self.energy, starts)
        with torch.no_grad():
            self.buffer[index] = negatives  # distinct rows: a deterministic write
        out = self.contrastive_loss(x, negatives)
        opt.minimize("main", out.loss)
        return out.terms

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Mean energy of the split's examples and of as many samples (at most 1,000, seed 0,
        the default sampler), and the gap E(samples) - E(data) (positive: the model puts its
        low energy on the data). ``k`` is unused: nothing here is a Monte Carlo bound."""
        from lvmkit.data import batches

        was_training = self.training
        self.eval()
        try:
            e_data = torch.cat([self.energy(xb) for xb, _ in batches(split, batch_size, shuffle=False)])
            g = torch.Generator(device=self.buffer.device).manual_seed(0)
            m = min(len(split), 1000)
            e_samples = torch.cat([self.energy(self.sample(min(batch_size, m - i), generator=g))
                                   for i in range(0, m, batch_size)])
        finally:
            self.train(was_training)
        return {"energy_data": float(e_data.mean()), "energy_data_std": float(e_data.std()),
                "energy_samples": float(e_samples.mean()), "energy_samples_std": float(e_samples.std()),
                "energy_gap": float(e_samples.mean() - e_data.mean()), "n_samples": m}

    # -- sampling ---------------------------------------------------------------------------------
    @property
    def samplers(self) -> dict[str, Langevin]:
        return {"langevin": self._sample_sampler}

    def make_sampler(self, name: str | None = None, **options) -> Langevin:
        return choose_sampler(self.samplers, name, options, type(self).__name__)

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: Langevin | None = None, keep: int = 0):
        """``n`` samples in [0, 1]: ``steps`` (default ``sample_steps``) Langevin steps in eval
        mode from buffer states or noise (``sample_init``); the buffer is not written. With
        ``keep``, returns (samples, chain), the chain's states labelled "step i"."""
        sampler = (sampler or self.default_sampler).replace(steps=steps)
        if self.sample_init == "buffer":
            starts, _, _ = self.chain_starts(n, generator)
        else:
            starts = self._noise(n, generator)
        was_training = self.training
        self.eval()
        try:
            x, chain = sampler.run(self.energy, starts, generator=generator, keep=keep)
        finally:
            self.train(was_training)
        return (x, chain) if keep else x


# -- configuration and registration ----------------------------------------------------------
class LangevinConfig(Section):
    """``[model.langevin]``: the chain of each training step (see :class:`Langevin`)."""

    steps: int = Field(60, ge=1)
    step_size: float = Field(10.0, gt=0.0)  # eps
    # The multiplier of the exact noise sqrt(2 eps) z; 1 samples exp(-E). The default is Du &
    # Mordatch's sigma = 0.005 at lambda = 10: 0.005 / sqrt(20).
    noise: float = Field(0.005 / math.sqrt(20.0), ge=0.0)
    grad_clip: float = Field(0.03, ge=0.0)  # per component of grad E; 0: off


class EBMConfig(ModelConfig):
    """``[model]`` of the energy-based family."""

    kind: str = "ebm"
    network: Literal["auto", "conv", "mlp"] = "auto"  # "auto": conv for images, mlp for tables
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1)  # conv widths
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 128])  # mlp widths
    spectral_norm: bool = False
    alpha: float = Field(0.1, ge=0.0)  # weight of the L2 energy penalty
    buffer_size: int = Field(10000, ge=1)
    reinit_fraction: float = Field(0.05, ge=0.0, le=1.0)
    langevin: LangevinConfig = Field(default_factory=LangevinConfig)
    sample_init: Literal["buffer", "noise"] = "buffer"
    sample_steps: Optional[int] = Field(None, ge=0)  # None: langevin.steps


def build_ebm(cfg: EBMConfig, input_shape: tuple[int, ...]) -> EBM:
    """The EBM that ``cfg`` describes for examples of ``input_shape``."""
    shape = tuple(input_shape)
    network = cfg.network if cfg.network != "auto" else ("conv" if len(shape) == 3 else "mlp")
    if network == "conv":
        if len(shape) != 3:
            raise ConfigError(f"model.network = 'conv' needs images (C, H, W); got examples of shape {shape}. "
                              "Use network = 'mlp' or 'auto'.")
        net: nn.Module = ConvEnergy(shape, list(cfg.channels), cfg.spectral_norm)
    else:
        net = MLPEnergy(shape, list(cfg.hidden), cfg.spectral_norm)
    lv = cfg.langevin
    sampler = Langevin(steps=lv.steps, step_size=lv.step_size, noise=lv.noise, grad_clip=lv.grad_clip,
                       bounds=EBM.data_support)
    return EBM(net, input_shape=shape, sampler=sampler, buffer_size=cfg.buffer_size,
               reinit_fraction=cfg.reinit_fraction, alpha=cfg.alpha, sample_init=cfg.sample_init,
               sample_steps=cfg.sample_steps)


MODEL_KINDS.register("ebm")({"family": "ebm"})
FAMILIES.register("ebm")(Family(
    config=EBMConfig, build=build_ebm, model_class=EBM,
    examples=(
        {"model": {"kind": "ebm", "channels": [4, 8], "buffer_size": 64, "langevin": {"steps": 3}},
         "input_shape": (1, 8, 8)},
        {"model": {"kind": "ebm", "hidden": [16], "spectral_norm": True, "buffer_size": 40, "sample_init": "noise",
                   "langevin": {"steps": 3, "step_size": 0.01, "noise": 1.0, "grad_clip": 0.0}}, "input_shape": (5,)},
    ),
    refuses={"sample --eta": r"\beta\b"},  # eta is DDIM's; Langevin refuses it by name
))

__all__ = ["ConvEnergy", "EBM", "EBMConfig", "LangevinConfig", "MLPEnergy", "build_ebm"]
