"""Run a hyperparameter search: an optuna study whose trials are ordinary run directories.

Layout of a search directory ``DIR``::

    DIR/space.toml       the space file, copied (resume and report read it)
    DIR/study.json       storage URL, study name, sampler, trial count, --set overrides of the space
    DIR/study.db         the SQLite storage (default)
    DIR/trials/NNNN/     one run directory per optuna trial number

Workers are local processes started with ``spawn``, or processes on other machines that joined
the same study through a server's storage. A worker starts a trial while fewer than N trials
are running, waiting or finished, and stops once N are finished; meanwhile it watches the
others' trials. Each running trial beats (optuna's RDB heartbeat, every ``search.heartbeat``
seconds); a trial whose beat is older than ``search.grace_period`` lost its worker (SIGKILL, a
lost machine), and whichever worker notices first fails it and enqueues its parameters once
more (``RetryHeartbeatStaleTrialCallback``, ``max_retry=1``; the retry's user attrs say
``retried_from``), so the study still ends with N finished trials. A trial whose worker still
beats is never touched, whichever machine runs it.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lvmkit.core.config import make_config
from lvmkit.core.errors import ConfigError, DataError, LvmkitError, TrainingDiverged
from lvmkit.search.objectives import Objective, make_objective
from lvmkit.search.space import SAMPLERS, SearchSpace, load_space

_FINISHED = ("COMPLETE", "PRUNED")
_LIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # trials that count towards N


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported by our own one-line error
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _where(url: str) -> str:
    """A storage URL in words, without its password."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database!r}"
    return (f"{u.get_backend_name()} server at host {u.host or 'localhost'!r}, port {u.port or 'default'} "
            f"(database {u.database!r}, user {u.username!r})")


def _storage(url: str, space: SearchSpace | None = None):
    """Optuna's RDB storage at ``url``, with the heartbeat of ``space`` when given (for workers);
    a URL that cannot be read, a missing driver or a server that cannot be reached is a
    one-sentence :class:`LvmkitError` (never showing the password)."""
    optuna = _optuna()
    import sqlalchemy.exc

    try:
        where = _where(url)
    except sqlalchemy.exc.ArgumentError:
        raise LvmkitError(f"--storage {url.split('@')[-1]!r} is not a database URL; write e.g. "
                          "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB or sqlite:///search.db.") from None
    # optuna 4.9 renamed failed_trial_callback to heartbeat_stale_trial_callback (the old name warns)
    renamed = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    beat = {} if space is None else {"heartbeat_interval": space.heartbeat, "grace_period": space.grace_period,
                                     "heartbeat_stale_trial_callback" if renamed else "failed_trial_callback": _Retry()}
    try:
        if url.startswith("sqlite:"):
            # Workers share one SQLite file: wait for its lock rather than fail at once.
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}}, **beat)
        # No pool for a server: a connection per session, closed after it, so none is left open
        # when a storage object is dropped (or inherited by a worker process).
        from sqlalchemy.pool import NullPool

        return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool}, **beat)
    except ImportError:
        raise LvmkitError(f"The database driver for the {where} is not installed; install it with "
                          "pip install 'lvmkit[postgres]' (psycopg) and write postgresql+psycopg://... for PostgreSQL.") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if password:
            reason = reason.replace(str(password), "***")
        raise LvmkitError(f"Cannot reach the search storage, the {where}: {reason.rstrip('.')}; start the server or "
                          "correct --storage.") from None


