"""The one training loop. It keeps the mechanics (epochs, per-epoch seeds, validation through
``forward``, early stopping on the family's ``selection_metric``, atomic checkpoints, exact
resume, the NaN/Inf guard, EMA weights, sample grids, callbacks); each family owns its step
(``training_step``) and its optimizer groups. See :mod:`lvmkit.core.contract`."""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import torch

from lvmkit.core.checkpoint import VERSION, load_checkpoint, save_checkpoint
from lvmkit.core.config import ExperimentConfig, TrainConfig
from lvmkit.core.contract import AbstractModel, Generator
from lvmkit.core import distributed as dist
from lvmkit.core.errors import ConfigError, LvmkitWarning, TrainingDiverged
from lvmkit.core.optim import EMA, Optimizers, lr_factor
from lvmkit.runs.run import Run
from lvmkit.data import Dataset, Split, batches, load_data


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


class Callback(Protocol):
    """Called after every epoch's record, checkpoints and log line; may set ``trainer.stopped``
    to a reason (a hyperparameter search prunes a trial this way)."""

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None: ...


def _progress(enabled: bool):
    """A step progress bar on an interactive terminal; logs get one line per epoch instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True, disable=not (enabled and sys.stderr.isatty()))


def _epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch draws its shuffling, binarization and sampling noise from its own seed, so a
    # run resumed at an epoch boundary replays exactly what an uninterrupted run does.
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def _check_compatible(model: AbstractModel, data: Dataset) -> list[str]:
    """Raise if the training data leave the model's support; return notes for the log on
    validation/test values outside it (which the likelihood reads clipped)."""
    support = model.data_support
    if support is None:
        return []
    lo, hi = data.train.value_range()
    if lo < support[0] or hi > support[1]:
        raise ConfigError(
            f"The {type(model).__name__} model needs data in {list(support)} but the training data "
            f"spans [{lo:.3g}, {hi:.3g}]; set data.scale = 'minmax'"
            + (" or model.likelihood = 'gaussian'." if hasattr(model, "likelihood") else ".")
        )
    return [f"{k}: {n} values lie outside the training range and are read clipped to {list(support)}"
            for k, n in data.info.get("out_of_range", {}).items() if n]


@torch.no_grad()
def mean_loss(model: AbstractModel, split: Split, batch_size: int) -> dict[str, float]:
    """The objective (``forward`` at full weight) and its terms averaged over a split, in eval mode."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for xb, _ in batches(split, batch_size, shuffle=False):
        out = model(xb)
        for k, v in out.terms.items():
            sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
    model.train(was_training)
    return {k: float(v) / len(split) for k, v in sums.items()}


class SampleGrids:
    """Every ``every`` epochs, samples from fixed noise (RUN/samples/epoch_NNNN.npy, images as
    uint8 grey levels 0..255): the report shows how a generator's samples develop. Draws from
    its own random stream, so training's randomness is untouched."""

    def __init__(self, every: int, n: int = 16, seed: int = 0) -> None:
        self.every, self.n, self.seed = every, n, seed

    @torch.no_grad()
    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if trainer.epoch % self.every:
            return
        model = trainer.model
        was_training = model.training
        model.eval()
        g = torch.Generator(device=trainer.device).manual_seed(self.seed)
        x = model.sample(self.n, generator=g).float().cpu().numpy()
        model.train(was_training)
        folder = trainer.run.path / "samples"
        folder.mkdir(exist_ok=True)
        np.save(folder / f"epoch_{trainer.epoch:04d}.npy", np.round(255 * np.clip(x, 0, 1)).astype(np.uint8))


_TIME_LIMIT = "time limit:"


class _OutOfTime(Exception):
    """train.time_limit passed inside an epoch (single process)."""


