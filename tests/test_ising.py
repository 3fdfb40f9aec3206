"""The Ising simulator against exact enumeration and detailed balance, its observables, files,
data source and CLI; the RBM thermodynamics pipeline and the T_c estimators."""
from __future__ import annotations

import importlib
import re

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import chi2

import lvmkit
from lvmkit import ConfigError, DataError
from lvmkit.cli import main
from lvmkit.data import ising

simulate_module = importlib.import_module("lvmkit.data.ising.simulate")  # the package's simulate is the function

from conftest import CONFIGS


def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the lattice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2, 3, 4, 5, 6, 7])
def test_sublattices_colour_the_periodic_lattice_properly(size):
    masks = ising.sublattices(size)
    assert len(masks) == (2 if size % 2 == 0 else 3)
    assert torch.equal(masks.sum(0), torch.ones(size, size, dtype=torch.long))  # every site once
    for m in masks:
        for dim in (0, 1):  # no site shares a bond with a site of its own colour, across the boundary too
            assert not (m & torch.roll(m, 1, dim)).any() or size == 1


def test_observables_of_known_configurations():
    up = np.ones((4, 4), dtype=np.int8)
    checker = np.where(np.add.outer(np.arange(4), np.arange(4)) % 2 == 0, 1, -1).astype(np.int8)
    stripes = np.repeat(np.array([1, -1, 1, -1], dtype=np.int8)[:, None], 4, 1)  # rows alternate
    e, m = ising.energy_magnetization(np.stack([up, checker, stripes]))
    np.testing.assert_allclose(e, [-2.0, 2.0, 0.0])
    np.testing.assert_allclose(m, [1.0, 0.0, 0.0])
    e_h, _ = ising.energy_magnetization(up, field=0.5)
    assert e_h == pytest.approx(-2.5)
    # torch and NumPy agree; L = 2 counts the double bonds of the periodic sum
    two = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert float(ising.energy_magnetization(two)[0]) == pytest.approx(float(ising.energy_magnetization(two.numpy())[0]))
    assert float(ising.energy_magnetization(two)[0]) == pytest.approx(0.0)  # 8 bonds (each pair twice): four +1, four -1
    # a frozen ordered chain: no fluctuations, Binder cumulant 2/3
    obs = ising.measure(np.ones((64, 4, 4), dtype=np.int8), 1.0)
    assert obs["energy"] == -2.0 and obs["energy_error"] == 0.0 and obs["specific_heat"] == 0.0
    assert obs["susceptibility"] == 0.0 and obs["binder"] == pytest.approx(2 / 3)


def test_estimators_match_exact_values_on_independent_exact_samples():
    # draws from the exact Boltzmann distribution test the estimators alone, without any chain
    size, t = 3, 2.5
    p = ising.boltzmann_weights(size, t)
    idx = np.random.default_rng(0).choice(len(p), size=20000, p=p)
    obs = ising.measure(ising.enumerate_states(size)[idx], t)
    exact = ising.exact(size, [t])[0]
    for q in ising.QUANTITIES:
        assert abs(obs[q] - exact[q]) < 3 * obs[f"{q}_error"], q
    assert obs["tau_energy"] == pytest.approx(1.0, abs=0.1)


def test_exact_enumeration_is_consistent():
    # log Z from the states themselves; C = d<e>/dT (fluctuation-dissipation) by finite differences
    size, t, h = 3, 2.0, 0.3
    e, _ = ising.energy_magnetization(ising.enumerate_states(size), h)
    r = ising.exact(size, [t - 1e-4, t, t + 1e-4], field=h)
    assert r[1]["log_z"] == pytest.approx(float(np.log(np.exp(-9 * e / t).sum())), rel=1e-12)
    assert r[1]["specific_heat"] == pytest.approx((r[2]["energy"] - r[0]["energy"]) / 2e-4, rel=1e-5)
    assert np.array_equal(ising.state_index(ising.enumerate_states(size)), np.arange(2**9))
    with pytest.raises(ConfigError, match="up to 4 x 4"):
        ising.exact(5, [2.0])


