"""What a search trial is scored by, and the split each number comes from.

``search.objective`` names either a key of the per-epoch metrics record (``val_loss``,
``val_kl``...: the selected epoch's value, reported every epoch so trials can be pruned) or a
metric computed once from the trained run:

    probe_f1   f1 of class ``search.objective_class`` (a label or a class name) of a logistic-
               regression probe on the codes, fitted on ``search.objective_labels`` labelled
               examples per class drawn from the training split and scored on the validation
               split; the mean over ``search.objective_repeats`` draws.

Selection never sees the test split (issue 14, item 6): a ``test_*`` objective is refused, and
:meth:`Objective.measure` on the test split is for the selected configuration only
(``lvmkit repeat``). AUROC is not offered: a one-class run validates on the normal class alone
(``data.normal_class``) and keeps its anomalies in the test split.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from lvmkit.core.config import ExperimentConfig
from lvmkit.core.errors import ConfigError
from lvmkit.data import Dataset

#: where a split's numbers come from, in the words the reports use
SPLITS = {"train": "training", "val": "validation", "test": "test"}

_NOT_ON_VALIDATION = {
    "auroc": "needs anomalies in the validation split, but a one-class run (data.normal_class) validates on the normal "
             "class alone and keeps its anomalies in the test split, which a search never scores on",
}


class Objective(abc.ABC):
    """How a trial is scored. Per-epoch objectives are read from the metrics records (and can
    prune); the others are computed once from the trained run."""

    name: str
    per_epoch: bool = False
    #: the direction the metric itself demands (an f1 is maximised); None: either
    direction: str | None = None

    def check(self, config: ExperimentConfig, data: Dataset) -> None:
        """Raise a one-sentence :class:`ConfigError` when a run of ``config`` on ``data`` cannot
        compute this objective (called once, before any training)."""

    @property
    @abc.abstractmethod
    def split(self) -> str:
        """The split the search's number comes from ("validation", "training"...)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What the number is and which split it comes from, in one sentence."""

    @abc.abstractmethod
    def score(self, run: Any, record: dict[str, Any] | None) -> float:
        """The trial's value: ``run`` is the trained run, ``record`` the selected epoch's record."""

    @abc.abstractmethod
    def measure(self, run: Any, split: str) -> float | None:
        """The same metric from the run's selected checkpoint on ``split`` ("val" or "test");
        None when it has no counterpart there. For the selected configuration only."""


@dataclass(frozen=True)
class RecordMetric(Objective):
    """A key of the per-epoch metrics record; the value of the epoch the family selects."""

    name: str
    per_epoch = True

    @property
    def split(self) -> str:
        prefix = self.name.split("_", 1)[0]
        return SPLITS.get(prefix, "run")

    def describe(self) -> str:
        where = f"the {self.split} split" if self.split != "run" else "the training run"
        return f"{self.name} of the selected epoch's metrics record, computed on {where}."

    def score(self, run, record):
        if record is None or self.name not in record:
            keys = ", ".join(k for k in (record or {}) if k.startswith(("val_", "train_")))
            raise ConfigError(f"search.objective {self.name!r} is not a metric of this run; valid keys are: {keys}.")
        return float(record[self.name])

    def measure(self, run, split):
        import torch

        from lvmkit.training.train import mean_loss

        prefix, _, term = self.name.partition("_")
        if prefix not in ("train", "val") or not term:
            return None
        model, scored = run.load_model("best"), getattr(run.data(), split)  # before seeding: building draws
        torch.manual_seed(run.config.train.seed + 1)  # as evaluate() draws its test noise
        terms = mean_loss(model, scored, 256)
        return terms.get(term)