class Trainer:
    """Runs the loop for one run directory; see :func:`train` for the usual entry point."""

    def __init__(self, run: Run, data: Dataset, model: AbstractModel, cfg: TrainConfig, device: torch.device,
                 progress: bool = True, callbacks: Iterable[Callback] = (), world: dist.World = dist.SINGLE) -> None:
        self.run, self.data, self.model, self.cfg = run, data, model, cfg
        self.world = world  # several processes (torchrun): see lvmkit.core.distributed
        self.device, self.progress = device, progress and world.main
        self.opt = Optimizers(model.optimizer_groups(), cfg, model.optimizer_defaults)
        self.opt.world = world
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup, cfg.ema_start) if cfg.ema_decay > 0 else None
        self.selection = model.selection_metric
        self.callbacks = list(callbacks) if world.main else []  # they write files (sample grids, a search's records)
        every = cfg.sample_every if cfg.sample_every is not None else max(1, cfg.epochs // 50)
        if isinstance(model, Generator) and data.is_image and every > 0 and world.main:
            self.callbacks.insert(0, SampleGrids(every, seed=cfg.seed))
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.best_stage = 0
        self.stopped = ""
        self.deadline: float | None = None  # perf_counter() time when train.time_limit runs out
        per_epoch = math.ceil(len(data.train) / cfg.batch_size)
        self.planned_steps = min(cfg.epochs * per_epoch, cfg.max_steps or math.inf)

    # -- checkpoints --------------------------------------------------------------------------
    def _payload(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        payload = {
            "version": VERSION,
            "config": self.run.config.to_toml(),
            "input_shape": list(self.data.shape),
            "model": self.model.state_dict(),
            "optimizers": self.opt.state_dict(),
            "rng": rng,
            "state": {"epoch": self.epoch, "step": self.step, "best_val": self.best_val,
                      "bad_epochs": self.bad_epochs, "best_stage": self.best_stage, "stopped": self.stopped},
        }
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        return payload

    def save(self, which: str) -> None:
        if not self.world.main:
            return
        save_checkpoint(self.run.checkpoints / f"{which}.pt", self._payload())

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        # Format 1 held one Adam state under "optimizer": the "main" group of today's loop.
        self.opt.load_state_dict(ckpt["optimizers"] if "optimizers" in ckpt else {"main": ckpt["optimizer"]})
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.get("ema", self.model.state_dict()))
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        st = ckpt["state"]
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        self.best_val, self.bad_epochs = float(st["best_val"]), int(st["bad_epochs"])
        self.best_stage = int(st.get("best_stage", 0))
        self.stopped = str(st.get("stopped", ""))
        if self.stopped.startswith(_TIME_LIMIT):  # a budget ends one invocation, not the run: resume goes on
            self.stopped = ""
        # Drop metrics logged after the checkpoint (the killed epoch will be replayed).
        if not self.world.main:
            return
        kept = [m for m in self.run.read_metrics() if m["epoch"] <= self.epoch]
        self.run.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))

    # -- the loop -----------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def _diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"{what[0].upper() + what[1:]} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped and the last "
            f"good checkpoint is kept in {self.run.checkpoints / 'last.pt'}; "
            + (self.model.divergence_advice or "lower train.lr, set train.grad_clip (e.g. 10), or check the data for "
               "extreme values.")
        )

    def _autocast(self):
        """train.precision: bf16 or fp16 autocast around the family's step (fp32: nothing)."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)

    def _train_epoch(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        seed = _epoch_seed(cfg.seed, self.epoch)
        gen = torch.Generator().manual_seed(seed)  # the global batches: the same in every process
        # the model's own noise (reparameterisation, corruption, latent draws): its own per process
        torch.manual_seed(seed if self.world.main else (seed + 1_000_003 * self.world.rank) % 2**63)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        steps = math.ceil(len(self.data.train) / cfg.batch_size)
        bar = _progress(self.progress)
        task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=steps)
        with bar:
            for xb, _ in batches(self.data.train, cfg.batch_size, shuffle=True, generator=gen,
                                 dynamic_binarize=self.data.binarize == "dynamic"):
                reason = model.update(self.data.train.x, self.step)
                if reason:
                    self.stopped = reason
                    break
                if len(xb) < self.world.size:  # a last batch too small to share: every process skips it
                    continue
                dist.fault_point(self.world, self.step)  # tests only: LVMKIT_FAULT_KILL_AT_STEP
                global_n, xb = len(xb), dist.share(self.world, xb)
                self.opt.share_weight = len(xb) / global_n
                self.opt.lr_factor = lr_factor(cfg.lr_schedule, self.step, self.planned_steps, cfg.lr_final, cfg.lr_warmup)
                if cfg.channels_last and xb.dim() == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                try:
                    with self._autocast():
                        terms = model.training_step(xb, self.step, self.opt)
                except TrainingDiverged as err:
                    raise self._diverged(str(err)) from None
                if self.ema is not None:
                    self.ema.update(model, self.step)
                self.step += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
                seen += xb.shape[0]
                bar.advance(task)
                if cfg.max_steps and self.step >= cfg.max_steps:
                    break
                if self.deadline is not None and not self.world.active and time.perf_counter() > self.deadline:
                    raise _OutOfTime
        if self.world.active and sums:  # the epoch's means over every process's examples
            from torch import distributed as tdist

            keys = sorted(sums)
            totals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64).detach().cpu() for k in keys]
                                 + [torch.tensor(float(seen), dtype=torch.float64)])
            tdist.all_reduce(totals)
            sums, seen = dict(zip(keys, totals[:-1])), float(totals[-1])
        return {k: float(v) / max(seen, 1) for k, v in sums.items()}

    def _select(self, val_terms: dict[str, float]) -> bool:
        """Early-stopping bookkeeping on the family's selection metric; True if it improved."""
        stage = self.model.objective_stage
        if stage != self.best_stage:
            # The objective changed (e.g. DEC clustering began after pretraining): losses
            # before and after are not comparable, so the best checkpoint starts afresh.
            self.best_val, self.bad_epochs, self.best_stage = math.inf, 0, stage
        if self.selection is None:
            return False
        if val_terms[self.selection] < self.best_val:
            self.best_val, self.bad_epochs = val_terms[self.selection], 0
            return True
        self.bad_epochs += 1
        return False

    def _out_of_time(self, started: float, epoch_seconds: list[float]) -> bool:
        """True when the next epoch would end after train.time_limit (process 0 decides for all)."""
        if self.deadline is None or not epoch_seconds:
            return False
        late = time.perf_counter() + sum(epoch_seconds) / len(epoch_seconds) > self.deadline
        return bool(dist.broadcast(self.world, late if self.world.main else None))

    def fit(self) -> None:
        cfg = self.cfg
        started = time.perf_counter()
        limit = cfg.time_limit_seconds
        self.deadline = None if limit is None else started + limit
        epoch_seconds: list[float] = []
        if self.epoch == 0 and self.step == 0:
            self.save("last")  # so a failure in the first epoch still leaves a good checkpoint
        while self.epoch < cfg.epochs and not self.stopped:
            if self._out_of_time(started, epoch_seconds):
                self.stopped = (f"{_TIME_LIMIT} train.time_limit = {cfg.time_limit} ({limit:.0f} s): the next epoch "
                                f"(~{sum(epoch_seconds) / len(epoch_seconds):.0f} s) would end after it")
                self.save("last")  # the same weights, with the reason; lvmkit train --resume goes on
                break
            t0 = time.perf_counter()
            try:
                train_terms = self._train_epoch()
            except _OutOfTime:
                # The budget ran out inside an epoch: that epoch is dropped and the run ends at the
                # last finished one, exactly as its checkpoint holds it (a resume replays the epoch).
                self.restore(self.run.checkpoints / "last.pt")
                self.stopped = f"{_TIME_LIMIT} train.time_limit = {cfg.time_limit} ({limit:.0f} s) inside epoch {self.epoch + 1}"
                break
            if not train_terms:  # the model asked to stop before this epoch's first step
                self.save("last")  # with the reason, so a resume does not train on
                break
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            dist.sync_norm_buffers(self.world, self.model)
            # process 0's validation decides for all (best checkpoint, early stopping)
            val_terms = dist.broadcast(self.world, mean_loss(self.model, self.data.val, max(cfg.batch_size, 256))
                                       if self.world.main else None)
            self.epoch += 1
            seconds = time.perf_counter() - t0
            record = {"epoch": self.epoch, "step": self.step, "seconds": round(seconds, 4),
                      "train_seconds": round(train_seconds, 4)}
            record.update({f"train_{k}": v for k, v in train_terms.items()})
            record.update({f"val_{k}": v for k, v in val_terms.items()})
            if "skipped_nan" in self.data.info:  # streamed data: training examples in chunks with NaN, left out
                record["skipped_nan"] = self.data.info["skipped_nan"]["train"]
            watched = self.selection or "loss"
            if watched in val_terms and not math.isfinite(val_terms[watched]):
                raise TrainingDiverged(
                    f"The validation {watched} became {val_terms[watched]} after epoch {self.epoch}; training stopped and "
                    f"the last good checkpoint is kept in {self.run.checkpoints / 'last.pt'}; lower train.lr."
                )
            improved = self._select(val_terms)
            # A reason the model gave (e.g. DEC assignments converged) is kept as it is.
            if not self.stopped and cfg.max_steps and self.step >= cfg.max_steps:
                self.stopped = f"reached train.max_steps = {cfg.max_steps}"
            elif (not self.stopped and self.selection and cfg.patience and self.bad_epochs >= cfg.patience
                  and self.model.objective_final):
                self.stopped = f"early stopping: no improvement of validation {self.selection} in {cfg.patience} epochs"
            if self.world.main:
                with open(self.run.metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if improved:
                self.save("best")
            self.save("last")
            shown = "  ".join(f"{k} {train_terms[k]:.4f}" for k in list(train_terms)[:3])
            val = f"  val_{watched} {val_terms[watched]:.4f}" if watched in val_terms else ""
            self._log(f"epoch {self.epoch}/{cfg.epochs}  step {self.step}  {shown}{val}  ({seconds:.1f}s)"
                      f"{'  *' if improved else ''}")
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            epoch_seconds.append(time.perf_counter() - t0)
        if self.stopped:
            self._log(f"stopped: {self.stopped}")
        dist.barrier(self.world)


def _setup(cfg: TrainConfig) -> tuple[torch.device, dist.World]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(dist.local_device(cfg.device))
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision = 'fp16' trains with CUDA's gradient scaler, but the device is {device.type}; "
                          "use train.precision = 'bf16' there, or train.device = 'cuda'.")
    world = dist.init(device.type)
    dist.check_batch(world, cfg.batch_size)
    return device, world