# -- the simulator against exact enumeration ------------------------------------------------------
def _z_scores(size, temperatures, update, seed=0):
    exact = ising.exact(size, temperatures)
    rows = []
    for t, ex in zip(temperatures, exact):
        r = ising.simulate_temperature(size, t, 200, update=update, seed=seed, chains=200)
        o = r.observables
        rows.append([(o[q] - ex[q]) / o[f"{q}_error"] for q in ("energy", "abs_magnetization", "specific_heat", "susceptibility")])
        assert o["energy_error"] < 0.01 and o["specific_heat_error"] < 0.1  # the error bars are tight, not vacuous
        assert r.update == update and r.spins.shape == (200, size, size) and set(np.unique(r.spins)) <= {-1, 1}
    return np.array(rows)


@pytest.mark.parametrize("update", ["metropolis", "wolff"])
@pytest.mark.parametrize("size", [3, 4])
def test_simulator_matches_exact_enumeration(size, update):
    z = _z_scores(size, [1.5, ising.T_C, 3.5], update)
    assert np.abs(z).max() < 3, z


@pytest.mark.parametrize("update", ["metropolis", "wolff"])
def test_simulator_matches_exact_enumeration_at_ten_temperatures(update):
    z = _z_scores(4, list(np.linspace(1.0, 3.5, 10)), update)
    assert np.abs(z).max() < 3, z
    assert (z**2).mean() < 2.5  # errors neither too small (z large) nor ...
    assert (z**2).mean() > 0.2  # ... much too large


# -- detailed balance on L = 3 (512 states) -------------------------------------------------------
def _exact_start(size, t, n, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(torch.tensor(ising.boltzmann_weights(size, t)), n, replacement=True, generator=g)
    return torch.from_numpy(ising.enumerate_states(size)[idx.numpy()]).float(), g


def _flux_p_value(before, after, states):
    """Detailed balance: pi(a) P(a -> b) = pi(b) P(b -> a), so with chains started from pi the
    counts a -> b and b -> a are binomial halves of their sum; chi-square over the pairs."""
    a, b = ising.state_index(before.numpy()), ising.state_index(after.numpy())
    counts = np.bincount(a * states + b, minlength=states * states).reshape(states, states)
    upper = np.triu(counts, 1)
    lower = np.triu(counts.T, 1)
    total = upper + lower
    keep = total >= 20
    stat = ((upper - lower)[keep] ** 2 / total[keep]).sum()
    return chi2.sf(stat, keep.sum()), int(keep.sum())


def _stationary_p_value(after, p):
    """The chains' states after the update against the Boltzmann weights (chi-square, bins of
    expected count below 5 pooled)."""
    n = len(after)
    counts = np.bincount(ising.state_index(after.numpy()), minlength=len(p))
    expected = n * p
    small = expected < 5
    obs, exp = counts[~small], expected[~small]
    if small.any():
        obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    return chi2.sf(((obs - exp) ** 2 / exp).sum(), len(obs) - 1)


@pytest.mark.parametrize("t", [1.8, 3.0])
def test_metropolis_sublattice_updates_satisfy_detailed_balance(t):
    x, g = _exact_start(3, t, 300000, seed=1)
    rule = ising.Metropolis(3)
    for k in range(3):
        u = torch.rand(x.shape, generator=g)
        y = rule.update_sublattice(x, 1 / t, 0.0, k, u)
        p_value, pairs = _flux_p_value(x, y, 512)
        assert pairs > 100 and p_value > 1e-3, (k, p_value)
        moved = (ising.state_index(x.numpy()) != ising.state_index(y.numpy())).mean()
        assert moved > 0.05
    sweep = rule.step(x, 1 / t, 0.0, g)
    assert _stationary_p_value(sweep, ising.boltzmann_weights(3, t)) > 1e-3


@pytest.mark.parametrize("t", [1.8, 3.0])
def test_wolff_steps_satisfy_detailed_balance(t):
    x, g = _exact_start(3, t, 300000, seed=2)
    y = ising.Wolff(3).step(x, 1 / t, 0.0, g)
    p_value, pairs = _flux_p_value(x, y, 512)
    assert pairs > 100 and p_value > 1e-3, p_value
    assert _stationary_p_value(y, ising.boltzmann_weights(3, t)) > 1e-3


def test_metropolis_with_a_field_keeps_the_boltzmann_distribution():
    x, g = _exact_start(3, 2.0, 300000, seed=3)
    weights = ising.boltzmann_weights(3, 2.0, field=0.4)
    x = torch.from_numpy(ising.enumerate_states(3)[np.random.default_rng(3).choice(512, 300000, p=weights)]).float()
    rule = ising.Metropolis(3)
    y = rule.update_sublattice(x, 0.5, 0.4, 1, torch.rand(x.shape, generator=g))
    assert _flux_p_value(x, y, 512)[0] > 1e-3
    assert _stationary_p_value(rule.step(x, 0.5, 0.4, g), weights) > 1e-3


def test_metropolis_reaches_the_stripes_of_the_two_by_two_lattice():
    # with every site attempted, L = 2 stripes flip to inverted stripes for ever (dE = 0 flips are
    # forced); the attempt probability lets them relax to the Boltzmann distribution
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).expand(20000, 2, 2).clone()
    rule = ising.Metropolis(2)
    for _ in range(30):
        x = rule.step(x, 1 / 2.0, 0.0, g)
    assert _stationary_p_value(x, ising.boltzmann_weights(2, 2.0)) > 1e-3


