"""Restricted Boltzmann machines and deep belief networks (families ``rbm`` and ``dbn``).

Training follows the lecture notes (seed 001): the log-likelihood gradient is a positive phase
on the data minus a negative phase on model samples, written as the free-energy surrogate
F(x_data).mean() - F(x_model).mean() whose autograd gradient is exactly that difference.
Negative samples come from a chain sampler (:mod:`lvmkit.models.mcmc.chains`) run ``cd_steps`` steps
from the batch (CD-k, Hinton 2002) or from persistent chains kept in the model's state (PCD,
Tieleman 2008), which advance only in ``training_step``. SGD with momentum and weight decay is
the family's default optimizer (Hinton's practical guide, 2010).

A DBN stacks RBMs greedily (Hinton et al. 2006): layer l trains for ``layer_steps`` steps on
samples of the hidden units of the layers below, then freezes.
"""
from __future__ import annotations

import math
import warnings
from typing import Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lvmkit.core.config import ModelConfig
from lvmkit.core.contract import (FAMILIES, AbstractModel, DensityModel, Encoder, EnergyModel, Family, ImageFilters,
                                  IterativeGenerator, LossOutput)
from lvmkit.core.errors import ConfigError, LvmkitWarning
from lvmkit.models.energy.boltzmann import EXACT_LIMIT, RBMEnergy, ais_log_z, exact_log_z
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.mcmc.base import AbstractSampler, choose_sampler
from lvmkit.models.mcmc.chains import MCMC_SAMPLERS, Gibbs


class _BoltzmannConfig(ModelConfig):
    """Keys shared by the rbm and dbn families (abstract: each family's config adds its sizes)."""

    visible: Literal["binary", "gaussian"] = "binary"
    learn_sigma: bool = False  # Gaussian units: learn their standard deviations (default: fixed at 1)
    cd_steps: int = Field(1, ge=1)  # k of CD-k / PCD-k
    persistent: bool = False  # PCD: negative chains persist across updates (in the checkpoint)
    sampler: Literal["gibbs", "mh"] = "gibbs"  # the negative phase's and sampling's chain
    sample_steps: int = Field(1000, gt=0)  # chain steps per `lvmkit sample` draw


class RBMConfig(_BoltzmannConfig):
    """``[model]`` of the rbm family."""

    kind: str = "rbm"
    hidden: int = Field(256, gt=0)
    # evaluate: log Z exactly (smaller layer <= 20 units), by AIS, or auto (exact when possible)
    log_z: Literal["auto", "exact", "ais"] = "auto"
    ais_runs: int = Field(100, ge=2)
    ais_temperatures: int = Field(14500, ge=2)  # Salakhutdinov & Murray 2008

    @model_validator(mode="after")
    def _check(self) -> "RBMConfig":
        if self.log_z == "exact" and self.hidden > EXACT_LIMIT and self.visible == "gaussian":
            raise ConfigError(f"model.log_z = 'exact' enumerates the {self.hidden} hidden units, beyond the limit of "
                              f"{EXACT_LIMIT}; set model.log_z = 'ais' (or 'auto').")
        return self


class DBNConfig(_BoltzmannConfig):
    """``[model]`` of the dbn family: hidden sizes bottom-up, steps per greedy layer."""

    kind: str = "dbn"
    hidden: list[int] = Field(default_factory=lambda: [256, 64])
    layer_steps: int = Field(2000, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "DBNConfig":
        if len(self.hidden) < 2 or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.hidden of a DBN lists two or more positive layer sizes, got {self.hidden}; "
                              "a single layer is model.kind = 'rbm'.")
        return self


_GAUSSIAN_ADVICE = ("the energies of a Gaussian-binary RBM ran off: lower train.lr (Gaussian units want about "
                    "a tenth of a binary RBM's, e.g. 0.001), fix the standard deviations (model.learn_sigma = false) "
                    "and standardise the data (data.scale = 'standard').")