def _without_password(url: str) -> str:
    """``url`` as written to study.json: a server's password is never stored (workers get it in
    memory; a resume takes it from --storage again, or libpq's PGPASSWORD or ~/.pgpass)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u._replace(password=None).render_as_string(hide_password=False) if u.password else url  # URL.set skips None


def _sampler(name: str, seed: int):
    optuna = _optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _count(study, states: tuple[str, ...]) -> int:
    optuna = _optuna()
    return len(study.get_trials(deepcopy=False, states=tuple(getattr(optuna.trial.TrialState, s) for s in states)))


class _Report:
    """Epoch callback: remembers the record a per-epoch objective is read from (the best epoch
    when the family selects one, else the last), reports its value to the trial and asks the
    pruner. ``objective`` is a metrics key or an :class:`~lvmkit.search.objectives.Objective`."""

    def __init__(self, trial: Any, objective: str | Objective, prune: bool) -> None:
        self.trial, self.prune = trial, prune
        self.metric = objective if isinstance(objective, Objective) else make_objective(objective)
        self.record: dict[str, Any] | None = None
        self.pruned = False

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        selection = trainer.selection
        if selection is None or self.record is None or record.get(f"val_{selection}") == trainer.best_val:
            self.record = record
        if not self.metric.per_epoch:
            return
        value = self.metric.score(None, record)
        if self.prune and math.isfinite(value):
            self.trial.report(value, record["epoch"])
            if self.trial.should_prune():
                self.pruned = True
                trainer.stopped = f"pruned by the search at epoch {record['epoch']} (median rule)"


class _Retry:
    """The storage's heartbeat-stale trial callback: optuna's RetryHeartbeatStaleTrialCallback
    with ``max_retry=1`` (it enqueues the parameters again and records ``failed_trial`` and
    ``retry_history`` in the retry's system attrs); the retry's user attrs are only
    ``retried_from``, not the dead run's directory and worker."""

    def __call__(self, study, trial) -> None:
        retry = copy.copy(trial)
        retry.user_attrs = {"retried_from": trial.number}
        storages = _optuna().storages  # RetryFailedTrialCallback before optuna 4.9 (a deprecated alias since)
        retry_once = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
        retry_once(max_retry=1)(study, retry)


class _Stale:
    """Fails, and retries once, the running trials whose worker is gone: those whose heartbeat
    is older than the grace period (optuna's ``fail_stale_trials``, followed by the storage's
    :class:`_Retry`), and those that never beat (left by an lvmkit without heartbeats, or
    killed before their first beat) once this process has seen them so for the grace period:
    this process's clock, since other machines' clocks are not comparable."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.silent: dict[int, float] = {}  # trial id -> when first seen running without a beat

    def __call__(self, study) -> None:
        optuna = _optuna()
        optuna.storages.fail_stale_trials(study)
        now = time.monotonic()
        silent = _silent(study)
        self.silent = {i: self.silent.get(i, now) for i in silent}
        for i in silent:
            if now - self.silent[i] <= self.grace:
                continue
            try:
                study._storage.set_trial_user_attr(i, "failed_because", "left running by a worker without a heartbeat; retried")
                if study._storage.set_trial_state_values(i, optuna.trial.TrialState.FAIL):
                    _Retry()(study, study._storage.get_trial(i))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first (and retried it)


def _silent(study) -> set[int]:
    """Ids of the study's running trials that never beat (no row in optuna's heartbeat table;
    optuna's own staleness check skips them, and it has no public way to ask)."""
    import sqlalchemy.orm
    from optuna.storages._rdb import models

    optuna = _optuna()
    backend = getattr(study._storage, "_backend", study._storage)  # load_study wraps the RDB storage in a cache
    with sqlalchemy.orm.Session(backend.engine) as session:
        rows = (session.query(models.TrialModel.trial_id).outerjoin(models.TrialHeartbeatModel)
                .filter(models.TrialModel.study_id == study._study_id,
                        models.TrialModel.state == optuna.trial.TrialState.RUNNING,
                        models.TrialHeartbeatModel.trial_id.is_(None)))
        return {i for (i,) in rows}


class _Surplus(Exception):
    """A trial created when N trials were already running, waiting or finished (two machines
    asked at once); it ends as failed without training."""


class _Gate:
    """A local lock held from counting the study's trials until the new trial exists, so that
    two local workers never start the N+1st trial together (workers on other machines may:
    :class:`_Surplus` catches that)."""

    def __init__(self, lock=None) -> None:
        self.lock, self.held = lock, False

    def acquire(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def _objective(space: SearchSpace, out: Path, progress: bool, n: int, gate: _Gate):
    from lvmkit.training.train import train

    def run_trial(trial) -> float:
        optuna = _optuna()
        gate.release()
        states = tuple(getattr(optuna.trial.TrialState, s) for s in _LIVE)
        # Trial numbers are handed out in order, so "fewer than N live trials before this one"
        # lets at most N trials run, however many machines ask at the same moment.
        before = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
        if len(before) >= n:
            trial.set_user_attr("failed_because", f"not needed: {n} trials were already running or finished when it "
                                                  "started")
            raise _Surplus()
        values = space.sample(trial)
        cfg = make_config(space.document(values))
        run_dir = out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")  # who ran it (workers may be on many machines)
        if run_dir.exists():  # a number reused after a storage reset: the old files are stale
            shutil.rmtree(run_dir)
        cb = _Report(trial, space.metric, space.prune)
        try:
            run = train(cfg, run_dir, progress=False, callbacks=[cb])
        except TrainingDiverged as err:
            # A sampled point may diverge (the thesis's searches hit learning rates up to 0.1): the
            # trial ends as stopped early, with the reason, and the worker goes on with the next.
            trial.set_user_attr("stopped_because", str(err))
            if progress:
                print(f"trial {trial.number}: diverged, counted as stopped  ({run_dir})", file=sys.stderr)
            raise optuna.TrialPruned(str(err)) from None
        if cb.pruned:
            if progress:
                print(f"trial {trial.number}: pruned  ({run_dir})", file=sys.stderr)
            raise optuna.TrialPruned()
        if cb.record is None:
            raise LvmkitError(f"Trial {trial.number} trained no epoch, so it has no {space.objective}; see {run_dir}.")
        value = space.metric.score(run, cb.record)
        trial.set_user_attr("split", space.metric.split)
        if progress:
            print(f"trial {trial.number}: {space.objective} {value:.6g}  ({run_dir})", file=sys.stderr)
        return value

    return run_trial


def _optimize(out: Path, worker: int, threads: int | None, progress: bool, errors=None, url: str | None = None,
              lock=None) -> None:
    """One worker: load the study from DIR/study.json (at ``url`` when given: the storage URL
    with its password) and run trials while fewer than N are running, waiting or finished;
    then watch the others' until N are finished, running any stale trial's retry. ``lock`` is
    shared by the local workers (see :class:`_Gate`)."""
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        optuna = _optuna()
        info = json.loads((out / "study.json").read_text())
        space = search_space(out)
        storage = _storage(url or info["storage"], space)
        pruner = optuna.pruners.MedianPruner() if space.prune else optuna.pruners.NopPruner()  # not kept in storage
        study = optuna.load_study(study_name=info["study"], storage=storage, pruner=pruner)
        n = info["trials"]
        import numpy as np

        # Distinct streams per worker and per resume: the same seed again would replay the same points.
        seed = int(np.random.SeedSequence([space.seed, worker, len(study.trials)]).generate_state(1)[0])
        study.sampler = _sampler(info["sampler"], seed)
        gate, stale = _Gate(lock), _Stale(space.grace_period)
        objective = _objective(space, out, progress, n, gate)
        watching = False
        while True:
            gate.acquire()
            try:
                stale(study)
                states = [t.state.name for t in study.get_trials(deepcopy=False)]
                if sum(s in _FINISHED for s in states) >= n:
                    break
                if "WAITING" in states or sum(s in _LIVE for s in states) < n:
                    watching = False
                    try:
                        study.optimize(objective, n_trials=1, catch=(_Surplus,))
                    except optuna.exceptions.UpdateFinishedTrialError:
                        # Our beats stopped for longer than the grace period (a suspended machine):
                        # another worker failed this trial and retried it; the result is dropped.
                        if progress:
                            print("a trial of this worker was failed by another after its heartbeat stopped; going on",
                                  file=sys.stderr)
                    continue
            finally:
                gate.release()
            if progress and not watching:
                print(f"worker {platform.node()}:{os.getpid()}: the other trials run in other workers; watching their heartbeats",
                      file=sys.stderr)
            watching = True
            time.sleep(min(space.heartbeat, 5.0))
    except BaseException as err:
        if errors is None:
            raise
        errors.put(str(err) if isinstance(err, LvmkitError) else f"{type(err).__name__}: {err}")


def search_space(out: str | Path) -> SearchSpace:
    """The space of search directory ``out``: its space.toml with the ``--set`` overrides the
    search was started with."""
    info = json.loads((Path(out) / "study.json").read_text())
    return load_space(Path(out) / "space.toml", info.get("overrides", []))


def _precheck(space: SearchSpace) -> None:
    """Load the base experiment's data once and ask the objective whether a run can compute it,
    so missing data or an impossible objective fails before any directory or trial exists."""
    from lvmkit.data import load_data

    cfg = make_config(space.base)
    try:
        data = load_data(cfg.data, cfg.train.seed)
    except DataError as err:
        raise DataError(f"{str(err).rstrip('.')} (the search reads its data before any trial; another file: "
                        "--set data.path=FILE).") from None
    space.metric.check(cfg, data)


def run_search(space_path: str | Path | None = None, *, trials: int | None = None, workers: int = 1,
               storage: str | None = None, study: str | None = None, out: str | Path | None = None,
               sampler: str | None = None, resume: str | Path | None = None, progress: bool = False,
               overrides: list[str] | None = None):
    """Run (or resume) a hyperparameter search; every trial is a run directory.

    Args:
        space_path: the space TOML file (an experiment with a ``[search]`` table); omit with ``resume``.
        trials: total number of finished trials wanted (default: ``search.trials``, 20).
        workers: local worker processes; each uses ``cpu_count // workers`` torch threads.
        storage: an optuna storage URL (default: ``sqlite:///DIR/study.db``). With a server URL,
            a study of the same name already there is joined (another machine's search); the
            URL's password is kept in memory only (study.json holds the URL without it), so a
            resume takes ``storage`` again, or libpq's PGPASSWORD or ~/.pgpass.
        study: the study name (default: the space file's stem).
        out: the search directory (default: searches/STEM-TIME).
        sampler: "random" (default, seeded by ``train.seed``) or "tpe".
        resume: a search directory to continue until ``trials`` (default: its own) are finished.
            A running trial whose heartbeat is older than ``search.grace_period`` (its worker
            died) is failed and retried once; one whose worker still beats, on this machine or
            another, is left running (and counted).
        progress: one line per trial on stderr.
        overrides: ``key=value`` strings applied to the space file (``train.epochs=2``,
            ``data.path=events.h5``, ``search.objective_labels=10``); kept in study.json.

    Returns:
        The optuna study (``study.user_attrs["directory"]`` is the search directory).

    Raises:
        ConfigError: the space is invalid, or a run of it cannot compute the objective (checked
            before any trial runs).
        DataError: the base experiment's data cannot be loaded.
        LvmkitError: the search directory is missing or already holds a search, the storage
            cannot be reached, or a worker failed.
    """
    optuna = _optuna()
    if workers < 1:
        raise LvmkitError(f"workers must be a positive number of processes, got {workers}.")
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of: {', '.join(SAMPLERS)}; got {sampler!r}.")
    if trials is not None and trials < 1:
        raise LvmkitError(f"trials must be a positive number, got {trials}.")
    if resume is not None:
        if space_path is not None or study is not None or out is not None or overrides:
            raise LvmkitError("--resume continues a search with its own space and storage; do not pass SPACE, --set, "
                              "--study or --out with it.")
        out = Path(resume)
        if not (out / "study.json").is_file():
            raise LvmkitError(f"{str(out)!r} is not a search directory (no study.json); pass the directory 'lvmkit search' printed.")
        info = json.loads((out / "study.json").read_text())
        if storage is not None and _without_password(storage) != info["storage"]:
            raise LvmkitError(f"--storage names the {_where(storage)}, but {str(out)!r} searched on the {_where(info['storage'])}; "
                              "pass the same URL (with its password), or leave --storage out.")
        url = storage or info["storage"]
        if trials is not None:
            info["trials"] = trials
        if sampler is not None:
            info["sampler"] = sampler
        (out / "study.json").write_text(json.dumps(info, indent=2))
        handle = optuna.load_study(study_name=info["study"], storage=_storage(url))  # the workers fail stale trials
    else:
        if space_path is None:
            raise LvmkitError("Pass a space file (an experiment TOML with a [search] table) or --resume DIR.")
        space = load_space(space_path, overrides)
        sampler = sampler or space.sampler
        name = study or Path(space_path).stem
        out = Path(out) if out is not None else Path("searches") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "study.json").exists():
            raise LvmkitError(f"{str(out)!r} already holds a search; continue it with --resume {out} or choose another --out.")
        _precheck(space)
        shared = _storage(storage) if storage else None  # an unreachable server fails before the directory exists
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(space_path, out / "space.toml")
        url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
        try:
            handle = optuna.create_study(study_name=name, storage=shared or _storage(url), direction=space.direction)
            handle.set_user_attr("directory", str(out))
        except optuna.exceptions.DuplicatedStudyError:
            if shared is None:
                raise LvmkitError(f"The storage already holds a study named {name!r}; pass another --study or --resume "
                                  "its directory.") from None
            # Another machine started this study on the shared server: join it. Trials run here
            # are kept in this machine's directory; the study stops at N finished trials in all.
            handle = optuna.load_study(study_name=name, storage=shared)
            if handle.direction.name.lower() != space.direction:
                raise LvmkitError(f"The study {name!r} on the {_where(url)} is to {handle.direction.name.lower()}, but this "
                                  f"space says {space.direction}; pass the same space file or another --study.") from None
        info = {"storage": _without_password(url), "study": name, "sampler": sampler, "trials": trials or space.trials,
                "overrides": list(overrides or [])}
        (out / "study.json").write_text(json.dumps(info, indent=2))
    n = json.loads((out / "study.json").read_text())["trials"]
    count = min(workers, max(0, n - _count(handle, _FINISHED)))
    if count == 1:
        _optimize(out, 0, None, progress, url=url)
    elif count:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        errors, lock = ctx.Queue(), ctx.Lock()
        threads = max(1, (os.cpu_count() or 1) // count)
        procs = [ctx.Process(target=_optimize, args=(out, w, threads, progress, errors, url, lock)) for w in range(count)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if not errors.empty():
            raise LvmkitError(f"A search worker failed: {errors.get()}")
        dead = [p.exitcode for p in procs if p.exitcode]
        if dead and _count(optuna.load_study(study_name=handle.study_name, storage=_storage(url)), _FINISHED) < n:
            raise LvmkitError(f"A search worker exited with status {dead[0]}; continue with --resume {out}.")
        if dead and progress:  # the others retried its trial and finished the study
            print(f"a search worker exited with status {dead[0]}; the other workers finished its trials", file=sys.stderr)
    return optuna.load_study(study_name=handle.study_name, storage=_storage(url))
