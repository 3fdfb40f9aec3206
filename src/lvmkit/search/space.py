"""A search space: a base experiment plus a ``[search]`` table of parameters to sample.

A space file is an ordinary experiment TOML file (``[data]``, ``[model]``, ``[train]``...)
with one more table::

    [search]
    objective = "val_loss"        # a key of the run's metrics records
    direction = "minimize"        # or "maximize"
    [search.params]
    "model.latent_dim" = {type = "int", low = 2, high = 16, log = true}
    "train.lr" = {type = "float", low = 1e-4, high = 1e-2, log = true}
    "model.hidden" = {type = "categorical", choices = [[64], [128, 64]]}

Each parameter type is an object (:data:`PARAM_TYPES` resolves the ``type`` names once); a
trial's sampled values become ``--set``-style overrides of the base experiment.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmkit.core import _toml
from lvmkit.core.config import apply_overrides, make_config, read_toml
from lvmkit.core.errors import ConfigError


def _number(name: str, spec: dict[str, Any], key: str, kind: type) -> Any:
    if key not in spec:
        raise ConfigError(f"Search parameter {name!r} needs {key!r}; write e.g. {{type = {spec['type']!r}, low = 1, high = 8}}.")
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        raise ConfigError(f"Search parameter {name!r} needs a {kind.__name__} {key}, got {v!r}; fix the [search.params] entry.")
    return v


def _check_keys(name: str, spec: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(spec) - set(allowed) - {"type"})
    if extra:
        raise ConfigError(f"Search parameter {name!r} has unknown key {extra[0]!r}; valid keys for type "
                          f"{spec['type']!r} are: {', '.join(allowed)}.")


@dataclass(frozen=True)
class Range:
    """An ``int`` or ``float`` parameter in [low, high], uniform or log-uniform."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> "Range":
        _check_keys(name, spec, ("low", "high", "log"))
        kind = int if spec["type"] == "int" else float
        low, high = _number(name, spec, "low", kind), _number(name, spec, "high", kind)
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"Search parameter {name!r} needs log = true or false, got {log!r}.")
        if not low < high:
            raise ConfigError(f"Search parameter {name!r} needs low < high, got low = {low!r} and high = {high!r}; swap or widen them.")
        if log and low <= 0:
            raise ConfigError(f"Search parameter {name!r} is log-scaled but low = {low!r} is not positive; use low > 0 or log = false.")
        return cls(name, low, high, log, kind is int)

    def suggest(self, trial: Any) -> Any:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def examples(self) -> list[Any]:
        return [self.low, self.high]

    def decode(self, raw: Any) -> Any:
        return raw


@dataclass(frozen=True)
class Choice:
    """A categorical parameter. Optuna stores only scalars, so lists (``[128, 64]``) are sampled
    by their TOML text and decoded back."""

    name: str
    choices: tuple
    numeric: bool = False  # bools and numbers are ranked against the objective in the report

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> "Choice":
        _check_keys(name, spec, ("choices",))
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"Search parameter {name!r} needs a non-empty list of choices, got {choices!r}; "
                              "write e.g. choices = [[64], [128, 64]].")
        return cls(name, tuple(choices))

    @property
    def _labels(self) -> dict[Any, Any]:
        if all(isinstance(c, (bool, int, float, str)) for c in self.choices):
            return {c: c for c in self.choices}
        return {_toml._value(c): c for c in self.choices}

    def suggest(self, trial: Any) -> Any:
        return self.decode(trial.suggest_categorical(self.name, list(self._labels)))

    def examples(self) -> list[Any]:
        return list(self.choices)

    def decode(self, raw: Any) -> Any:
        return self._labels[raw]


def _bool(name: str, spec: dict[str, Any]) -> Choice:
    _check_keys(name, spec, ())
    return Choice(name, (False, True), numeric=True)


@dataclass(frozen=True)
class Fixed:
    """A value set in every trial (never sampled)."""

    name: str
    value: Any

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> "Fixed":
        _check_keys(name, spec, ("value",))
        if "value" not in spec:
            raise ConfigError(f"Search parameter {name!r} of type 'fixed' needs a value; write e.g. {{type = \"fixed\", value = 8}}.")
        return cls(name, spec["value"])

    def suggest(self, trial: Any) -> Any:
        return self.value

    def examples(self) -> list[Any]:
        return [self.value]


#: ``type`` names of ``[search.params]`` entries and what builds each.
PARAM_TYPES = {"int": Range.from_spec, "float": Range.from_spec, "categorical": Choice.from_spec, "bool": _bool,
               "fixed": Fixed.from_spec}
_SEARCH_KEYS = ("objective", "direction", "params", "trials", "sampler", "prune")
SAMPLERS = ("random", "tpe")


