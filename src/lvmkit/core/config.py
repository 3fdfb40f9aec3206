"""Typed experiment configuration: one TOML file, ``--set section.key=value`` overrides.

Every section forbids unknown keys, so a typo is an error naming the valid keys rather than a
silently ignored setting. :func:`load_config` is the only place strings from a file or the
command line enter; everything downstream receives validated objects.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from lvmkit.core import _toml
from lvmkit.core.errors import ConfigError


class Section(BaseModel):
    """A config table: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_Section = Section


class DataConfig(_Section):
    """Which data, where from, and how it is split and preprocessed."""

    name: str = "digits"
    path: Optional[str] = None
    x_key: str = "x"
    y_key: str = "y"
    binarize: Literal["none", "static", "dynamic"] = "none"
    # Fitted on the training split (lvmkit.data.scaling); unset: "global" for images, "minmax"
    # per feature for tables, the source's own for packed series.
    scale: Optional[Literal["minmax", "standard", "global", "none"]] = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    limit: Optional[int] = Field(None, gt=0)
    # One-class protocol: train and validate on this class alone. With anomaly_split, the
    # normal examples are split by the fractions and every other example goes to the test set
    # (the fraud detector of the ML lectures); without it the test split is a random share.
    normal_class: Optional[int] = None
    anomaly_split: bool = False
    # Tables (data.name = "csv"): the label column and columns to ignore.
    label_column: Optional[str] = None
    drop_columns: list[str] = Field(default_factory=list)
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
    # Streaming (lvmkit.data.stream): HDF5, .npy and uncompressed .npz files read in shuffled
    # chunks with bounded memory. "auto": stream when the data as float32 would take more than
    # stream_above_mb MiB. stream_chunk: consecutive examples per chunk (None: about 16 MiB);
    # stream_buffer: chunks shuffled together; stream_sample: examples of a streamed split that
    # split.x holds (model.update, analyses). strict: a chunk holding NaN or infinite values
    # stops loading instead of being skipped and counted.
    stream: Union[bool, Literal["auto"]] = "auto"
    stream_above_mb: float = Field(4096.0, gt=0.0)
    stream_chunk: Optional[int] = Field(None, gt=0)
    stream_buffer: int = Field(4, gt=0)
    stream_sample: int = Field(2048, gt=0)
    strict: bool = False

    @field_validator("stream", mode="before")
    @classmethod
    def _stream_value(cls, v: Any) -> Any:
        if not isinstance(v, bool) and v != "auto":
            raise ConfigError(f"data.stream must be true, false or 'auto'; got {v!r}.")
        return v


class ModelConfig(_Section):
    """The fields every family's config has; each family subclasses it next to its code and
    registers it with :class:`lvmkit.core.contract.Family`. ``[model]`` is validated against the
    config of the family its ``kind`` resolves to, so a key that family does not use is an error
    listing the keys it does use. Fields a family leaves ``None`` are filled from the preset
    named by ``kind`` (:data:`lvmkit.core.kinds.MODEL_KINDS`)."""

    kind: str = "vae"
    family: Optional[str] = None

    @model_validator(mode="after")
    def _fill_from_kind(self) -> "ModelConfig":
        from lvmkit.core.kinds import FALLBACKS, MODEL_KINDS

        preset = MODEL_KINDS.get(self.kind)
        for key in type(self).model_fields:
            if getattr(self, key) is None and (key in preset or key in FALLBACKS):
                object.__setattr__(self, key, preset.get(key, FALLBACKS.get(key)))  # no re-validation loop
        return self


class OptimGroupConfig(_Section):
    """``[train.optim.GROUP]``: the optimizer of one parameter group and the keys it sets
    (see :mod:`lvmkit.core.optim`); unset keys come from ``[train]`` and the family."""

    optimizer: Optional[str] = None
    lr: Optional[float] = Field(None, gt=0.0)
    weight_decay: Optional[float] = Field(None, ge=0.0)
    betas: Optional[tuple[float, float]] = None
    eps: Optional[float] = Field(None, gt=0.0)
    amsgrad: Optional[bool] = None
    momentum: Optional[float] = Field(None, ge=0.0)
    nesterov: Optional[bool] = None
    dampening: Optional[float] = Field(None, ge=0.0)
    alpha: Optional[float] = Field(None, gt=0.0)
    centered: Optional[bool] = None
    lr_decay: Optional[float] = Field(None, ge=0.0)
    rho: Optional[float] = Field(None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _keys_fit_optimizer(self):
        if self.optimizer is not None:
            from lvmkit.core.optim import OPTIMIZER_KEYS, check_keys

            check_keys(self.optimizer, {k: 1 for k in OPTIMIZER_KEYS if getattr(self, k) is not None}, "[train.optim.GROUP]")
        return self


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: Any, name: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, or hours/minutes/seconds such as "90s", "60m",
    "1h30m", "2h"; a ConfigError naming the accepted forms otherwise (and for zero)."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            m = _DURATION.match(text)
            if m and any(m.groups()):
                h, mi, se = (float(g) if g else 0.0 for g in m.groups())
                seconds = 3600 * h + 60 * mi + se
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} must be a positive duration such as \"90s\", \"60m\", \"1h30m\", \"2h\" or a number "
                          f"of seconds; got {value!r}.")
    return seconds


