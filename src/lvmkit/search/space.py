"""A search space: a base experiment plus a ``[search]`` table of parameters to sample.

A space file is an ordinary experiment TOML file (``[data]``, ``[model]``, ``[train]``...)
with one more table::

    [search]
    objective = "val_loss"        # a key of the run's metrics records, or probe_f1 (search.objectives)
    direction = "minimize"        # or "maximize"
    heartbeat = 60                # seconds between a worker's heartbeats (optuna's RDB heartbeat)
    grace_period = 180            # a trial whose heartbeat is older is failed and retried once
    [search.params]
    "model.latent_dim" = {type = "int", low = 2, high = 16, log = true}
    "train.lr" = {type = "float", low = 1e-4, high = 1e-2, log = true}
    "model.hidden" = {type = "categorical", choices = [[64], [128, 64]]}
    "train.betas[0]" = {type = "float", low = 0.2, high = 0.95}   # one entry of a list the base sets
    [search.params.conv]          # per-layer lists with a sampled number of layers
    type = "layers"
    layers = {low = 3, high = 6}
    "model.kernels" = {type = "categorical", choices = [3, 5, 7, 11], order = "descending"}
    "model.channels" = {type = "int", low = 4, high = 32, log = true}

Each parameter type is an object (:data:`PARAM_TYPES` resolves the ``type`` names once); a
trial's sampled values become ``--set``-style overrides of the base experiment.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lvmkit.core import _toml
from lvmkit.core.config import apply_overrides, make_config, read_toml
from lvmkit.core.errors import ConfigError
from lvmkit.search.objectives import OPTIONS, Objective, make_objective


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


@dataclass(frozen=True)
class Layers:
    """Per-layer lists of several keys sharing one sampled number of layers (Table 4.1 of Solli
    2019: kernels, strides and filters are "sets of integers" of a searched length). ``layers``
    is the number of layers (an int range); every other entry is an int, float or categorical
    drawn once per layer, optionally sorted (``order = "descending"``: larger kernels first). The
    label (the table's name) is not a config key; optuna sees ``LABEL.layers`` and ``KEY[i]``."""

    name: str
    count: Range
    entries: tuple[tuple[str, Range | Choice, str | None], ...]

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> "Layers":
        spec = {k: v for k, v in spec.items() if k != "type"}
        count = spec.pop("layers", None)
        if not isinstance(count, dict):
            raise ConfigError(f"Search parameter {name!r} of type 'layers' needs the number of layers; write e.g. "
                              "layers = {low = 3, high = 6}.")
        count = Range.from_spec(f"{name}.layers", {"type": "int", **count})
        if count.low < 1:
            raise ConfigError(f"Search parameter {name!r} needs at least one layer, got layers.low = {count.low}.")
        entries = []
        for key, sub in _flatten(spec).items():
            if not isinstance(sub, dict) or sub.get("type") not in ("int", "float", "categorical"):
                raise ConfigError(f"Entry {key!r} of layers parameter {name!r} must be an int, float or categorical table "
                                  "such as {type = \"int\", low = 4, high = 32, log = true}, got " + f"{sub!r}.")
            sub = dict(sub)
            order = sub.pop("order", None)
            if order not in (None, "ascending", "descending"):
                raise ConfigError(f"Entry {key!r} of layers parameter {name!r} has order = {order!r}; use 'ascending' or "
                                  "'descending', or leave it out.")
            _check_dotted(key)
            entries.append((key, _parse_param(key, sub), order))
        if not entries:
            raise ConfigError(f"Layers parameter {name!r} sets no key; add entries such as \"model.kernels\" = "
                              "{type = \"categorical\", choices = [3, 5, 7]}.")
        return cls(name, count, tuple(entries))

    def _lists(self, n: int, draw) -> dict[str, list]:
        out = {}
        for key, p, order in self.entries:
            values = [draw(replace(p, name=f"{key}[{i}]")) for i in range(n)]
            out[key] = sorted(values, reverse=order == "descending") if order else values
        return out

    def suggest(self, trial: Any) -> dict[str, list]:
        return self._lists(self.count.suggest(trial), lambda p: p.suggest(trial))

    def decode(self, params: dict[str, Any]) -> dict[str, list]:
        return self._lists(int(params[self.count.name]), lambda p: p.decode(params[p.name]))

    def examples(self) -> list[dict[str, list]]:
        return [{key: [p.examples()[end]] * int(n) for key, p, _ in self.entries}
                for n, end in ((self.count.low, 0), (self.count.high, -1))]

    def summaries(self, values: dict[str, Any]) -> dict[str, float]:
        """Numbers to rank against the objective: the number of layers and each numeric entry's
        largest value (the thesis's "N layers" and "largest kernel", Table 4.5)."""
        first = values[self.entries[0][0]]
        out = {f"{self.name}.layers": float(len(first))}
        for key, p, _ in self.entries:
            if is_numeric(p):
                out[f"max {key}"] = float(max(values[key]))
        return out


#: ``type`` names of ``[search.params]`` entries and what builds each.
PARAM_TYPES = {"int": Range.from_spec, "float": Range.from_spec, "categorical": Choice.from_spec, "bool": _bool,
               "fixed": Fixed.from_spec, "layers": Layers.from_spec}
_SEARCH_KEYS = ("objective", "direction", "params", "trials", "sampler", "prune", "heartbeat", "grace_period", *OPTIONS)
SAMPLERS = ("random", "tpe")
# "train.betas[0]": one entry of a list the base experiment sets.
_INDEXED = re.compile(r"(.+)\[(\d+)\]")


def _check_dotted(name: str) -> None:
    key = _INDEXED.fullmatch(name)[1] if _INDEXED.fullmatch(name) else name
    if len(key.split(".")) < 2 or not all(key.split(".")):
        raise ConfigError(f"Search parameter {name!r} is not a dotted config key; write e.g. \"model.latent_dim\" (quoted).")


def _parse_param(name: str, spec: Any) -> Range | Choice | Fixed | Layers:
    if not isinstance(spec, dict):
        raise ConfigError(f"Search parameter {name!r} must be a table such as {{type = \"int\", low = 2, high = 16}}, got {spec!r}.")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"Search parameter {name!r} has unknown type {kind!r}; valid types are: {', '.join(PARAM_TYPES)}.")
    return PARAM_TYPES[kind](name, spec)