def _parse_param(name: str, spec: Any) -> Range | Choice | Fixed:
    if not isinstance(spec, dict):
        raise ConfigError(f"Search parameter {name!r} must be a table such as {{type = \"int\", low = 2, high = 16}}, got {spec!r}.")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"Search parameter {name!r} has unknown type {kind!r}; valid types are: {', '.join(PARAM_TYPES)}.")
    return PARAM_TYPES[kind](name, spec)


def _override(key: str, value: Any) -> str:
    return f"{key}={_toml._value(value)}"


@dataclass
class SearchSpace:
    """A base experiment (a dict, without ``[search]``) and the parameters to sample in it."""

    base: dict[str, Any]
    params: dict[str, Range | Choice | Fixed]
    objective: str = "val_loss"
    direction: str = "minimize"
    trials: int = 20
    sampler: str = "random"
    prune: bool = True
    seed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.seed = make_config(self.base).train.seed

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest every parameter on an optuna trial; returns ``{config key: value}``."""
        return {name: p.suggest(trial) for name, p in self.params.items()}

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config values of a stored trial's optuna ``params`` (fixed parameters included)."""
        return {name: (p.value if isinstance(p, Fixed) else p.decode(params[name])) for name, p in self.params.items()}

    def document(self, values: dict[str, Any]) -> dict[str, Any]:
        """The base experiment with ``values`` applied (a dict, not yet validated)."""
        return apply_overrides(self.base, [_override(k, v) for k, v in values.items()])

    def check(self) -> None:
        """Build the experiment config with each parameter at its bounds or choices, so a key the
        config rejects fails before any trial runs."""
        for name, p in self.params.items():
            for v in p.examples():
                try:
                    make_config(self.document({name: v}))
                except ConfigError as err:
                    raise ConfigError(f"Search parameter {name!r} = {v!r} is rejected by the experiment config: "
                                      f"{str(err).rstrip('.')}.") from None


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # [search.params.model] latent_dim = {...} (a table without "type") means "model.latent_dim".
    out = {}
    for key, spec in raw.items():
        if isinstance(spec, dict) and "type" not in spec and spec and all(isinstance(v, dict) for v in spec.values()):
            out.update(_flatten(spec, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = spec
    return out


def parse_space(doc: dict[str, Any]) -> SearchSpace:
    """Validate a space document (an experiment dict with a ``[search]`` table)."""
    doc = copy.deepcopy(doc)
    search = doc.pop("search", None)
    if not isinstance(search, dict):
        raise ConfigError("The space file has no [search] table; add one with objective, direction and [search.params].")
    extra = sorted(set(search) - set(_SEARCH_KEYS))
    if extra:
        raise ConfigError(f"Unknown key {extra[0]!r} in [search]; valid keys are: {', '.join(_SEARCH_KEYS)}.")
    objective = search.get("objective", "val_loss")
    if not isinstance(objective, str) or not objective:
        raise ConfigError(f"search.objective must be a metrics key such as 'val_loss', got {objective!r}.")
    direction = search.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"search.direction must be 'minimize' or 'maximize', got {direction!r}.")
    trials = search.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"search.trials must be a positive integer, got {trials!r}.")
    sampler = search.get("sampler", "random")
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler must be one of: {', '.join(SAMPLERS)}; got {sampler!r}.")
    prune = search.get("prune", True)
    if not isinstance(prune, bool):
        raise ConfigError(f"search.prune must be true or false, got {prune!r}.")
    raw = search.get("params", {})
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("The [search.params] table is empty; add entries such as \"model.latent_dim\" = {type = \"int\", low = 2, high = 16}.")
    params = {}
    for name, spec in _flatten(raw).items():
        if len(name.split(".")) < 2 or not all(name.split(".")):
            raise ConfigError(f"Search parameter {name!r} is not a dotted config key; write e.g. \"model.latent_dim\" (quoted).")
        params[name] = _parse_param(name, spec)
    try:
        make_config(doc)
    except ConfigError as err:
        raise ConfigError(f"The base experiment of the space is invalid: {str(err).rstrip('.')}.") from None
    space = SearchSpace(doc, params, objective, direction, trials, sampler, prune)
    space.check()
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space TOML file (see the module docstring).

    Raises:
        ConfigError: the file, the base experiment or a ``[search]`` entry is invalid.
    """
    return parse_space(read_toml(path))


def is_numeric(p: Range | Choice | Fixed) -> bool:
    """Whether a parameter's values can be ranked (ints, floats, bools, numeric choices)."""
    if isinstance(p, Range):
        return True
    if isinstance(p, Choice):
        return p.numeric or all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p.choices)
    return False
