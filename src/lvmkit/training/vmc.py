"""``lvmkit vmc``: variational Monte Carlo through the one training loop.

A VMC config is an experiment whose ``[model]`` is of the ``vmc`` family; it needs no ``[data]``
(``data.name = "none"`` is filled in), and each epoch of the loop is one VMC iteration, so
``train.epochs`` is the number of iterations. Checkpoints, exact resume and the NaN guard are the
loop's own; this module adds the check of the family and a progress display of the energy with
its blocking error (a callback).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lvmkit.core.config import ExperimentConfig, apply_overrides, make_config, read_toml
from lvmkit.core.errors import ConfigError
from lvmkit.runs.run import Run
from lvmkit.training.train import resume, train


def load_vmc_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a VMC experiment: a TOML file without ``[data]`` gets ``data.name = "none"``, and
    ``train.patience`` is 0 unless set."""
    doc = read_toml(path)
    doc.setdefault("data", {"name": "none"})
    # the family selects no validation metric (train.patience would stop on one); stated, so
    # that the stored config.toml resumes
    doc.setdefault("train", {}).setdefault("patience", 0)
    cfg = make_config(apply_overrides(doc, overrides or []))
    check_vmc(cfg)
    return cfg


def check_vmc(cfg: ExperimentConfig) -> None:
    if cfg.model.family != "vmc":
        raise ConfigError(f"lvmkit vmc trains trial wave functions (the vmc family, model.kind = 'nqs'), but the config's model.kind is "
                          f"{cfg.model.kind!r}; train it with lvmkit train, or set model.kind = 'nqs'.")


class EnergyProgress:
    """A callback showing the energy ± its blocking error per iteration: a bar on a terminal,
    else a line every ``every`` iterations (and at the last)."""

    def __init__(self, epochs: int, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.epochs, self.enabled = epochs, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.every = max(1, epochs // 20)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            disable=not self.tty)
        self.task = None
        self.last: dict[str, Any] | None = None

    @staticmethod
    def line(record: dict[str, Any]) -> str:
        return (f"E = {record['train_energy']:.6f} ± {record['train_energy_error']:.1e}  variance "
                f"{record['train_variance']:.2e}  acceptance {record['train_acceptance']:.2f}")

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        self.last = record
        if self.tty:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task("", total=self.epochs, completed=record["epoch"] - 1)
            self.bar.update(self.task, completed=record["epoch"], description=self.line(record))
        elif self.enabled and (record["epoch"] % self.every == 0 or record["epoch"] == self.epochs):
            print(f"iteration {record['epoch']}/{self.epochs}  {self.line(record)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
        if self.enabled and self.tty and self.last is not None:
            print(f"iteration {self.last['epoch']}/{self.epochs}  {self.line(self.last)}", file=sys.stderr, flush=True)


def vmc(config: ExperimentConfig, out: str | Path | None = None, *, progress: bool = True, report: bool = False) -> Run:
    """Train the wave function of ``config`` (a vmc-family experiment) in a new run directory."""
    check_vmc(config)
    bar = EnergyProgress(config.train.epochs, progress)
    try:
        return train(config, out, progress=False, report=report, callbacks=[bar])
    finally:
        bar.close()


def vmc_resume(path: str | Path, *, progress: bool = True, report: bool = False) -> Run:
    """Continue a VMC run from its last checkpoint (exactly as an uninterrupted run goes on)."""
    run = Run.open(path)
    check_vmc(run.config)
    bar = EnergyProgress(run.config.train.epochs, progress)
    try:
        return resume(path, progress=False, report=report, callbacks=[bar])
    finally:
        bar.close()


__all__ = ["EnergyProgress", "check_vmc", "load_vmc_config", "vmc", "vmc_resume"]
