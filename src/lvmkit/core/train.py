"""The one training loop: Adam, gradient clipping, early stopping, atomic checkpoints,
exact resume, a NaN/Inf guard. Every model family plugs in through ``model.loss(x, step)``."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from lvmkit.core.checkpoint import load_checkpoint, save_checkpoint
from lvmkit.core.config import ExperimentConfig, TrainConfig
from lvmkit.data import Dataset, Split, batches, load_data
from lvmkit.core.errors import ConfigError, TrainingDiverged
from lvmkit.models.autoencoder import LatentVariableModel, build_model
from lvmkit.core.run import Run
from lvmkit.core.schedules import cosine_decay


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device = {name!r} is not a device name; use 'auto', 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but no CUDA device is available here; use train.device = 'cpu'.")
    return dev


# Validation and evaluation score the objective at full regularizer weight (past any warm-up),
# so early stopping compares like with like while a KL weight is still ramping up.
FULL_WEIGHT_STEP = 2**62


def _progress(enabled: bool):
    """A step progress bar on an interactive terminal; logs get one line per epoch instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True, disable=not (enabled and sys.stderr.isatty()))


def _epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch draws its shuffling, binarization and sampling noise from its own seed, so a
    # run resumed at an epoch boundary replays exactly what an uninterrupted run does.
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def _check_compatible(model: LatentVariableModel, data: Dataset) -> None:
    support = getattr(model.likelihood, "support", None)
    if support is not None:
        lo, hi = float(data.train.x.min()), float(data.train.x.max())
        if lo < support[0] or hi > support[1]:
            raise ConfigError(
                f"The {type(model.likelihood).__name__} likelihood needs data in {list(support)} but the training data "
                f"spans [{lo:.3g}, {hi:.3g}]; "
                "set data.scale = 'minmax' or model.likelihood = 'gaussian'."
            )


