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
    # the thesis's Figure 4.5: the best trials' validation curves, coloured by the objective
    assert summary["figure"] == "top_trials.png" and (search_dir / "top_trials.png").stat().st_size > 1000
    assert 'src="top_trials.png"' in html.read_text()


def test_resume_retries_a_dead_workers_trial_and_runs_only_the_missing(tmp_path):
    out = tmp_path / "s"
    run_search(_space(tmp_path, heartbeat=1, grace_period=2), trials=2, out=out)
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="space", storage=storage)
    dead = study.ask()  # a worker without a heartbeat (an older lvmkit) that sampled its parameters and was killed
    load_space(out / "space.toml").sample(dead)
    study = run_search(resume=out, trials=4)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states[dead.number] == "FAIL" and len(states) == 5
    assert len(list((out / "trials").iterdir())) == 4  # two before, two now; the dead one never wrote a run
    again = [t for t in study.trials if t.user_attrs.get("retried_from") == dead.number]
    assert len(again) == 1 and again[0].params == dead.params and again[0].state.name == "COMPLETE"
    assert again[0].system_attrs["retry_history"] == [dead.number]  # optuna's record of the retry
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


def test_diverging_trial_is_stopped_with_its_reason_and_the_worker_goes_on(tmp_path):
    # Adam at lr 1e12 sends the weights to inf within a few steps: such a trial's loss becomes nan.
    space = _space(tmp_path, {"train.lr": {"type": "categorical", "choices": [1e12, 1e-3]},
                              "model.latent_dim": {"type": "int", "low": 2, "high": 4}})
    study = run_search(space, trials=6, workers=1, out=tmp_path / "s")  # the seeded draws hold both rates
    states = {t.number: (t.state.name, t.params["train.lr"]) for t in study.trials}
    assert len(states) == 6 and {s for s, _ in states.values()} == {"PRUNED", "COMPLETE"}  # the worker went on
    assert all((state == "PRUNED") == (lr > 1) for state, lr in states.values())
    rows = json.loads((search_report(tmp_path / "s").parent / "search.json").read_text())["trials"]
    assert all(("loss became" in (r["note"] or "")) == (r["state"] == "PRUNED") for r in rows)


def assert_shared_study(study, out: Path, n: int) -> None:
    """N finished trials, numbered 0..N-1, each run once (one run directory, its own parameters),
    by two worker processes."""
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * n
    assert sorted(t.number for t in study.trials) == list(range(n))
    runs = {t.user_attrs["run_dir"] for t in study.trials}
    assert len(runs) == n and sorted(p.name for p in (out / "trials").iterdir()) == [f"{i:04d}" for i in range(n)]
    for t in study.trials:
        epochs = [r["epoch"] for r in _metrics(t.user_attrs["run_dir"])]
        assert epochs == list(range(1, len(epochs) + 1))  # one training per directory, no epoch logged twice
    assert len({t.params["train.lr"] for t in study.trials}) == n  # each worker has its own sampler seed
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2


def test_two_workers_share_the_study(tmp_path):
    study = run_search(_space(tmp_path), trials=4, workers=2, out=tmp_path / "w")
    assert_shared_study(study, tmp_path / "w", 4)


