"""Typed configs and presets of the time-series families (``[model]`` for kind = latent-ode,
rnn, neural-ode). Every family models real-valued series with a Gaussian observation model."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from lvmkit.core.config import ModelConfig
from lvmkit.core.kinds import MODEL_KINDS


class RNNConfig(ModelConfig):
    """The GRU baseline of Chen et al. 2018, table 2: ``rnn_hidden`` units, a head with ``hidden`` layers."""

    kind: str = "rnn"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [400])
    activation: Literal["relu", "tanh", "elu", "gelu"] = "relu"
    likelihood: str = "gaussian"
    sigma: float = Field(0.1, gt=0.0)
    learn_sigma: bool = False
    rnn_hidden: int = Field(25, gt=0)


class NeuralODEConfig(ModelConfig):
    """Neural ODE regression: a vector field (``vector_field``, ``ode_hidden``) in data space and
    the ODE solver's settings (:mod:`lvmkit.models.timeseries.ode`)."""

    kind: str = "neural-ode"
    activation: Literal["relu", "tanh", "elu", "gelu"] = "relu"
    likelihood: str = "gaussian"
    sigma: float = Field(0.1, gt=0.0)
    learn_sigma: bool = False
    vector_field: str = "mlp"
    ode_hidden: list[PositiveInt] = Field(default_factory=lambda: [20, 20])
    ode_solver: str = "dopri5"
    ode_rtol: float = Field(1e-3, gt=0.0)
    ode_atol: float = Field(1e-4, gt=0.0)
    ode_step: float = Field(0.05, gt=0.0)
    ode_max_steps: int = Field(1000, gt=0)
    ode_adjoint: bool = False


class LatentODEConfig(NeuralODEConfig):
    """The latent ODE: a recognition network (``recognition``, ``rnn_hidden``) for q(z0), the
    latent vector field and solver, a decoder with ``hidden`` layers, and the KL weight ``beta``
    with its linear ``warmup_steps``."""

    kind: str = "latent-ode"
    latent_dim: int = Field(2, gt=0)
    hidden: list[PositiveInt] = Field(default_factory=lambda: [400])
    recognition: str = "gru"
    rnn_hidden: int = Field(25, gt=0)
    beta: float = Field(1.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)


# Irregular time series (data packed as (T, 1 + 2D)). latent-ode: recognition GRU -> q(z0),
# latent ODE, decoder, KL to N(0, I) (Chen et al. 2018; Rubanova et al. 2019). rnn: a GRU fed the
# time gaps, the baseline of Chen et al. table 2. neural-ode: a vector field fitted to observed
# trajectories (seed report sec. 5).
MODEL_KINDS.register("latent-ode")({"family": "latent-ode"})
MODEL_KINDS.register("rnn")({"family": "rnn"})
MODEL_KINDS.register("neural-ode")({"family": "neural-ode"})

# What the conformance suite trains: tiny nets on a tiny spirals set.
TINY_SERIES = {"name": "spirals", "scale": "none", "n_series": 40, "window_points": 20, "observed_points": 12,
               "extrapolate_points": 10}

__all__ = ["LatentODEConfig", "NeuralODEConfig", "RNNConfig", "TINY_SERIES"]