class TrainConfig(OptimGroupConfig):
    """The one training loop's settings: optimizer (for every group, with per-group overrides
    in ``[train.optim.GROUP]``), schedule, clipping, EMA, early stopping, device."""

    optimizer: Optional[str] = None  # None: the family's (optimizer_defaults), else adam
    epochs: int = Field(20, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(128, gt=0)
    # "cosine": the learning rate falls from lr towards lr * lr_final over the planned steps
    # (epochs x batches per epoch, or max_steps if fewer); early stopping may end it sooner.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final: float = Field(0.01, gt=0.0, le=1.0)
    # Linear learning-rate warm-up from 0 over this many steps, before the schedule (0: none).
    lr_warmup: int = Field(0, ge=0)
    grad_clip: float = Field(100.0, ge=0.0)
    patience: int = Field(10, ge=0)
    # Exponential moving average of the weights after every step (0: off); sampling and
    # evaluation then use the averaged weights.
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    # The average copies the weights for ema_start steps, then its decay grows with the steps u
    # since, min(ema_decay, (1 + u) / (10 + u)): a short run's average neither keeps the
    # initialisation nor lags behind a fast-improving model. false: ema_decay from the first step.
    ema_warmup: bool = True
    ema_start: int = Field(1000, ge=0)
    # Wall-time budget of one train (or resume) invocation: "90s", "60m", "1h30m", "2h" or
    # seconds. The run ends at the last finished epoch, checkpointed and reported; resume goes on.
    time_limit: Optional[Union[float, str]] = None
    # Generators on images: 16 samples from fixed noise every this many epochs (0: never;
    # unset: every epoch up to 50 epochs, then about 50 grids in all), for the report.
    sample_every: Optional[int] = Field(None, ge=0)
    seed: int = 0
    device: str = "auto"
    # Training arithmetic: fp32, bf16 (autocast) or fp16 (autocast with a gradient scaler; GPUs only).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory layout for convolutional networks (faster on GPUs)
    # torch.compile the model: true (the default backend, inductor) or a backend's name; false: off
    compile: Union[bool, str] = False
    threads: Optional[int] = Field(None, gt=0)
    optim: dict[str, OptimGroupConfig] = Field(default_factory=dict)

    @field_validator("time_limit", mode="before")
    @classmethod
    def _parsable_time_limit(cls, value: Optional[Union[float, str]]) -> Optional[Union[float, str]]:
        if value is not None:
            parse_duration(value, "train.time_limit")
        return value

    @property
    def time_limit_seconds(self) -> Optional[float]:
        return None if self.time_limit is None else parse_duration(self.time_limit, "train.time_limit")

    @model_validator(mode="after")
    def _keys_fit_optimizer(self):
        from lvmkit.core.optim import OPTIMIZER_KEYS, check_keys

        if self.optimizer is not None:  # else the family's optimizer checks them when the model is built
            check_keys(self.optimizer, {k: 1 for k in OPTIMIZER_KEYS if getattr(self, k) is not None}, "[train]")
        return self


class EvalConfig(_Section):
    """Evaluation settings: importance samples and batching of the likelihood estimate."""

    k: int = Field(1000, gt=0)
    batch_size: int = Field(100, gt=0)
    max_examples: Optional[int] = Field(None, gt=0)


def _family_config(doc: dict[str, Any]) -> type[ModelConfig]:
    """The config class of the family that ``[model]`` (a dict) describes. Families register
    their configs and kinds when :mod:`lvmkit.models` is imported (``import lvmkit`` does)."""
    from lvmkit.core.contract import FAMILIES
    from lvmkit.core.kinds import MODEL_KINDS

    kind = doc.get("kind", ModelConfig.model_fields["kind"].default)
    if not isinstance(kind, str):
        raise ConfigError(f"model.kind must be a name such as 'vae' or 'gan', got {kind!r}.")
    family = doc.get("family") or MODEL_KINDS.get(kind)["family"]
    return FAMILIES.get(family).config


class ExperimentConfig(_Section):
    """A whole experiment, as one TOML file describes it. ``model`` is an instance of the
    config class of the family that ``model.kind`` names."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: SerializeAsAny[ModelConfig] = Field(default_factory=lambda: _family_config({})())
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _model_by_family(cls, doc: Any) -> Any:
        if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
            section = doc["model"]
            config_cls = _family_config(section)
            try:
                doc = {**doc, "model": config_cls.model_validate(section)}
            except ValidationError as err:
                raise ConfigError(_explain(err, config_cls, ("model",))) from None
        return doc

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()

    def to_toml(self) -> str:
        return _toml.dumps(self.to_dict())


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _section_class(root: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The config class of the table at ``path`` below ``root`` (None if it is not a table)."""
    import typing

    cls: Any = root
    for part in path:
        if isinstance(part, int):
            continue
        if cls is ExperimentConfig and part in _SECTIONS:
            cls = _SECTIONS[part]
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        args = [a for a in typing.get_args(ann) if isinstance(a, type)] if typing.get_origin(ann) else []
        if typing.get_origin(ann) is dict:  # dict[str, Section]: the next part is a key
            cls = typing.get_args(ann)[1]
            continue
        cls = ann if isinstance(ann, type) else next((a for a in args if issubclass(a, BaseModel)), None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _explain(err: ValidationError, root: type[BaseModel] | None = None, prefix: tuple = ()) -> str:
    first = err.errors()[0]
    loc_t = tuple(first["loc"])
    loc = ".".join(str(p) for p in (*prefix, *loc_t))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    if first["type"] == "extra_forbidden":
        table = _section_class(root or ExperimentConfig, loc_t[:-1])
        where = ".".join(str(p) for p in (*prefix, *loc_t[:-1]))
        if table is ExperimentConfig or (not where and root is None):
            return f"Unknown config section {loc!r}; valid sections are: {', '.join(_SECTIONS)}."
        if table is not None:
            valid = ", ".join(table.model_fields)
            what = ""
            if root is not None and where.startswith("model"):
                from lvmkit.core.contract import FAMILIES

                family = next((n for n in FAMILIES if FAMILIES.get(n).config is root), None)
                what = f"the {family} family's" if family else ""
            hint = ""
            if loc == "train.n_critic":
                hint = " (n_critic belongs to the GAN's own step: set model.n_critic)"
            return f"Unknown config key {loc!r}{hint}; valid keys in {what + ' ' if what else ''}[{where}] are: {valid}."
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


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (any depth) to a nested dict (values parsed as TOML)."""
    import copy

    out = copy.deepcopy(doc)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"Override {item!r} is not of the form section.key=value; "
                "write e.g. --set model.latent_dim=8 or --set train.optim.discriminator.lr=1e-4."
            )
        table = out
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"Config key {'.'.join(parts[: depth + 1])!r} is not a table; cannot set {key!r}.")
        table[parts[-1]] = _toml.parse_scalar(raw.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with one-sentence errors for a missing or invalid file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"Config file {str(p)!r} is a directory; pass the path of a TOML file in it, such as configs/vae_digits.toml.")
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist; pass the path of a TOML file such as configs/vae_digits.toml.")
    try:
        return _toml.load(p)
    except (_toml.tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"Config file {str(p)!r} is not valid TOML ({err}); fix its syntax.") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment TOML file (or defaults when ``path`` is None) and apply overrides."""
    doc = read_toml(path) if path is not None else {}
    return make_config(apply_overrides(doc, overrides or []))


def migrate_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """A run's config.toml written before per-family configs (format 1) listed every model key
    of every family; keep the keys the run's family uses, so old runs still open."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    model = out.get("model")
    if isinstance(model, dict):
        fields = _family_config(model).model_fields
        out["model"] = {k: v for k, v in model.items() if k in fields}
    return out


def migrate(doc: dict[str, Any], config_format: int) -> dict[str, Any]:
    """A run's stored config in today's terms. Format 1: every family's model keys (see
    :func:`migrate_v1`). Format 2: ``data.scale = "minmax"`` meant one range over all features
    (today's ``"global"``) and ``data.name = "csv"`` read long-format series (``"series-csv"``).
    Format 3: the EMA had a fixed decay from the first step (``train.ema_warmup = false``), so
    a resumed run goes on as it began."""
    if config_format < 2:
        doc = migrate_v1(doc)
    if config_format < 3 and isinstance(doc.get("data"), dict):
        doc = dict(doc)
        data = doc["data"] = dict(doc["data"])
        if data.get("scale", "minmax") == "minmax":
            data["scale"] = "global"
        if data.get("name") == "csv":
            data["name"] = "series-csv"
    if config_format < 4:
        doc = dict(doc)
        train = doc["train"] = dict(doc.get("train") or {})
        train.setdefault("ema_warmup", False)
    return doc