def _build(config: ExperimentConfig, data: Dataset, device: torch.device) -> AbstractModel:
    from lvmkit.models import build_model

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.shape).to(device)
    cfg = config.train
    if cfg.channels_last and len(data.shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        from torch import _dynamo

        if not _dynamo.is_dynamo_supported():
            warnings.warn("train.compile is set but torch.compile is not supported on this Python/platform; training "
                          "runs uncompiled (set train.compile = false to silence this).", LvmkitWarning, stacklevel=3)
        else:  # compiles forward in place: training_step, EMA and checkpoints see the same module
            model.compile(**({} if cfg.compile is True else {"backend": cfg.compile}))
    return model


def _fit(trainer: Trainer, report: bool) -> Run:
    """Run the loop, then (process 0) write report.html when asked."""
    trainer.fit()
    if report and trainer.world.main:
        from lvmkit.report import write_report

        write_report(trainer.run, progress=trainer.progress)
    return trainer.run


def _check_patience(model: AbstractModel, cfg: TrainConfig) -> None:
    """A patience the user set for a model that selects no validation metric is refused when a run
    starts; a resume does not ask again (the stored config lists every field, the default 10 too)."""
    if model.selection_metric is None and "patience" in cfg.model_fields_set and cfg.patience:
        raise ConfigError(
            f"train.patience = {cfg.patience} stops on a validation metric, but the {type(model).__name__} model "
            "selects none (its last checkpoint is the model); remove train.patience or set it to 0."
        )


def train(config: ExperimentConfig, out: str | Path | None = None, *, progress: bool = True,
          report: bool = False, callbacks: Iterable[Callback] = ()) -> Run:
    """Train a model described by ``config`` in a new run directory and return the run.

    Args:
        config: the experiment (see :func:`lvmkit.load_config`).
        out: the run directory (default: runs/KIND-DATA-TIME).
        progress: print a line per epoch (and a bar on a terminal).
        report: write report.html at the end.
        callbacks: objects with ``on_epoch_end(trainer, record)``.
    """
    device, world = _setup(config.train)
    try:
        # torchrun --max-restarts started this launch again after a process died: its run goes on
        # (without --out, among Run.create's default directories runs/KIND-DATA-TIME)
        mine = dist.restarted_run(world, [Path(out)] if out is not None
                                  else Path("runs").glob(f"{config.model.kind}-{config.data.name}-*"))
        if mine is not None:
            return resume(mine, progress=progress, report=report, callbacks=callbacks)
        launched = dist.launch(world)  # recorded in the run, for that restart
        data = load_data(config.data, config.train.seed)
        model = _build(config, data, device)
        _check_patience(model, config.train)
        notes = _check_compatible(model, data)
        if "stream" in data.info:
            st = data.info["stream"]
            skipped = data.info["skipped_nan"]["train"]
            notes.append(f"streaming {st['path']}: {st['chunks']} chunks of {st['chunk']} examples, {st['buffer']} shuffled "
                         "together" + (f"; {skipped} training examples in chunks with NaN or infinite values left out"
                                       if skipped else ""))
        # process 0 makes the run directory; the others open it (its name may hold the time)
        run = Run.create(config, out) if world.main else None
        run = run if world.main else Run.open(dist.broadcast(world, None))
        if world.main:
            dist.record_launch(run.path / "meta.json", launched)
            dist.broadcast(world, str(run.path))
        run._data = data
        trainer = Trainer(run, data.to(device), model, config.train, device, progress, callbacks, world)
        if world.main:
            run.write_json("optimizers.json", trainer.opt.settings)
            run.write_json("scaling.json", {**data.info["scaler"], "out_of_range": data.info["out_of_range"]})
        if world.active:
            notes.append(f"{world.size} processes, {config.train.batch_size // world.size} examples each per step")
        for note in notes:
            trainer._log(note)
        return _fit(trainer, report)
    finally:
        dist.shutdown(world)


def resume(path: str | Path, *, progress: bool = True, report: bool = False, callbacks: Iterable[Callback] = ()) -> Run:
    """Continue a run from its last checkpoint; the result matches an uninterrupted run."""
    run = Run.open(path)
    cfg = run.config
    device, world = _setup(cfg.train)
    try:
        data = run.data()
        model = _build(cfg, data, device)
        trainer = Trainer(run, data.to(device), model, cfg.train, device, progress, callbacks, world)
        last = run.checkpoints / "last.pt"
        if last.is_file():  # any number of processes: the checkpoint holds the global state
            trainer.restore(last)
        elif world.main:  # killed before its first checkpoint: start again from step 0, as train() does
            run.metrics_path.unlink(missing_ok=True)
            run.write_json("optimizers.json", trainer.opt.settings)
        trainer._log(f"resuming {run.path} at epoch {trainer.epoch}, step {trainer.step}")
        return _fit(trainer, report)
    finally:
        dist.shutdown(world)