def test_layers_parameter_draws_one_depth_for_every_list_and_round_trips():
    layers = {"type": "layers", "layers": {"low": 1, "high": 3},
              "model.kernels": {"type": "categorical", "choices": [3, 5, 7], "order": "descending"},
              "model.channels": {"type": "int", "low": 2, "high": 16, "log": True}}
    base = {**BASE, "model": {**BASE["model"], "network": "conv", "hidden": []}}
    space = parse_space({**base, "search": {"params": {"conv": layers}}})
    assert space.keys() == ["model.kernels", "model.channels"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(30):
        trial = study.ask()
        values = space.sample(trial)
        k, c = values["model.kernels"], values["model.channels"]
        assert 1 <= len(k) <= 3 and len(c) == len(k) and k == sorted(k, reverse=True)
        assert all(2 <= v <= 16 for v in c) and set(k) <= {3, 5, 7}
        assert space.values(trial.params) == values  # what the report and best.toml read back
        assert space.summaries(values) == {"conv.layers": len(k), "max model.kernels": max(k), "max model.channels": max(c)}
        cfg = lvmkit.make_config(space.document(values))
        assert cfg.model.kernels == k and cfg.model.channels == c
        depths.add(len(k))
    assert depths == {1, 2, 3}
    with pytest.raises(lvmkit.ConfigError, match=r"'conv' of type 'layers' needs the number of layers"):
        parse_space({**base, "search": {"params": {"conv": {"type": "layers", "model.kernels": layers["model.kernels"]}}}})


def test_one_entry_of_a_list_is_a_parameter():
    base = {**BASE, "train": {**BASE["train"], "betas": [0.9, 0.99]}}
    space = parse_space({**base, "search": {"params": {"train.betas[0]": {"type": "float", "low": 0.2, "high": 0.95}}}})
    assert lvmkit.make_config(space.document({"train.betas[0]": 0.55})).train.betas == (0.55, 0.99)
    assert "train.betas[0]" in space.summaries({"train.betas[0]": 0.5})  # ranked in the Spearman table (Table 4.5's beta1)
    with pytest.raises(lvmkit.ConfigError, match=r"sets one entry of train.betas, but the base experiment does not set train.betas"):
        parse_space({**BASE, "search": {"params": {"train.betas[0]": {"type": "float", "low": 0.2, "high": 0.95}}}})


@pytest.mark.parametrize("search, match", [
    ({"objective": "probe_f1"}, r"'probe_f1' needs search.objective_class"),
    ({"objective": "test_loss"}, r"'test_loss' scores the test split, which selection never sees; use .* 'val_loss'"),
    ({"objective": "auroc"}, r"'auroc' needs anomalies in the validation split"),
    ({"objective": "val_loss", "objective_class": 1}, r"search.objective_class configures search.objective 'probe_f1', not 'val_loss'"),
    ({"objective": "probe_f1", "objective_class": 1, "direction": "minimize"}, r"a score to maximize, but search.direction = 'minimize'"),
    ({"objective": "probe_f1", "objective_class": 1, "prune": True}, r"search.prune needs an objective reported every epoch"),
    ({"objective": "probe_f1", "objective_class": 1, "objective_labels": 0}, r"objective_labels must be a positive integer, got 0"),
])
def test_objective_errors_name_the_problem(search, match):
    with pytest.raises(lvmkit.ConfigError, match=match):
        parse_space({**BASE, "search": {**search, "params": PARAMS}})


@pytest.mark.parametrize("change, match", [
    ({"objective_labels": 50}, r"objective_labels = 50 labelled examples per class, but class \d has only \d+ in the training split"),
    ({"objective_class": "seven"}, r"objective_class 'seven' is not a class of the data; its classes are: '0', '1'"),
    ({"objective_class": 12}, r"objective_class = 12 is not a label of the training split"),
])
def test_an_objective_the_runs_cannot_compute_fails_before_any_training(tmp_path, change, match):
    space = _space(tmp_path, objective="probe_f1", direction="maximize", **{"objective_class": 3, **change})
    with pytest.raises(lvmkit.ConfigError, match=match):
        run_search(space, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_probe_objective_needs_an_encoder(tmp_path):
    doc = {"data": BASE["data"], "model": {"kind": "gan", "latent_dim": 2}, "train": {**BASE["train"], "patience": 0}}
    path = tmp_path / "gan.toml"
    path.write_text(_toml.dumps(doc) + '\n[search]\nobjective = "probe_f1"\nobjective_class = 3\n[search.params]\n'
                    '"train.lr" = {type = "float", low = 1e-4, high = 1e-2, log = true}\n')
    with pytest.raises(lvmkit.ConfigError, match=r"probes a model's codes, but the gan family has no encoder; use a family that has one \(autoencoder"):
        run_search(path, out=tmp_path / "s")


def test_shipped_digits_space_selects_on_validation_probe_f1(tmp_path):
    from lvmkit.cli import bundled_config
    from lvmkit.search.study import search_space

    out = tmp_path / "digits"
    study = run_search(bundled_config("search/digits_convae.toml"), trials=2, out=out,
                       overrides=["train.epochs=1", "data.limit=600"])
    space = search_space(out)
    assert space.metric.split == "validation" and json.loads((out / "study.json").read_text())["overrides"][0] == "train.epochs=1"
    for t in study.trials:
        run = lvmkit.Run.open(t.user_attrs["run_dir"])
        assert run.config.train.epochs == 1 and len(run.config.model.kernels) == len(run.config.model.channels)
        assert t.value == pytest.approx(space.metric.measure(run, "val"))  # the f1 of the validation split, recomputed
        assert t.user_attrs["split"] == "validation"
    search_report(out)
    summary = json.loads((out / "search.json").read_text())
    assert summary["objective_split"] == "validation" and "scored on the validation split" in summary["objective_description"]
    assert "every number on this page comes from the validation split" in (out / "search.html").read_text()
    assert "conv.layers" in summary["spearman"] and "train.betas[0]" in summary["spearman"]
    assert "lvmkit repeat" in (out / "best.toml").read_text().splitlines()[1]
    assert lvmkit.load_config(out / "best.toml").train.betas[1] == 0.99


def test_unreachable_storage_is_one_line_naming_host_and_port_without_the_password(capsys, tmp_path):
    code = main(["search", str(_space(tmp_path)), "--storage", "postgresql+psycopg://bob:s3cret@127.0.0.1:1/lvm",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "host '127.0.0.1', port 1" in err and "user 'bob'" in err and "s3cret" not in err
    assert not (tmp_path / "s").exists()


def test_shipped_search_spaces_validate():
    from lvmkit.cli import bundled_config

    folder = bundled_config("search")
    spaces = {p.name: load_space(p) for p in sorted(folder.glob("*.toml"))}
    assert {"attpc_convae.toml", "attpc_draw.toml", "digits_convae.toml"} <= set(spaces)
    convae = spaces["attpc_convae.toml"]  # Table 4.1: 3-6 layers, selected on the validation proton f1
    assert convae.params["conv"].count.low == 3 and convae.params["conv"].count.high == 6
    assert (convae.metric.target, convae.metric.split, convae.direction) == ("proton", "validation", "maximize")


def test_top_trials_figure_scales_curves_that_share_no_scale():
    from lvmkit.search.report import _incomparable, _unit_range

    assert not _incomparable([[300.0, 250.0], [310.0, 240.0]])  # one loss, one scale: drawn as they are
    assert _incomparable([[300.0, 250.0], [-1.0e4, -2.0e4]])    # a Gaussian NLL below zero beside a Bernoulli one
    assert _incomparable([[3000.0, 2500.0], [30.0, 20.0]])      # last values a factor 125 apart
    assert _unit_range([-1.0e4, -2.0e4, -1.5e4]) == [1.0, 0.0, 0.5]