def _check_batch(layer: RBMEnergy, x: Tensor, state: dict) -> None:
    """Binary units need {0, 1} data; Gaussian units with sigma fixed at 1 expect standardised data."""
    if layer.gaussian:
        if not state.get("warned") and not layer.log_sigma.requires_grad:
            m, s = float(x.mean()), float(x.std())
            if abs(m) > 0.5 or not 0.5 < s < 2.0:
                warnings.warn(f"Gaussian visible units with sigma fixed at 1 expect standardised data, but a batch has mean "
                              f"{m:.3g} and standard deviation {s:.3g}; set data.scale = 'standard' (or model.learn_sigma = true).",
                              LvmkitWarning, stacklevel=3)
            state["warned"] = True
        return
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        raise ConfigError(f"A binary RBM needs visible data in {{0, 1}}, but a batch holds values such as {float(x[bad][0]):.3g}; "
                          "set data.binarize = 'dynamic' (or 'static'), or model.visible = 'gaussian' with data.scale = 'standard'.")


class _Chains:
    """The negative phase of one RBM layer: ``steps`` sampler steps from the batch (CD-k), or
    from the persistent chains the model passes in (PCD); the model keeps the chains in buffers
    and writes them back only in ``training_step``."""

    def __init__(self, sampler: AbstractSampler, steps: int, persistent: bool) -> None:
        self.sampler, self.persistent = sampler.replace(steps=steps), persistent

    @property
    def steps(self) -> int:
        return self.sampler.steps

    def negative(self, layer: RBMEnergy, x: Tensor, chains: Tensor | None) -> Tensor:
        start = x if not self.persistent or chains is None or len(chains) == 0 else chains
        return self.sampler.run(layer, start.detach())[0]

    def train(self, layer: RBMEnergy, x: Tensor, chains: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The training surrogate F(x).mean() - F(neg).mean() and the negative samples ``neg``
        (the persistent chains' new states).

        Block Gibbs reuses the products it can: CD starts its chain from hidden states drawn
        from the batch's hidden input, which F(x) reuses, and F(neg) scores the chain's last
        states (5 products of the batch with W per CD-1 step: forward 3, backward 2). PCD draws
        the chains' hidden states afresh from the current weights (one product more): keeping
        the hidden states of the previous step instead, as scikit-learn's BernoulliRBM does,
        saves it but lagged by one update, and gave lower test likelihoods (BENCHMARKS.md)."""
        pos_in = layer.hidden_input(x)
        if not isinstance(self.sampler, Gibbs):
            neg = self.negative(layer, x, chains)
        else:
            with torch.no_grad():
                if self.persistent and len(chains):
                    h = layer.sample_h(chains)
                else:
                    h = layer.sample_h(x, hidden_input=pos_in.detach())
                for i in range(self.steps):
                    neg = layer.sample_x(h)
                    if i < self.steps - 1:
                        h = layer.sample_h(neg)
        loss, terms = _surrogate(layer, x, neg, pos_in=pos_in, monitor=False)
        return loss, terms, neg.detach()


def _surrogate(layer: RBMEnergy, x: Tensor, neg: Tensor, pos_in: Tensor | None = None,
               monitor: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """F(x).mean() - F(neg).mean() (its gradient is the positive minus the negative phase);
    ``pos_in``: x's hidden input when already formed. With ``monitor`` (validation), also the
    squared error of E[x | p(h | x)]."""
    f_pos = layer.free_energy(x, pos_in)
    loss = f_pos.mean() - layer.free_energy(neg.detach()).mean()
    terms = {"loss": loss.detach(), "free_energy": f_pos.mean().detach()}
    if monitor:
        with torch.no_grad():
            terms["recon"] = (layer.visible_mean(layer.p_h(x)) - x).pow(2).sum(-1).mean()
    return loss, terms


class _LoadSizedBuffers:
    """Buffers whose length is set at the first training step (persistent chains): take the
    saved length when a checkpoint is loaded."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and buf.shape != state_dict[key].shape:
                self._buffers[name] = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class RBM(_LoadSizedBuffers, AbstractModel, Encoder, IterativeGenerator, DensityModel, EnergyModel, ImageFilters):
    """One RBM layer over flattened examples; codes are p(h = 1 | x)."""

    selection_metric = None  # the surrogate is no validation number; the last checkpoint is the model
    optimizer_defaults = {"main": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}}

    def __init__(self, layer: RBMEnergy, *, input_shape: tuple[int, ...], chains: _Chains, sample_steps: int = 1000,
                 log_z: str = "auto", ais_runs: int = 100, ais_temperatures: int = 14500) -> None:
        super().__init__()
        self.layer, self.chains = layer, chains
        self.input_shape = tuple(input_shape)
        self.latent_dim = layer.n_hidden
        self.sample_steps, self.log_z_method = sample_steps, log_z
        self.ais_runs, self.ais_temperatures = ais_runs, ais_temperatures
        if layer.gaussian:  # a known failure of Gaussian-binary RBMs (Hinton's guide, section 13.2)
            self.divergence_advice = _GAUSSIAN_ADVICE
        self.register_buffer("persistent_chains", torch.zeros(0, layer.n_visible))
        self.register_buffer("base_visible", torch.zeros(layer.n_visible))  # AIS base model (data statistics)
        self._state: dict = {}

    @property
    def data_support(self):
        return None if self.layer.gaussian else (0.0, 1.0)

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        x = self._flat(x)
        neg = self.chains.negative(self.layer, x, None if not self.chains.persistent else self.persistent_chains)
        loss, terms = _surrogate(self.layer, x, neg)
        return LossOutput(loss, terms)

    def training_step(self, x: Tensor, step: int, opt) -> dict[str, Tensor]:
        x = self._flat(x)
        _check_batch(self.layer, x, self._state)
        loss, terms, neg = self.chains.train(self.layer, x, self.persistent_chains)
        if self.chains.persistent:
            self.persistent_chains = neg.clone()
        opt.minimize("main", loss)
        return terms

    @torch.no_grad()
    def update(self, train_x: Tensor, step: int) -> str | None:
        # AIS's base model, from the whole training split before the first step: the pixels'
        # base rates as log-odds (binary) or their means (Gaussian)
        if step == 0:
            self._set_base(self._flat(train_x))
        return None

    @torch.no_grad()
    def _set_base(self, x: Tensor) -> None:
        m = x.mean(0)
        self.base_visible.copy_(m if self.layer.gaussian else torch.log((m + 1e-3) / (1 - m + 1e-3)))

    # -- likelihood -------------------------------------------------------------------------------
    def energy(self, x: Tensor) -> Tensor:
        """The free energy F(x) per example: lower is more probable (an anomaly score)."""
        return self.layer.free_energy(self._flat(x))

    def partition(self, runs: int | None = None, generator: torch.Generator | None = None) -> dict:
        """log Z with its estimator: exact when the smaller layer allows (and log_z is not 'ais'), else AIS."""
        smaller = self.layer.n_hidden if self.layer.gaussian else min(self.layer.n_hidden, self.layer.n_visible)
        if self.log_z_method == "exact" or (self.log_z_method == "auto" and smaller <= EXACT_LIMIT):
            value = exact_log_z(self.layer)
            return {"log_z": value, "log_z_lower": value, "log_z_upper": value, "estimator": "exact (enumeration)"}
        r = ais_log_z(self.layer, self.base_visible, runs or self.ais_runs, self.ais_temperatures, generator)
        return {"log_z": r.log_z, "log_z_lower": r.lower, "log_z_upper": r.upper, "ais_seconds": r.seconds,
                "estimator": f"AIS ({r.runs} runs, {r.temperatures} temperatures; bounds +- 3 sigma)"}

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int = 100) -> Tensor:
        """log p(x) = -F(x) - log Z per example (log Z exact or by AIS with ``k`` runs)."""
        return -self.energy(x) - self.partition(runs=max(2, k))["log_z"]

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Test log-likelihood in nats per example, -F(x) - log Z, with log Z's estimator and,
        for AIS, the likelihood's bounds from log Z's +- 3 sigma bounds."""
        g = torch.Generator(device=split.x.device).manual_seed(0)
        neg_f = float(torch.cat([-self.energy(split.x[i : i + 1000]) for i in range(0, len(split.x), 1000)]).mean())
        z = self.partition(generator=g)
        out = {"log_likelihood": neg_f - z["log_z"], "log_likelihood_lower": neg_f - z["log_z_upper"],
               "log_likelihood_upper": neg_f - z["log_z_lower"], "mean_neg_free_energy": neg_f}
        out.update({k_: v for k_, v in z.items()})
        return out

    # -- codes and samples ------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        return self.layer.p_h(self._flat(x))

    @property
    def samplers(self) -> dict[str, AbstractSampler]:
        return _chain_samplers(self.chains, self.sample_steps)

    def make_sampler(self, name: str | None = None, **options) -> AbstractSampler:
        return choose_sampler(self.samplers, name, options, type(self).__name__)

    @torch.no_grad()
    def filters(self) -> Tensor:
        """Each hidden unit's weights to the visible units, shaped as the data: (hidden, *input_shape)."""
        return self.layer.W.detach().t().reshape(self.layer.n_hidden, *self.input_shape)

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: AbstractSampler | None = None, keep: int = 0):
        """Run ``n`` chains from noise for ``steps`` (default: the sampler's, sample_steps for
        the default sampler) and return E[x | h] of their last states, shaped as the data."""
        sampler = (sampler or self.default_sampler).replace(steps=steps or None)
        x0 = _noise(self.layer, n, generator)
        x, chain = sampler.run(self.layer, x0, generator=generator, keep=keep)
        out = self.layer.visible_mean(self.layer.sample_h(x, generator)).reshape(n, *self.input_shape)
        if keep:
            return out, [(s, c.reshape(n, *self.input_shape)) for s, c in chain]
        return out