@torch.no_grad()
def mean_loss(model: LatentVariableModel, split: Split, step: int, batch_size: int) -> dict[str, float]:
    """The training objective and its terms averaged over a split (model in eval mode)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for xb, _ in batches(split, batch_size, shuffle=False):
        out = model.loss(xb, step)
        for k, v in out.terms.items():
            sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
    model.train(was_training)
    return {k: float(v) / len(split) for k, v in sums.items()}


class Trainer:
    """Runs the loop for one run directory; see :func:`train` for the usual entry point."""

    def __init__(self, run: Run, data: Dataset, model: LatentVariableModel, cfg: TrainConfig,
                 device: torch.device, progress: bool = True) -> None:
        self.run, self.data, self.model, self.cfg = run, data, model, cfg
        self.device, self.progress = device, progress
        self.params = [p for p in model.parameters() if p.requires_grad]
        # The fused implementation updates all tensors in one kernel: ~3x cheaper per step on CPU.
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.best_stage = 0
        self.stopped = ""
        per_epoch = math.ceil(len(data.train) / cfg.batch_size)
        self.planned_steps = min(cfg.epochs * per_epoch, cfg.max_steps or math.inf)

    # -- checkpoints --------------------------------------------------------------------------
    def _payload(self) -> dict:
        return {
            "config": self.run.config.to_toml(),
            "input_shape": list(self.data.shape),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "state": {"epoch": self.epoch, "step": self.step, "best_val": self.best_val,
                      "bad_epochs": self.bad_epochs, "best_stage": self.best_stage, "stopped": self.stopped},
        }

    def save(self, which: str) -> None:
        save_checkpoint(self.run.checkpoints / f"{which}.pt", self._payload())

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        st = ckpt["state"]
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        self.best_val, self.bad_epochs = float(st["best_val"]), int(st["bad_epochs"])
        self.best_stage = int(st.get("best_stage", 0))
        self.stopped = str(st.get("stopped", ""))
        # Drop metrics logged after the checkpoint (the killed epoch will be replayed).
        kept = [m for m in self.run.read_metrics() if m["epoch"] <= self.epoch]
        self.run.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))

    # -- the loop -----------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def _train_epoch(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        seed = _epoch_seed(cfg.seed, self.epoch)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # reparameterisation and corruption noise
        model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        steps = math.ceil(len(self.data.train) / cfg.batch_size)
        bar = _progress(self.progress)
        task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=steps)
        with bar:
            for xb, _ in batches(self.data.train, cfg.batch_size, shuffle=True, generator=gen,
                                 dynamic_binarize=self.data.binarize == "dynamic"):
                if not self._step(xb, sums):
                    break
                seen += xb.shape[0]
                bar.advance(task)
                if cfg.max_steps and self.step >= cfg.max_steps:
                    break
        return {k: float(v) / max(seen, 1) for k, v in sums.items()}

    def _step(self, xb: torch.Tensor, sums: dict) -> bool:
        """One optimisation step; False when the model asked to stop before it."""
        cfg, model = self.cfg, self.model
        reason = model.update(self.data.train.x, self.step)
        if reason:
            self.stopped = reason
            return False
        out = model.loss(xb, self.step)
        if not torch.isfinite(out.loss):
            raise TrainingDiverged(
                f"The loss became {float(out.loss.detach())} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped "
                f"and the last good checkpoint is kept in {self.run.checkpoints / 'last.pt'}; "
                "lower train.lr, set train.grad_clip (e.g. 10), or check the data for extreme values."
            )
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.grad_clip > 0:
            # Rescale only when the norm exceeds the limit (clip_grad_norm_ always rescales).
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            if norm > cfg.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(self.params, cfg.grad_clip, norm)
        if cfg.lr_schedule == "cosine":
            factor = cosine_decay(self.step, self.planned_steps, cfg.lr_final)
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * factor
        self.opt.step()
        self.step += 1
        for k, v in out.terms.items():
            sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
        return True

    def fit(self) -> None:
        cfg = self.cfg
        if self.epoch == 0 and self.step == 0:
            self.save("last")  # so a failure in the first epoch still leaves a good checkpoint
        while self.epoch < cfg.epochs and not self.stopped:
            t0 = time.perf_counter()
            train_terms = self._train_epoch()
            if not train_terms:  # the model asked to stop before this epoch's first step
                break
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            val_terms = mean_loss(self.model, self.data.val, FULL_WEIGHT_STEP, max(cfg.batch_size, 256))
            self.epoch += 1
            seconds = time.perf_counter() - t0
            record = {"epoch": self.epoch, "step": self.step, "seconds": round(seconds, 4),
                      "train_seconds": round(train_seconds, 4)}
            record.update({f"train_{k}": v for k, v in train_terms.items()})
            record.update({f"val_{k}": v for k, v in val_terms.items()})
            if not math.isfinite(val_terms["loss"]):
                raise TrainingDiverged(
                    f"The validation loss became {val_terms['loss']} after epoch {self.epoch}; training stopped and the "
                    f"last good checkpoint is kept in {self.run.checkpoints / 'last.pt'}; lower train.lr."
                )
            stage = self.model.objective_stage
            if stage != self.best_stage:
                # The objective changed (e.g. DEC clustering began after pretraining): losses
                # before and after are not comparable, so the best checkpoint starts afresh.
                self.best_val, self.bad_epochs, self.best_stage = math.inf, 0, stage
            if val_terms["loss"] < self.best_val:
                self.best_val, self.bad_epochs = val_terms["loss"], 0
                improved = True
            else:
                self.bad_epochs += 1
                improved = False
            # A reason the model gave (e.g. DEC assignments converged) is kept as it is.
            if not self.stopped and cfg.max_steps and self.step >= cfg.max_steps:
                self.stopped = f"reached train.max_steps = {cfg.max_steps}"
            elif not self.stopped and cfg.patience and self.bad_epochs >= cfg.patience:
                self.stopped = f"early stopping: no validation improvement in {cfg.patience} epochs"
            with open(self.run.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if improved:
                self.save("best")
            self.save("last")
            self._log(
                f"epoch {self.epoch}/{cfg.epochs}  step {self.step}  loss {train_terms['loss']:.4f}  "
                f"val_loss {val_terms['loss']:.4f}  ({seconds:.1f}s){'  *' if improved else ''}"
            )
        if self.stopped:
            self._log(f"stopped: {self.stopped}")


def _setup(cfg: TrainConfig) -> torch.device:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return resolve_device(cfg.device)


def train(config: ExperimentConfig, out: str | Path | None = None, *, progress: bool = True,
          report: bool = False) -> Run:
    """Train a model described by ``config`` in a new run directory and return the run."""
    device = _setup(config.train)
    data = load_data(config.data, config.train.seed)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.shape).to(device)
    _check_compatible(model, data)
    run = Run.create(config, out)
    run._data = data
    Trainer(run, data.to(device), model, config.train, device, progress).fit()
    if report:
        from lvmkit.report import write_report

        write_report(run, progress=progress)
    return run


def resume(path: str | Path, *, progress: bool = True, report: bool = False) -> Run:
    """Continue a run from its last checkpoint; the result matches an uninterrupted run."""
    run = Run.open(path)
    cfg = run.config
    device = _setup(cfg.train)
    data = run.data()
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.shape).to(device)
    trainer = Trainer(run, data.to(device), model, cfg.train, device, progress)
    trainer.restore(run.checkpoints / "last.pt")
    trainer._log(f"resuming {run.path} at epoch {trainer.epoch}, step {trainer.step}")
    trainer.fit()
    if report:
        from lvmkit.report import write_report

        write_report(run, progress=progress)
    return run