@dataclass(frozen=True)
class ProbeF1(Objective):
    """probe_f1: the f1 of one class of a few-label logistic-regression probe on the codes
    (:func:`lvmkit.analysis.probe.run_probe`), fitted on ``labels`` examples per class of the
    training split, scored on the validation split, averaged over ``repeats`` draws."""

    target: int | str
    labels: int = 100
    repeats: int = 3
    name = "probe_f1"
    direction = "maximize"

    @property
    def split(self) -> str:
        return "validation"

    def describe(self) -> str:
        return (f"probe_f1: f1 of class {self.target!r} of a logistic-regression probe on the codes, fitted on "
                f"{self.labels} labelled examples per class drawn from the training split and scored on the validation "
                f"split (mean of {self.repeats} draws).")

    def _label(self, data: Dataset) -> int:
        present = sorted(set(np.unique(data.train.y.numpy()).tolist()))
        names = data.class_names or []
        if isinstance(self.target, str):
            if self.target not in names:
                raise ConfigError(f"search.objective_class {self.target!r} is not a class of the data; its classes are: "
                                  f"{', '.join(map(repr, names)) or ', '.join(map(str, present))}.")
            return names.index(self.target)
        if self.target not in present:
            raise ConfigError(f"search.objective_class = {self.target} is not a label of the training split; its labels are: "
                              f"{', '.join(map(str, present))}.")
        return self.target

    def check(self, config, data):
        from lvmkit.core.contract import FAMILIES, Encoder, isinstance_family

        family = config.model.family
        if not isinstance_family(family, Encoder):
            encoders = ", ".join(n for n in FAMILIES if isinstance_family(n, Encoder))
            raise ConfigError(f"search.objective 'probe_f1' probes a model's codes, but the {family} family has no encoder; "
                              f"use a family that has one ({encoders}) or a metrics key such as 'val_loss'.")
        if config.data.normal_class is not None:
            raise ConfigError(f"search.objective 'probe_f1' needs every class, but data.normal_class = "
                              f"{config.data.normal_class} trains and validates on one; remove data.normal_class.")
        if data.train.y is None or data.val.y is None:
            raise ConfigError(f"search.objective 'probe_f1' needs labels, but the data in {data.origin} has none; "
                              "supply labels (data.y_key) or use a metrics key such as 'val_loss'.")
        label = self._label(data)
        classes, counts = np.unique(data.train.y.numpy(), return_counts=True)
        if counts.min() < self.labels:
            raise ConfigError(f"search.objective_labels = {self.labels} labelled examples per class, but class "
                              f"{classes[counts.argmin()]} has only {counts.min()} in the training split; lower "
                              "search.objective_labels.")
        if label not in set(data.val.y.numpy().tolist()):
            raise ConfigError(f"Class {self.target!r} has no example in the validation split, so its probe f1 cannot be "
                              "scored there; raise data.val_fraction or choose another search.objective_class.")

    def score(self, run, record):
        return self.measure(run, "val")

    def measure(self, run, split):
        from lvmkit.analysis.latent import LatentEncoder
        from lvmkit.analysis.probe import run_probe

        data = run.data()
        enc = LatentEncoder(run, warn_out_of_range=False).fit()  # the run's own splits: counted when loaded
        train, scored = data.evaluated_train(), getattr(data, split)
        res = run_probe({"latent": enc.transform(train.x.numpy())}, {"latent": enc.transform(scored.x.numpy())},
                        train.y.numpy(), scored.y.numpy(), [self.labels], self.repeats)["latent"][str(self.labels)]
        return float(res["f1"]["mean"][res["classes"].index(self._label(data))])


#: objectives computed after training, by the name ``search.objective`` gives them
OBJECTIVES = {"probe_f1": ProbeF1}
#: ``[search]`` keys that configure an objective of :data:`OBJECTIVES`, with their defaults
OPTIONS = {"objective_class": None, "objective_labels": 100, "objective_repeats": 3}


def make_objective(name: Any, options: dict[str, Any] | None = None) -> Objective:
    """The objective ``search.objective`` names, with its ``[search]`` options.

    Raises:
        ConfigError: the name is not a string, names the test split or a metric that validation
            data cannot give, or an option is missing, invalid or belongs to no objective.
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if not isinstance(name, str) or not name:
        raise ConfigError(f"search.objective must be a metrics key such as 'val_loss' or one of: {', '.join(OBJECTIVES)}; "
                          f"got {name!r}.")
    if name.startswith("test_"):
        raise ConfigError(f"search.objective {name!r} scores the test split, which selection never sees; use the "
                          f"validation counterpart {'val_' + name[5:]!r} (test numbers: 'lvmkit repeat' on the selected configuration).")
    if name in _NOT_ON_VALIDATION:
        raise ConfigError(f"search.objective {name!r} {_NOT_ON_VALIDATION[name]}; choose 'val_loss' or 'probe_f1'.")
    if name not in OBJECTIVES:
        if options:
            key = sorted(options)[0]
            raise ConfigError(f"search.{key} configures search.objective 'probe_f1', not {name!r}; remove it.")
        return RecordMetric(name)
    target = options.get("objective_class")
    if target is None:
        raise ConfigError(f"search.objective {name!r} needs search.objective_class, the label or class name whose f1 is "
                          "scored; write e.g. objective_class = 0 or objective_class = \"proton\".")
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ConfigError(f"search.objective_class must be a label (an integer) or a class name, got {target!r}.")
    for key in ("objective_labels", "objective_repeats"):
        v = options.get(key, OPTIONS[key])
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"search.{key} must be a positive integer, got {v!r}.")
    return ProbeF1(target, options.get("objective_labels", OPTIONS["objective_labels"]),
                   options.get("objective_repeats", OPTIONS["objective_repeats"]))