def _override(key: str, value: Any) -> str:
    return f"{key}={_toml._value(value)}"


def _set_entries(doc: dict[str, Any], key: str, entries: dict[int, Any]) -> None:
    *path, last = key.split(".")
    table = doc
    for part in path:
        table = table.get(part) if isinstance(table, dict) else None
    current = table.get(last) if isinstance(table, dict) else None
    index = max(entries)
    if not isinstance(current, list):
        raise ConfigError(f"Search parameter '{key}[{index}]' sets one entry of {key}, but the base experiment does not set "
                          f"{key} to a list; add it, e.g. betas = [0.9, 0.999] under [train] for 'train.betas[0]'.")
    if index >= len(current):
        raise ConfigError(f"Search parameter '{key}[{index}]' is past the end of {key} = {current!r} in the base experiment "
                          f"(entries 0 to {len(current) - 1}).")
    table[last] = [entries.get(i, v) for i, v in enumerate(current)]


@dataclass
class SearchSpace:
    """A base experiment (a dict, without ``[search]``) and the parameters to sample in it.
    ``metric`` is the objective ``objective`` (with ``options``) names, resolved once."""

    base: dict[str, Any]
    params: dict[str, Range | Choice | Fixed | Layers]
    objective: str = "val_loss"
    direction: str = "minimize"
    trials: int = 20
    sampler: str = "random"
    prune: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    heartbeat: float = 60.0
    grace_period: float = 180.0
    seed: int = field(init=False, default=0)
    metric: Objective = field(init=False)

    def __post_init__(self) -> None:
        self.seed = make_config(self.base).train.seed
        self.metric = make_objective(self.objective, self.options)

    def keys(self) -> list[str]:
        """The config keys a trial sets (a layers parameter sets several)."""
        return [k for name, p in self.params.items() for k in ([e[0] for e in p.entries] if isinstance(p, Layers) else [name])]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest every parameter on an optuna trial; returns ``{config key: value}``."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            v = p.suggest(trial)
            out.update(v if isinstance(p, Layers) else {name: v})
        return out

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config values of a stored trial's optuna ``params`` (fixed parameters included)."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, Layers):
                out.update(p.decode(params))
            else:
                out[name] = p.value if isinstance(p, Fixed) else p.decode(params[name])
        return out

    def sampled(self, params: dict[str, Any]) -> bool:
        """Whether a stored trial's optuna ``params`` hold every sampled parameter (a trial that
        failed before sampling holds fewer)."""
        try:
            self.values(params)
            return True
        except KeyError:
            return False

    def summaries(self, values: dict[str, Any]) -> dict[str, float]:
        """The numbers of one trial's ``values`` that can be ranked against the objective."""
        out: dict[str, float] = {}
        for name, p in self.params.items():
            if isinstance(p, Layers):
                out.update(p.summaries(values))
            elif is_numeric(p):
                out[name] = float(values[name])
        return out

    def document(self, values: dict[str, Any]) -> dict[str, Any]:
        """The base experiment with ``values`` applied (a dict, not yet validated)."""
        plain = {k: v for k, v in values.items() if not _INDEXED.fullmatch(k)}
        doc = apply_overrides(self.base, [_override(k, v) for k, v in plain.items()])
        entries: dict[str, dict[int, Any]] = {}
        for k, v in values.items():
            if (m := _INDEXED.fullmatch(k)):
                entries.setdefault(m[1], {})[int(m[2])] = v
        for key, items in entries.items():
            _set_entries(doc, key, items)
        return doc

    def check(self) -> None:
        """Build the experiment config with each parameter at its bounds or choices, so a key the
        config rejects fails before any trial runs."""
        for name, p in self.params.items():
            for v in p.examples():
                try:
                    make_config(self.document(v if isinstance(p, Layers) else {name: v}))
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


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"search.{key} must be a positive number of seconds, got {value!r}; write e.g. {key} = 60.")
    return float(value)