def _chain_samplers(chains: _Chains, sample_steps: int) -> dict[str, AbstractSampler]:
    """The chain samplers of an RBM or DBN, its training chain's kind first, ``sample_steps`` each."""
    first = chains.sampler.replace(steps=sample_steps)
    rest = {name: MCMC_SAMPLERS.get(name)(steps=sample_steps) for name in MCMC_SAMPLERS if name != first.name}
    return {first.name: first, **rest}


def _noise(layer: RBMEnergy, n: int, generator: torch.Generator | None) -> Tensor:
    dev = layer.W.device
    if layer.gaussian:
        return layer.a + torch.exp(layer.log_sigma) * torch.randn(n, layer.n_visible, generator=generator, device=dev)
    return (torch.rand(n, layer.n_visible, generator=generator, device=dev) < 0.5).float()


class DBN(_LoadSizedBuffers, AbstractModel, Encoder, IterativeGenerator):
    """RBMs stacked and trained greedily; codes are the top layer's p(h = 1 | ...)."""

    selection_metric = None
    optimizer_defaults = RBM.optimizer_defaults

    def __init__(self, layers: list[RBMEnergy], *, input_shape: tuple[int, ...], chains: _Chains, layer_steps: int,
                 sample_steps: int = 1000) -> None:
        super().__init__()
        self.layers, self.chains = nn.ModuleList(layers), chains
        self.input_shape = tuple(input_shape)
        self.latent_dim = layers[-1].n_hidden
        self.layer_steps, self.sample_steps = layer_steps, sample_steps
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))
        if layers[0].gaussian:
            self.divergence_advice = _GAUSSIAN_ADVICE
        for i, layer in enumerate(layers):
            self.register_buffer(f"persistent_chains_{i}", torch.zeros(0, layer.n_visible))
        self._state: dict = {}

    @property
    def data_support(self):
        return None if self.layers[0].gaussian else (0.0, 1.0)

    @property
    def objective_stage(self) -> int:
        return int(self.stage)

    def _input_of(self, level: int, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The data layer ``level`` sees: samples of the hidden units of the layers below."""
        h = x.reshape(x.shape[0], -1)
        with torch.no_grad():
            for layer in self.layers[:level]:
                h = layer.sample_h(h, generator)
        return h

    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        level = int(self.stage)
        v = self._input_of(level, x)
        neg = self.chains.negative(self.layers[level], v, getattr(self, f"persistent_chains_{level}"))
        loss, terms = _surrogate(self.layers[level], v, neg)
        return LossOutput(loss, {**terms, "layer": torch.tensor(float(level))})

    def training_step(self, x: Tensor, step: int, opt) -> dict[str, Tensor]:
        level = min(step // self.layer_steps, len(self.layers) - 1)
        self.stage.fill_(level)
        v = self._input_of(level, x)
        if level == 0:
            _check_batch(self.layers[0], v, self._state)
        # only the layer in training moves: the others get no gradient and are left out of the step
        for i, layer in enumerate(self.layers):
            for name_, p in layer.named_parameters():
                p.requires_grad_(i == level and (name_ != "log_sigma" or self._state.get("learn_sigma", False)))
        chains = f"persistent_chains_{level}"
        loss, terms, neg = self.chains.train(self.layers[level], v, getattr(self, chains))
        if self.chains.persistent:
            setattr(self, chains, neg.clone())
        opt.minimize("main", loss)
        return {**terms, "layer": torch.tensor(float(level))}

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Per layer, the mean free energy and reconstruction error of the split's codes (a DBN
        has no tractable likelihood here)."""
        out = {}
        x = split.x
        for i, layer in enumerate(self.layers):
            v = self._input_of(i, x, torch.Generator(device=x.device).manual_seed(i))
            _, terms = _surrogate(layer, v, v)
            out[f"layer{i}_free_energy"] = float(terms["free_energy"])
            out[f"layer{i}_recon"] = float(terms["recon"])
        return out

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = layer.p_h(h)
        return h

    @property
    def samplers(self) -> dict[str, AbstractSampler]:
        return _chain_samplers(self.chains, self.sample_steps)

    def make_sampler(self, name: str | None = None, **options) -> AbstractSampler:
        return choose_sampler(self.samplers, name, options, type(self).__name__)

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: AbstractSampler | None = None, keep: int = 0):
        """Chains in the top RBM, then one top-down pass of E[v | h] through the layers below."""
        sampler = (sampler or self.default_sampler).replace(steps=steps or None)
        top = self.layers[-1]
        v, chain = sampler.run(top, _noise(top, n, generator), generator=generator, keep=keep)

        def down(v: Tensor) -> Tensor:
            h = top.visible_mean(top.sample_h(v, generator))
            for layer in reversed(self.layers[:-1]):
                h = layer.visible_mean(h)
            return h.reshape(n, *self.input_shape)

        if keep:
            return down(v), [(s, down(c)) for s, c in chain]
        return down(v)


