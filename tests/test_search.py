"""Hyperparameter search: space validation, a seeded random search whose objectives are the
runs' own metrics, resume after a dead worker, the report's Spearman table and best.toml."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from scipy.stats import spearmanr

import lvmkit
from lvmkit.cli import main
from lvmkit.core import _toml
from lvmkit.search import load_space, parse_space, run_search, search_report

BASE = {
    "data": {"name": "digits", "limit": 400},
    "model": {"kind": "vae", "latent_dim": 2, "hidden": [16]},
    "train": {"epochs": 3, "batch_size": 64, "patience": 0, "device": "cpu", "seed": 3},
}
PARAMS = {
    "model.latent_dim": {"type": "int", "low": 2, "high": 8, "log": True},
    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.hidden": {"type": "categorical", "choices": [[16], [32, 16]]},
    "model.warmup_steps": {"type": "fixed", "value": 5},
}


def _space(tmp_path: Path, params=None, **search) -> Path:
    search = {"objective": "val_loss", "direction": "minimize", **search}
    lines = [_toml.dumps(BASE), "[search]", *(f"{k} = {_toml._value(v)}" for k, v in search.items()), "[search.params]"]
    for name, spec in (params or PARAMS).items():  # quoted dotted keys, inline tables, as users write them
        lines.append(f'"{name}" = {{' + ", ".join(f"{k} = {_toml._value(v)}" for k, v in spec.items()) + "}")
    path = tmp_path / "space.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _metrics(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("spec, match", [
    ({"type": "normal", "low": 0, "high": 1}, r"unknown type 'normal'; valid types are: int, float, categorical, bool, fixed"),
    ({"type": "float", "low": 1e-2, "high": 1e-4}, r"needs low < high, got low = 0.01 and high = 0.0001"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, r"log-scaled but low = 0.0 is not positive"),
    ({"type": "categorical", "choices": []}, r"needs a non-empty list of choices"),
    ({"type": "int", "low": 1, "high": 4, "step": 2}, r"unknown key 'step'; valid keys for type 'int' are: low, high, log"),
])
def test_space_errors_name_the_problem(spec, match):
    doc = {**BASE, "search": {"params": {"train.lr": spec}}}
    with pytest.raises(lvmkit.ConfigError, match=match):
        parse_space(doc)


def test_space_keys_are_checked_against_the_experiment_config():
    with pytest.raises(lvmkit.ConfigError, match=r"'model.latent_dimm' = 2 is rejected by the experiment config: Unknown config key 'model.latent_dimm'"):
        parse_space({**BASE, "search": {"params": {"model.latent_dimm": {"type": "int", "low": 2, "high": 8}}}})
    with pytest.raises(lvmkit.ConfigError, match=r"'train.batch_size' = 0 is rejected .*Invalid value for 'train.batch_size'"):
        parse_space({**BASE, "search": {"params": {"train.batch_size": {"type": "int", "low": 0, "high": 8}}}})
    with pytest.raises(lvmkit.ConfigError, match=r"search.direction must be 'minimize' or 'maximize', got 'down'"):
        parse_space({**BASE, "search": {"direction": "down", "params": PARAMS}})
    space = parse_space({**BASE, "search": {"params": {**PARAMS, "data.anomaly_split": {"type": "bool"}}}})
    assert space.seed == 3 and space.objective == "val_loss"


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("search")
    out = tmp / "s"
    run_search(_space(tmp), trials=4, out=out)
    return out


def test_random_search_objective_is_each_runs_best_epoch(search_dir):
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{search_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert sorted(p.name for p in (search_dir / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    space = load_space(search_dir / "space.toml")
    for t in study.trials:
        run = lvmkit.Run.open(t.user_attrs["run_dir"])
        # the VAE selects on val loss: the objective is its best epoch, not the last
        assert t.value == min(r["val_loss"] for r in _metrics(run.path))
        want = space.values(t.params)
        assert run.config.model.latent_dim == want["model.latent_dim"] and run.config.train.lr == want["train.lr"]
        assert run.config.model.hidden == want["model.hidden"] and run.config.model.warmup_steps == 5
        assert run.config.train.seed == 3
    assert len({t.params["train.lr"] for t in study.trials}) == 4  # a seeded random sampler, not one point


def test_report_spearman_and_best_toml(search_dir):
    html = search_report(search_dir)
    assert html == search_dir / "search.html" and "Spearman" in html.read_text()
    summary = json.loads((search_dir / "search.json").read_text())
    values = [r["value"] for r in summary["trials"]]
    assert values == sorted(values)
    for name in ("model.latent_dim", "train.lr"):
        xs = [r["params"][name] for r in summary["trials"]]
        if len(set(xs)) > 1:
            res = spearmanr(xs, values)
            assert summary["spearman"][name]["rho"] == pytest.approx(res.statistic)
            assert summary["spearman"][name]["pvalue"] == pytest.approx(res.pvalue)
    assert "model.hidden" not in summary["spearman"]  # lists are not ranked
    best = lvmkit.load_config(search_dir / "best.toml")
    params = summary["trials"][0]["params"]
    assert best.model.latent_dim == params["model.latent_dim"] and best.train.lr == params["train.lr"]
    assert best.model.hidden == params["model.hidden"]


def test_resume_requeues_a_dead_workers_trial_and_runs_only_the_missing(tmp_path):
    out = tmp_path / "s"
    run_search(_space(tmp_path), trials=2, out=out)
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="space", storage=storage)
    dead = study.ask()  # a worker that sampled its parameters and was killed
    load_space(out / "space.toml").sample(dead)
    study = run_search(resume=out, trials=4)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states[dead.number] == "FAIL"
    assert len(list((out / "trials").iterdir())) == 4  # two before, two now; the dead one never wrote a run
    again = [t for t in study.trials if t.user_attrs.get("requeued_from") == dead.number]
    assert len(again) == 1 and again[0].params == dead.params and again[0].state.name == "COMPLETE"
    assert run_search(resume=out).trials == study.trials  # nothing left to do


def test_cli_search_and_report(capsys, tmp_path):
    out = tmp_path / "cli"
    code = main(["search", str(_space(tmp_path)), "--trials", "2", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(out)
    assert main(["search-report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "search.html")
    assert (out / "best.toml").is_file()


def test_cli_bad_space_is_one_line(capsys, tmp_path):
    space = _space(tmp_path, {"train.lr": {"type": "float", "low": 1.0, "high": 0.5}})
    code = main(["search", str(space), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: Search parameter 'train.lr' needs low < high")
    assert not (tmp_path / "bad").exists()  # nothing is created before the space is valid


def test_pruned_trial_stops_training_after_the_epoch_it_was_pruned(tmp_path):
    from lvmkit.search.study import _Report  # the pruning hook; MedianPruner needs 5 trials before it prunes

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # every loss is > 0: prune at once
    trial = study.ask()
    cb = _Report(trial, "val_loss", prune=True)
    run = lvmkit.train(lvmkit.make_config(BASE), tmp_path / "run", progress=False, callbacks=[cb])
    assert cb.pruned and len(_metrics(run.path)) == 1  # of 3 epochs
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: _metrics(run.path)[0]["val_loss"]}


def test_two_workers_share_the_study(tmp_path):
    study = run_search(_space(tmp_path), trials=2, workers=2, out=tmp_path / "w")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    assert len({t.params["train.lr"] for t in study.trials}) == 2  # each worker has its own sampler seed
