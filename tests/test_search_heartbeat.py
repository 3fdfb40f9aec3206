"""Search workers that die: optuna's RDB heartbeat. Two workers share one study (SQLite and a
throwaway PostgreSQL server, as in CI); one is SIGKILLed while it is known to be inside a
trial's training, and the other fails that trial once its heartbeat is stale, retries it once
and finishes N trials. A --resume started while a worker is alive leaves its trial running.

A worker is pinned inside a trial by a small driver that wraps the training function: on its
first trial it writes a marker file and waits for a gate file (its heartbeat thread keeps
beating). The test waits for the marker, so the kill or the resume happens while the trial is
known to run; no step depends on a sleep alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import lvmkit
from lvmkit.core import _toml
from lvmkit.search import parse_space, run_search
from lvmkit.search.report import search_report
from test_search import BASE, PARAMS, _metrics
from test_search_postgres import postgres_url  # noqa: F401  (the server fixture)

N = 2
# One epoch on 300 digits: a trial takes about a second; a beat every second, stale after 3 s.
FAST = {**BASE, "data": {**BASE["data"], "limit": 300}, "train": {**BASE["train"], "epochs": 1}}

DRIVER = """
import os, sys, time
from pathlib import Path
import lvmkit.training.train as training

space, url, study, out, marker, gate = sys.argv[1:7]
real = training.train

def pinned(cfg, run_dir, **kw):
    # the first trial of this worker says where it runs, then waits for the gate (forever if none)
    if not Path(marker).exists():
        Path(marker).write_text(str(run_dir))
        while not Path(gate).exists():
            time.sleep(0.05)
    return real(cfg, run_dir, **kw)

training.train = pinned
from lvmkit.search import run_search
run_search(space, trials=int(os.environ["TRIALS"]), storage=url, study=study, out=out)
"""


def _space(tmp_path: Path, **search) -> Path:
    search = {"objective": "val_loss", "direction": "minimize", "heartbeat": 1, "grace_period": 3, **search}
    lines = [_toml.dumps(FAST), "[search]", *(f"{k} = {_toml._value(v)}" for k, v in search.items()), "[search.params]"]
    for name, spec in PARAMS.items():
        lines.append(f'"{name}" = {{' + ", ".join(f"{k} = {_toml._value(v)}" for k, v in spec.items()) + "}")
    path = tmp_path / "space.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", TRIALS=str(N))


def _pinned(space: Path, url: str, study: str, out: Path, marker: Path, gate: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(space), url, study, str(out), str(marker), str(gate)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _Search(threading.Thread):
    """The other worker: run_search in a thread of the test process (what a second machine's
    `lvmkit search` runs, without starting one more interpreter)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(daemon=True)
        self.kwargs, self.error = kwargs, None

    def run(self) -> None:
        try:
            run_search(progress=True, **self.kwargs)
        except BaseException as err:  # reported by _until or _finish
            self.error = err

    def poll(self) -> int | None:
        return None if self.is_alive() else int(self.error is not None)


def _until(condition, *workers, timeout: float = 180) -> None:
    """Wait for ``condition()``; a worker that ends meanwhile fails the test with its error."""
    end = time.monotonic() + timeout
    while not condition():
        for w in workers:
            if w.poll() is not None:
                why = repr(w.error) if isinstance(w, _Search) else w.stderr.read()[-3000:]
                pytest.fail(f"a worker ended with {w.poll()} while waiting: {why}")
        if time.monotonic() > end:
            pytest.fail("timed out waiting for the search")
        time.sleep(0.1)


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    from lvmkit.search.study import _storage  # no connection pool: none is left open

    try:
        return optuna.load_study(study_name=study, storage=_storage(url)).trials
    except KeyError:  # the study is not created yet
        return []