def _chains(cfg: _BoltzmannConfig) -> _Chains:
    return _Chains(MCMC_SAMPLERS.get(cfg.sampler)(), cfg.cd_steps, cfg.persistent)


def build_rbm(cfg: RBMConfig, input_shape: tuple[int, ...]) -> RBM:
    n_visible = math.prod(input_shape)
    if cfg.log_z == "exact" and min(n_visible, cfg.hidden) > EXACT_LIMIT:
        raise ConfigError(f"model.log_z = 'exact' enumerates 2^{min(n_visible, cfg.hidden)} states, beyond the limit of "
                          f"2^{EXACT_LIMIT}; set model.log_z = 'ais' (or 'auto').")
    layer = RBMEnergy(n_visible, cfg.hidden, cfg.visible, cfg.learn_sigma)
    return RBM(layer, input_shape=input_shape, chains=_chains(cfg), sample_steps=cfg.sample_steps, log_z=cfg.log_z,
               ais_runs=cfg.ais_runs, ais_temperatures=cfg.ais_temperatures)


def build_dbn(cfg: DBNConfig, input_shape: tuple[int, ...]) -> DBN:
    sizes = [math.prod(input_shape), *cfg.hidden]
    layers = [RBMEnergy(sizes[0], sizes[1], cfg.visible, cfg.learn_sigma)]
    layers += [RBMEnergy(v, h, "binary") for v, h in zip(sizes[1:-1], sizes[2:])]
    model = DBN(layers, input_shape=input_shape, chains=_chains(cfg), layer_steps=cfg.layer_steps,
                sample_steps=cfg.sample_steps)
    model._state["learn_sigma"] = cfg.learn_sigma and cfg.visible == "gaussian"
    return model