def _heartbeat(search: dict[str, Any]) -> tuple[float, float]:
    # Trials last minutes: a beat a minute costs nothing, and a dead worker's trial is noticed
    # (failed and retried) three minutes after its last beat, two missed beats being tolerated.
    heartbeat = _seconds("heartbeat", search.get("heartbeat", 60))
    grace = _seconds("grace_period", search.get("grace_period", 3 * heartbeat))
    if grace <= heartbeat:
        raise ConfigError(f"search.grace_period = {grace:g} s is not longer than search.heartbeat = {heartbeat:g} s, so a "
                          f"live worker's trial would be failed between two beats; use e.g. grace_period = {3 * heartbeat:g}.")
    return heartbeat, grace


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
    options = {k: search[k] for k in OPTIONS if k in search}
    metric = make_objective(objective, options)
    direction = search.get("direction", metric.direction or "minimize")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"search.direction must be 'minimize' or 'maximize', got {direction!r}.")
    if metric.direction and direction != metric.direction:
        raise ConfigError(f"search.objective {objective!r} is a score to {metric.direction}, but search.direction = "
                          f"{direction!r}; set direction = {metric.direction!r} or leave it out.")
    trials = search.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"search.trials must be a positive integer, got {trials!r}.")
    sampler = search.get("sampler", "random")
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler must be one of: {', '.join(SAMPLERS)}; got {sampler!r}.")
    prune = search.get("prune", metric.per_epoch)
    if not isinstance(prune, bool):
        raise ConfigError(f"search.prune must be true or false, got {prune!r}.")
    if prune and not metric.per_epoch:
        raise ConfigError(f"search.prune needs an objective reported every epoch, but {objective!r} is computed once after "
                          "training; remove search.prune or set it to false.")
    heartbeat, grace = _heartbeat(search)
    raw = search.get("params", {})
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("The [search.params] table is empty; add entries such as \"model.latent_dim\" = {type = \"int\", low = 2, high = 16}.")
    params = {}
    for name, spec in _flatten(raw).items():
        if not (isinstance(spec, dict) and spec.get("type") == "layers"):  # a layers table's name is a label
            _check_dotted(name)
        params[name] = _parse_param(name, spec)
    try:
        make_config(doc)
    except ConfigError as err:
        raise ConfigError(f"The base experiment of the space is invalid: {str(err).rstrip('.')}.") from None
    space = SearchSpace(doc, params, objective, direction, trials, sampler, prune, options, heartbeat, grace)
    space.check()
    return space


def load_space(path: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Read and validate a space TOML file (see the module docstring); ``overrides`` are
    ``--set``-style ``key=value`` strings applied to the file first (``train.epochs=2``,
    ``search.objective_labels=10``).

    Raises:
        ConfigError: the file, an override, the base experiment or a ``[search]`` entry is invalid.
    """
    return parse_space(apply_overrides(read_toml(path), list(overrides or [])))


def is_numeric(p: Range | Choice | Fixed | Layers) -> bool:
    """Whether a parameter's values can be ranked (ints, floats, bools, numeric choices)."""
    if isinstance(p, Range):
        return True
    if isinstance(p, Choice):
        return p.numeric or all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p.choices)
    return False
