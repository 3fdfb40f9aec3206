"""Typed experiment configuration: one TOML file, ``--set section.key=value`` overrides.

Every section forbids unknown keys, so a typo is an error naming the valid keys rather than a
silently ignored setting. :func:`load_config` is the only place strings from a file or the
command line enter; everything downstream receives validated objects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from lvmkit.core import _toml
from lvmkit.core.errors import ConfigError
from lvmkit.models.kinds import FALLBACKS, MODEL_KINDS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which data, where from, and how it is split and preprocessed."""

    name: str = "digits"
    path: Optional[str] = None
    x_key: str = "x"
    y_key: str = "y"
    binarize: Literal["none", "static", "dynamic"] = "none"
    scale: Literal["minmax", "none"] = "minmax"
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    limit: Optional[int] = Field(None, gt=0)
    normal_class: Optional[int] = None
    # Time series (lvmkit.timeseries): simulators' sizes (None = the source's own default) and
    # the long-format CSV reader's columns and held-out targets.
    n_series: Optional[int] = Field(None, gt=0)
    window_points: Optional[int] = Field(None, ge=2)
    observed_points: Optional[int] = Field(None, ge=2)
    extrapolate_points: Optional[int] = Field(None, ge=0)
    obs_noise: Optional[float] = Field(None, ge=0.0)
    curve_points: Optional[int] = Field(None, ge=10)
    id_column: str = "id"
    time_column: str = "time"
    features: Optional[list[str]] = None
    time_scale: Optional[float] = Field(None, gt=0.0)
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    extrapolate_fraction: float = Field(0.0, ge=0.0, lt=1.0)


class ModelConfig(_Section):
    """The composed parts: networks, latent regularizer, input corruption, likelihood.

    Fields left as ``None`` are filled from the preset named by ``kind`` (see
    :mod:`lvmkit.kinds`).
    """

    kind: str = "vae"
    family: Optional[str] = None
    latent_dim: int = Field(2, gt=0)
    network: str = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [400])
    channels: list[int] = Field(default_factory=lambda: [32, 64])
    activation: Literal["relu", "tanh", "elu", "gelu"] = "relu"
    likelihood: str = "bernoulli"
    sigma: float = Field(0.1, gt=0.0)
    learn_sigma: bool = False
    regularizer: Optional[str] = None
    stochastic: Optional[bool] = None
    beta: Optional[float] = Field(None, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    mmd_weight: Optional[float] = Field(None, ge=0.0)
    mmd_kernel: Literal["imq", "rbf"] = "imq"
    mmd_scale: float = Field(1.0, gt=0.0)
    corruption: Optional[str] = None
    noise: Optional[float] = Field(None, ge=0.0, le=1.0)
    clusters: int = Field(10, ge=2)
    gamma: float = Field(0.1, ge=0.0)
    pretrain_steps: int = Field(1000, ge=0)
    dec_interval: int = Field(140, gt=0)
    dec_tol: float = Field(0.001, ge=0.0, le=1.0)
    # Time-series families (latent-ode, rnn, neural-ode): ODE solver (lvmkit.ode), dynamics and
    # recognition networks; the decoder uses ``hidden``, the KL term ``beta`` and ``warmup_steps``.
    ode_solver: str = "dopri5"
    ode_rtol: float = Field(1e-3, gt=0.0)
    ode_atol: float = Field(1e-4, gt=0.0)
    ode_step: float = Field(0.05, gt=0.0)
    ode_max_steps: int = Field(1000, gt=0)
    ode_adjoint: bool = False
    ode_hidden: list[PositiveInt] = Field(default_factory=lambda: [20, 20])
    rnn_hidden: int = Field(25, gt=0)
    recognition: str = "gru"
    vector_field: str = "mlp"

    @model_validator(mode="after")
    def _fill_from_kind(self) -> "ModelConfig":
        preset = MODEL_KINDS.get(self.kind)
        for key in ("family", "regularizer", "stochastic", "beta", "mmd_weight", "corruption", "noise"):
            if getattr(self, key) is None:
                value = preset.get(key, FALLBACKS.get(key))
                object.__setattr__(self, key, value)  # no re-validation loop
        if any(h <= 0 for h in self.hidden) or any(c <= 0 for c in self.channels):
            raise ValueError("hidden and channels must hold positive sizes")
        if self.regularizer == "kl" and not self.stochastic:
            raise ValueError(
                "regularizer 'kl' needs a stochastic encoder; set model.stochastic = true "
                "or choose model.regularizer = 'none'"
            )
        return self


class TrainConfig(_Section):
    """The one training loop's settings (Adam, clipping, early stopping, device)."""

    epochs: int = Field(20, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0.0)
    # "cosine": the learning rate falls from lr towards lr * lr_final over the planned steps
    # (epochs x batches per epoch, or max_steps if fewer); early stopping may end it sooner.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final: float = Field(0.01, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(100.0, ge=0.0)
    patience: int = Field(10, ge=0)
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = Field(None, gt=0)


class EvalConfig(_Section):
    """Evaluation settings: importance samples and batching of the likelihood estimate."""

    k: int = Field(1000, gt=0)
    batch_size: int = Field(100, gt=0)
    max_examples: Optional[int] = Field(None, gt=0)


class ExperimentConfig(_Section):
    """A whole experiment, as one TOML file describes it."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()

    def to_toml(self) -> str:
        return _toml.dumps(self.to_dict())


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        section = str(first["loc"][0]) if len(first["loc"]) > 1 else None
        if section in _SECTIONS:
            valid = ", ".join(_SECTIONS[section].model_fields)
            return f"Unknown config key {loc!r}; valid keys in [{section}] are: {valid}."
        return f"Unknown config section {loc!r}; valid sections are: {', '.join(_SECTIONS)}."
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    msg = first["msg"].removeprefix("Value error, ")
    if cause is not None:  # a cross-field check: the input is the whole section
        where = f"[{loc}]" if loc else "the configuration"
        return f"Invalid {where}: {msg}."
    if not loc:
        return f"Invalid configuration: {msg}."
    got = first.get("input")
    return f"Invalid value for {loc!r}: {msg} (got {got!r}); fix the config file or the --set option."


def make_config(doc: dict[str, Any] | None = None) -> ExperimentConfig:
    """Validate a nested dict into an :class:`ExperimentConfig`, raising :class:`ConfigError`."""
    try:
        return ExperimentConfig.model_validate(doc or {})
    except ValidationError as err:
        raise ConfigError(_explain(err)) from None
    except ConfigError:
        raise


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (values parsed as TOML)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in doc.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"Override {item!r} is not of the form section.key=value; "
                "write e.g. --set model.latent_dim=8."
            )
        section, field = parts
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"Config section {section!r} is not a table; cannot set {key!r}.")
        table[field] = _toml.parse_scalar(raw.strip())
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment TOML file (or defaults when ``path`` is None) and apply overrides."""
    doc: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file {str(p)!r} does not exist; pass the path of a TOML file such as configs/vae_digits.toml.")
        try:
            doc = _toml.load(p)
        except (_toml.tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"Config file {str(p)!r} is not valid TOML ({err}); fix its syntax.") from None
    return make_config(apply_overrides(doc, overrides or []))