# -- files, source, CLI --------------------------------------------------------------------------
def test_simulate_writes_a_file_the_ising_source_reads(tmp_path):
    path = ising.simulate(4, [1.5, 3.0], 40, tmp_path, seed=0, chains=20)
    with h5py.File(path, "r") as f:
        assert f["spins"].dtype == np.int8 and f["spins"].shape == (80, 4, 4)
        assert set(np.unique(f["spins"][()])) == {-1, 1}
        np.testing.assert_array_equal(f["temperature"][()], [1.5] * 40 + [3.0] * 40)
    rows = ising.read_observables(path)
    assert [r["temperature"] for r in rows] == [1.5, 3.0] and rows[0]["abs_magnetization"] > rows[1]["abs_magnetization"]
    assert all(r["burn_in"] >= 64 and r["interval"] >= 1 and r["tau_energy"] >= 0.5 for r in rows)
    data = lvmkit.load_data(lvmkit.DataConfig(name="ising", path=str(path)), seed=0)
    assert data.shape == (1, 4, 4) and data.class_names == ["T=1.5", "T=3"]
    assert data.info["temperatures"] == [1.5, 3.0]
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    assert set(torch.unique(x).tolist()) == {0.0, 1.0} and len(x) == 80
    assert set(torch.cat([data.train.y, data.test.y]).tolist()) == {0, 1}