MODEL_KINDS.register("rbm")({"family": "rbm"})
MODEL_KINDS.register("dbn")({"family": "dbn"})
FAMILIES.register("rbm")(Family(
    config=RBMConfig, build=build_rbm, model_class=RBM,
    examples=(
        {"model": {"kind": "rbm", "hidden": 6, "cd_steps": 2, "persistent": True, "sample_steps": 5},
         "data": {"name": "digits", "binarize": "static", "limit": 200}},
        {"model": {"kind": "rbm", "visible": "gaussian", "learn_sigma": True, "hidden": 5,
                   "sampler": "mh", "sample_steps": 5}, "input_shape": (6,)},
    ),
    refuses={"sample --eta": r"\beta\b"},  # eta is DDIM's; its chain samplers refuse it by name
))
FAMILIES.register("dbn")(Family(
    config=DBNConfig, build=build_dbn, model_class=DBN,
    examples=(
        {"model": {"kind": "dbn", "hidden": [8, 4], "layer_steps": 1, "persistent": True, "sample_steps": 5},
         "probe_steps": (0, 1),
         "data": {"name": "digits", "binarize": "static", "limit": 200}},
    ),
    refuses={"sample --eta": r"\beta\b"},  # eta is DDIM's; its chain samplers refuse it by name
))

__all__ = ["DBN", "DBNConfig", "RBM", "RBMConfig", "build_dbn", "build_rbm"]
