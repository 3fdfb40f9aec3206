"""Model kinds are presets of the same composed parts, not classes.

A kind fills the model fields a config leaves unset; anything set explicitly wins. So a
beta-VAE is ``kind = "vae"`` with ``beta = 4`` just as well as ``kind = "beta-vae"``.
"""
from __future__ import annotations

from typing import Any

from lvmkit.core.registry import Registry

MODEL_KINDS: Registry[dict[str, Any]] = Registry("model kind")

MODEL_KINDS.register("ae")(
    {"family": "autoencoder", "regularizer": "none", "stochastic": False, "corruption": "none", "noise": 0.0}
)
MODEL_KINDS.register("dae")(
    {"family": "autoencoder", "regularizer": "none", "stochastic": False, "corruption": "gaussian", "noise": 0.3}
)
MODEL_KINDS.register("vae")(
    {"family": "autoencoder", "regularizer": "kl", "stochastic": True, "beta": 1.0, "corruption": "none", "noise": 0.0}
)
MODEL_KINDS.register("beta-vae")(
    {"family": "autoencoder", "regularizer": "kl", "stochastic": True, "beta": 4.0, "corruption": "none", "noise": 0.0}
)
# InfoVAE / MMD-VAE (Zhao et al. 2017): reconstruction + lambda * MMD(q(z), p(z)).
MODEL_KINDS.register("infovae")(
    {"family": "autoencoder", "regularizer": "mmd", "stochastic": True, "mmd_weight": 10.0, "corruption": "none", "noise": 0.0}
)

# DEC / DCEC (Xie et al. 2016; Guo et al. 2017): an autoencoder pretrained on reconstruction,
# then trained with a clustering KL term; with model.network = "conv" this is DCEC.
MODEL_KINDS.register("dec")(
    {"family": "autoencoder", "regularizer": "dec", "stochastic": False, "corruption": "none", "noise": 0.0}
)

# Irregular time series (lvmkit.timeseries; data packed as (T, 1 + 2D)). latent-ode: recognition
# GRU -> q(z0), latent ODE, decoder, KL to N(0, I) (Chen et al. 2018; Rubanova et al. 2019).
# rnn: a GRU fed the time gaps, the baseline of Chen et al. table 2. neural-ode: a vector field
# fitted to observed trajectories (seed report sec. 5).
MODEL_KINDS.register("latent-ode")(
    {"family": "latent-ode", "regularizer": "kl", "stochastic": True, "beta": 1.0, "corruption": "none", "noise": 0.0}
)
MODEL_KINDS.register("rnn")(
    {"family": "rnn", "regularizer": "none", "stochastic": False, "corruption": "none", "noise": 0.0}
)
MODEL_KINDS.register("neural-ode")(
    {"family": "neural-ode", "regularizer": "none", "stochastic": False, "corruption": "none", "noise": 0.0}
)

# Values used when neither the config nor the kind sets a field.
FALLBACKS: dict[str, Any] = {"beta": 1.0, "mmd_weight": 10.0}
