"""A run is a directory: resolved config, metadata, metrics log, checkpoints, figures, report."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lvmkit.core.checkpoint import load_checkpoint
from lvmkit.data.scaling import Scaler
from lvmkit.core.config import ExperimentConfig, make_config, migrate, read_toml
from lvmkit.data import Dataset, load_data
from lvmkit.core.errors import CheckpointError
from lvmkit.core.contract import AbstractModel

#: how config.toml is written: 3 = per-family [model] tables, per-feature data.scale (see core.config.migrate)
CONFIG_FORMAT = 4


def _versions() -> dict[str, str]:
    import numpy
    import sklearn

    from lvmkit.core._version import __version__

    return {"lvmkit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def clear_run_directory(path: str | Path) -> None:
    """Delete the contents of run directory ``path`` so a new run can take its place (nothing to
    do when it is missing or empty).

    Raises:
        CheckpointError: ``path`` is a file, or a non-empty directory without config.toml (not
            an lvmkit run: it is left untouched).
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"Run directory {str(path)!r} is a file, not a directory; pass a directory path as --out.")
    if not any(path.iterdir()):
        return
    if not (path / "config.toml").is_file():
        raise CheckpointError(f"Refusing to overwrite {str(path)!r}: it is not an lvmkit run directory (no config.toml); "
                              "pass an empty or new directory as --out.")
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class Run:
    """Handle on a run directory. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, config: ExperimentConfig) -> None:
        self.path = Path(path)
        self.config = config
        self._data: Dataset | None = None

    # -- layout -------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, config: ExperimentConfig, out: str | Path | None = None, root: str | Path = "runs", *,
               overwrite: bool = False) -> "Run":
        """Make a new run directory and write the resolved config and metadata into it.

        Args:
            config: the resolved experiment.
            out: the run directory (default: ROOT/KIND-DATA-TIME, never an existing one).
            root: the parent of default run directories.
            overwrite: when ``out`` already holds a run, delete its contents first.

        Raises:
            CheckpointError: ``out`` holds a run and ``overwrite`` is False, or ``overwrite`` is
                True but ``out`` is a non-empty directory that is not a run (no config.toml).
        """
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path(root) / f"{config.model.kind}-{config.data.name}-{stamp}"
            path, i = base, 1
            while path.exists():
                path, i = Path(f"{base}-{i}"), i + 1
        else:
            path = Path(out)
            if overwrite:
                clear_run_directory(path)
            elif (path / "config.toml").exists():
                raise CheckpointError(f"Run directory {str(path)!r} already holds a run; choose another --out, resume it with "
                                      f"--resume {path}, or replace it with --overwrite.")
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.toml").write_text(config.to_toml())
        meta = {"config_format": CONFIG_FORMAT, "command": sys.argv, "cwd": os.getcwd(), "seed": config.train.seed, "versions": _versions(),
                "git_revision": _git_revision(), "host": platform.node(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (path / "meta.json").write_text(json.dumps(meta, indent=2))
        return cls(path, config)

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """Open an existing run directory (its config.toml is re-validated)."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"Run directory {str(path)!r} does not exist; pass the directory that 'lvmkit train' printed.")
        if not (path / "config.toml").is_file():
            raise CheckpointError(f"{str(path)!r} is not a run directory (no config.toml); pass the directory that 'lvmkit train' printed.")
        doc = read_toml(path / "config.toml")
        # Temporary files of checkpoint writes a kill interrupted (core.checkpoint.save_checkpoint)
        # are never read: drop them, or every kill leaves a checkpoint-sized file behind.
        if (path / "checkpoints").is_dir():
            for tmp in (path / "checkpoints").glob(".*.pt.*.tmp"):
                tmp.unlink(missing_ok=True)
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        doc = migrate(doc, meta.get("config_format", 1))
        return cls(path, make_config(doc))

    # -- contents -----------------------------------------------------------------------------
    def data(self) -> Dataset:
        """The run's data set, split exactly as in training (cached)."""
        if self._data is None:
            self._data = load_data(self.config.data, self.config.train.seed)
        return self._data

    def scaler(self) -> Scaler:
        """The data scaling fitted on the training split (RUN/scaling.json; runs written before
        it was stored refit it from their data)."""
        stored = self.read_json("scaling.json")
        return Scaler.from_state(stored) if stored else self.data().scaler

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def read_json(self, name: str) -> dict[str, Any] | None:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else None

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, p)
        return p

    def checkpoint_path(self, which: str = "best") -> Path:
        p = self.checkpoints / f"{which}.pt"
        if which == "best" and not p.is_file():
            p = self.checkpoints / "last.pt"
        return p

    def load_model(self, which: str = "best", device: str | torch.device = "cpu", *, ema: bool | None = None) -> AbstractModel:
        """Rebuild the model from the config and load its weights (no pickled objects).

        Args:
            which: "best" (falls back to "last" when the family selects none) or "last".
            device: where the model goes.
            ema: load the exponential moving average of the weights; None = when the run kept one.
        """
        from lvmkit.models import build_model

        ckpt = load_checkpoint(self.checkpoint_path(which), map_location=device)
        if ema and "ema" not in ckpt:
            raise CheckpointError(f"The {which} checkpoint of {str(self.path)!r} holds no EMA weights; train with "
                                  "train.ema_decay > 0, or load the raw weights (ema=False).")
        weights = ckpt["ema"] if "ema" in ckpt and ema is not False else ckpt["model"]
        model = build_model(self.config.model, tuple(ckpt["input_shape"]))
        try:
            model.load_state_dict(weights)
        except (RuntimeError, KeyError) as err:
            raise CheckpointError(f"Checkpoint of {str(self.path)!r} does not match its config.toml ({str(err).splitlines()[0]}); was config.toml edited after training?") from None
        return model.to(device).eval()