def test_a_killed_simulation_keeps_its_finished_temperatures(tmp_path, monkeypatch):
    real = simulate_module.simulate_temperature
    calls = []

    def dies_at_the_second(*args, **kwargs):
        calls.append(args[1])
        if calls == [2.0, 3.0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "simulate_temperature", dies_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        ising.simulate(4, [2.0, 3.0], 20, tmp_path, chains=10)
    parts = sorted(p.name for p in (tmp_path / "parts").iterdir())
    assert parts == ["L4_h+0_T2.000000.h5"] and not (tmp_path / "ising_L4.h5").exists()
    first = (tmp_path / "parts" / parts[0]).stat().st_mtime_ns
    calls.clear()
    path = ising.simulate(4, [2.0, 3.0], 20, tmp_path, chains=10)
    assert calls == [3.0]  # only the unfinished temperature ran again
    assert (tmp_path / "parts" / parts[0]).stat().st_mtime_ns == first
    # the same seed gives the same configurations as an uninterrupted run
    fresh = ising.simulate(4, [2.0, 3.0], 20, tmp_path / "fresh", chains=10)
    with h5py.File(path, "r") as f, h5py.File(fresh, "r") as g:
        np.testing.assert_array_equal(f["spins"][()], g["spins"][()])
    with pytest.raises(lvmkit.LvmkitError, match=r"was simulated with other settings \(n 20.*now 30\)"):
        ising.simulate(4, [2.0], 30, tmp_path, chains=10)


def test_cli_simulate_ising(capsys, tmp_path):
    code, out, err = _cli(capsys, "simulate", "ising", "--size", "3", "--temperatures", "1.5:3.0:2", "--n", "30",
                          "--seed", "1", "--out", str(tmp_path), "--update", "metropolis", "--chains", "10")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "ising_L3.h5")
    assert re.search(r"T = 1\.5 \(metropolis\): tau_int \|M\| [\d.]+, E [\d.]+ sweeps; burn-in \d+ steps", err)
    with h5py.File(tmp_path / "ising_L3.h5", "r") as f:
        assert f["spins"].shape == (60, 3, 3) and sorted(set(f["temperature"][()])) == [1.5, 3.0]
    code, out, err = _cli(capsys, "simulate", "ising", "--size", "3", "--temperatures", "1.5,3.0", "--n", "30",
                          "--seed", "1", "--out", str(tmp_path), "--update", "metropolis", "--chains", "10")
    assert code == 0 and err.count("finished before") == 2


@pytest.mark.parametrize("case", ["size-1", "negative-t", "zero-t", "bad-list", "wolff-field", "unknown-update",
                                  "spins-not-pm1"])
def test_bad_input_gives_one_line_and_status_2(case, capsys, tmp_path):
    sim = ["simulate", "ising", "--n", "5", "--out", str(tmp_path)]
    args, pattern = {
        "size-1": ([*sim, "--size", "1", "--temperatures", "2"], r"lattice size must be an integer of at least 2, got 1"),
        "negative-t": ([*sim, "--size", "4", "--temperatures", "2,-1"], r"Temperatures must be positive and finite, got -1"),
        "zero-t": ([*sim, "--size", "4", "--temperatures", "0"], r"Temperatures must be positive and finite, got 0"),
        "bad-list": ([*sim, "--size", "4", "--temperatures", "warm"], r"--temperatures takes comma-separated numbers"),
        "wolff-field": ([*sim, "--size", "4", "--temperatures", "2", "--field", "0.5", "--update", "wolff"],
                        r"Wolff cluster updates need h = 0, got --field 0.5"),
        "unknown-update": ([*sim, "--size", "4", "--temperatures", "2", "--update", "heatbath"],
                           r"Unknown Ising update 'heatbath'; choose one of: metropolis, wolff, auto"),
        "spins-not-pm1": (None, r"Spins in '.*bad.h5' must be \+-1, but they hold values such as 0"),
    }[case]
    if case == "spins-not-pm1":
        with h5py.File(tmp_path / "bad.h5", "w") as f:
            f["spins"] = np.random.default_rng(0).integers(0, 2, (30, 4, 4)).astype(np.int8)
            f["temperature"] = np.full(30, 2.0)
        args = ["train", str(CONFIGS / "vae_digits.toml"), "--set", "data.name=ising", "--set", f"data.path={tmp_path / 'bad.h5'}"]
    code, out, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    if case == "spins-not-pm1":
        with pytest.raises(DataError, match=r"must be \+-1"):
            ising.read_ising(tmp_path / "bad.h5")