def _finish(w) -> None:
    if isinstance(w, _Search):
        w.join(timeout=240)
        assert not w.is_alive() and w.error is None, repr(w.error)
    else:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err[-3000:]


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_once_and_the_study_finishes(storage, tmp_path):
    space, study = _space(tmp_path), f"kill{tmp_path.name[-12:]}"
    marker = tmp_path / "victim-in-trial"
    victim = _pinned(space, storage, study, tmp_path / "a", marker, tmp_path / "never")
    _until(marker.exists, victim)  # the victim is inside its first trial's training
    survivor = _Search(space_path=space, trials=N, storage=storage, study=study, out=tmp_path / "b")
    survivor.start()
    # both work at once: the survivor finished a trial of its own while the victim's runs
    _until(lambda: any(t.state.name == "COMPLETE" for t in _trials(storage, study)), victim, survivor)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    _finish(survivor)

    trials = _trials(storage, study)
    killed = next(t for t in trials if t.user_attrs.get("run_dir") == marker.read_text())
    assert killed.state.name == "FAIL" and killed.user_attrs["worker"].endswith(f":{victim.pid}")
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == N and len({t.number for t in done}) == N
    assert [t.state.name for t in trials].count("FAIL") == 1 and len(trials) == N + 1  # nothing else failed or ran
    retries = [t for t in trials if t.user_attrs.get("retried_from") is not None]
    assert len(retries) == 1 and retries[0].user_attrs["retried_from"] == killed.number  # retried exactly once
    retry = retries[0]
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == killed.number and retry.system_attrs["retry_history"] == [killed.number]
    # every finished trial trained once, in its own directory, by the survivor; distinct points
    assert len({t.user_attrs["run_dir"] for t in done}) == N
    assert all(Path(t.user_attrs["run_dir"]).parent == tmp_path / "b" / "trials" for t in done)
    assert all([r["epoch"] for r in _metrics(t.user_attrs["run_dir"])] == [1] for t in done)
    assert len({t.params["train.lr"] for t in done}) == N
    assert len({t.user_attrs["worker"] for t in done}) == 1
    # the search report says what became of the killed trial, and where its retry came from
    search_report(tmp_path / "b")
    notes = {r["number"]: r["note"] for r in json.loads((tmp_path / "b" / "search.json").read_text())["trials"]}
    assert notes[killed.number] == f"its worker stopped beating (killed or lost); retried as trial {retry.number}"
    assert notes[retry.number] == f"retry of trial {killed.number}"


@pytest.mark.slow
def test_resume_while_a_worker_is_alive_leaves_its_trial_running(storage, tmp_path, capsys):
    space, study = _space(tmp_path), f"live{tmp_path.name[-12:]}"
    marker, gate = tmp_path / "holder-in-trial", tmp_path / "go"
    holder = _pinned(space, storage, study, tmp_path / "a", marker, gate)
    _until(marker.exists, holder)
    resume = _Search(resume=tmp_path / "a")
    resume.start()
    # The resume runs the other trials, then watches the holder's (alive, beating) trial...
    _until(lambda: [t.state.name for t in _trials(storage, study)].count("COMPLETE") == N - 1, holder, resume)
    running = [t for t in _trials(storage, study) if t.state.name == "RUNNING"]
    assert len(running) == 1 and running[0].user_attrs["run_dir"] == marker.read_text()
    # ...for longer than the grace period, checking every beat, before the holder may finish.
    time.sleep(3 + 1)
    assert [t.state.name for t in _trials(storage, study)].count("RUNNING") == 1 and resume.poll() is None
    gate.touch()
    _finish(holder)
    _finish(resume)
    assert "watching their heartbeats" in capsys.readouterr().err

    trials = _trials(storage, study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * N  # nothing failed, retried or run twice
    held = next(t for t in trials if t.user_attrs["run_dir"] == marker.read_text())
    assert held.number == running[0].number and held.user_attrs["worker"].endswith(f":{holder.pid}")
    assert not any("retried_from" in t.user_attrs for t in trials)
    assert len({t.params["train.lr"] for t in trials}) == N


def test_a_trial_past_n_live_ones_is_surplus_and_never_trains(tmp_path):
    from lvmkit.search.study import _Gate, _objective, _Surplus

    space = parse_space({**FAST, "search": {"params": PARAMS}})
    study = optuna.create_study()
    first, second = study.ask(), study.ask()  # two machines asked at once for the last missing trial
    run_trial = _objective(space, tmp_path, False, 1, _Gate())
    with pytest.raises(_Surplus):
        run_trial(second)
    assert second.user_attrs["failed_because"].startswith("not needed: 1 trials were already running")
    assert not (tmp_path / "trials").exists() and second.params == {}  # nothing sampled, nothing trained
    assert run_trial(first) == pytest.approx(min(r["val_loss"] for r in _metrics(first.user_attrs["run_dir"])))


@pytest.mark.parametrize("search, match", [
    ({"heartbeat": 0}, r"search.heartbeat must be a positive number of seconds, got 0; write e.g. heartbeat = 60"),
    ({"heartbeat": "1m"}, r"search.heartbeat must be a positive number of seconds, got '1m'"),
    ({"heartbeat": True}, r"search.heartbeat must be a positive number of seconds, got True"),
    ({"grace_period": -5}, r"search.grace_period must be a positive number of seconds, got -5"),
    ({"heartbeat": 10, "grace_period": 10}, r"grace_period = 10 s is not longer than search.heartbeat = 10 s.*grace_period = 30"),
])
def test_heartbeat_errors_name_the_problem(search, match):
    with pytest.raises(lvmkit.ConfigError, match=match):
        parse_space({**BASE, "search": {**search, "params": PARAMS}})


def test_heartbeat_defaults_suit_trials_of_minutes():
    space = parse_space({**BASE, "search": {"params": PARAMS}})
    assert (space.heartbeat, space.grace_period) == (60.0, 180.0)
    space = parse_space({**BASE, "search": {"heartbeat": 2, "params": PARAMS}})
    assert (space.heartbeat, space.grace_period) == (2.0, 6.0)
