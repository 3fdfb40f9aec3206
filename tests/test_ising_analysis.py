"""The Ising analyses end to end: the RBM thermodynamics pipeline on L = 4 against the trained
RBM's own exact distribution (2^16 states enumerated), the T_c estimators on synthetic
two-phase data whose transition is known by construction, the finite-size fit on exact
points, and the CLI commands with their bad-input lines."""
from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import DataError
from lvmkit.analysis.ising import crossing, finite_size_fit, peak, probe_curve
from lvmkit.cli import main
from lvmkit.data import ising

from conftest import CONFIGS


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _exact_under_rbm(model, size: int, temperature: float) -> dict:
    """E, |M|, C and chi of the distribution p(v) ~ exp(-F(v)) of a binary RBM over all
    2^(L^2) visible states, with the simulator's definitions."""
    states = ising.enumerate_states(size)
    v = torch.from_numpy((states.reshape(len(states), -1) + 1) / 2).float()
    with torch.no_grad():
        p = torch.softmax(-model.layer.free_energy(v).double(), 0).numpy()
    e, m = ising.energy_magnetization(states)
    n, beta = size * size, 1.0 / temperature
    a = np.abs(m)
    avg = lambda x: float((p * x).sum())  # noqa: E731
    return {"energy": avg(e), "abs_magnetization": avg(a), "specific_heat": n * beta**2 * (avg(e**2) - avg(e) ** 2),
            "susceptibility": n * beta * (avg(m**2) - avg(a) ** 2)}


def test_rbm_thermodynamics_pipeline_end_to_end_on_four_by_four(capsys, tmp_path):
    sim = ising.simulate(4, [1.5, 3.5], 400, tmp_path / "sim", chains=100)
    code, out, err = _cli(capsys, "ising-thermo", sim, "--config", CONFIGS / "ising_rbm_L8.toml", "--out", tmp_path / "thermo",
                          "--set", "model.hidden=16", "--set", "train.epochs=10", "--set", "train.batch_size=10",
                          "--set", "train.optimizer=sgd", "--set", "train.lr=0.05", "--set", "train.weight_decay=1e-4", "--set", "model.cd_steps=5", "--chains", "100", "--steps", "300",
                          "--keep", "100")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == str(tmp_path / "thermo" / "ising_thermo.html") and len(lines) == 4  # header, two T, the page
    assert re.match(r"\s*1\.500\s+-1\.9\d+±", lines[1]) and re.match(r"\s*3\.500\s", lines[2])
    assert (tmp_path / "thermo" / "figures" / "thermodynamics.png").is_file()
    assert (tmp_path / "thermo" / "figures" / "lattices.png").is_file()
    res = json.loads((tmp_path / "thermo" / "ising_thermo.json").read_text())
    assert res["model"] == "RBM" and [r["temperature"] for r in res["rows"]] == [1.5, 3.5]
    for row in res["rows"]:
        # the model's estimates (samples of its Gibbs chains) against its exact distribution: the
        # sampler, the spin mapping and the error bars of the pipeline, whatever training reached
        model = lvmkit.Run.open(row["run"]).load_model()
        exact = _exact_under_rbm(model, 4, row["temperature"])
        for q, value in exact.items():
            z = (row["model"][q] - value) / row["model"][f"{q}_error"]
            assert abs(z) < 4, (row["temperature"], q, row["model"][q], value)
        # and it learned the phase: ordered at 1.5, disordered at 3.5
        assert row["relative_difference"]["abs_magnetization"] == pytest.approx(0.0, abs=0.1)
    low, high = res["rows"]
    assert low["relative_difference"]["energy"] == pytest.approx(0.0, abs=0.03)
    assert low["model"]["abs_magnetization"] > 0.95 > 0.6 > high["model"]["abs_magnetization"]


def _two_phase(size: int, t_star: float, temps: np.ndarray, n: int, seed: int, width: float = 0.4):
    """Synthetic configurations with a transition at ``t_star`` by construction: at each T a
    share f(T) = clip(1/2 + (t_star - T) / width, 0, 1) is ordered (each spin along a random
    global sign with probability 0.95), the rest independent +-1."""
    rng = np.random.default_rng(seed)
    spins, ts = [], []
    for t in temps:
        f = float(np.clip(0.5 + (t_star - t) / width, 0.0, 1.0))
        ordered = rng.random(n) < f
        sign = rng.choice([-1, 1], (n, 1, 1))
        along = np.where(rng.random((n, size, size)) < 0.95, sign, -sign)
        spins.append(np.where(ordered[:, None, None], along, rng.choice([-1, 1], (n, size, size))))
        ts.append(np.full(n, t))
    return np.concatenate(spins).astype(np.int8), np.concatenate(ts)


TEMPS = np.round(np.arange(1.6, 3.01, 0.1), 10)


def test_probe_crossing_and_latent_peak_find_a_known_transition():
    spins, temps = _two_phase(8, 2.25, TEMPS, 600, seed=0)
    x = spins.reshape(len(spins), -1).astype(np.float64)
    ts, mean, err = probe_curve(x, temps)
    # mean output = f(T) for a perfect classifier; f is linear through 0.5 at T = 2.25
    assert mean[ts < 2.0].min() > 0.97 and mean[ts > 2.5].max() < 0.03
    assert crossing(ts, mean) == pytest.approx(2.25, abs=0.04)
    f = np.clip(0.5 + (2.25 - ts) / 0.4, 0, 1)
    assert np.all(np.abs(mean - f) < 4 * np.maximum(err, 0.01))
    # PCA's leading latent is the magnetization; its susceptibility peaks near f(1 - f) / T's peak
    from lvmkit.analysis.ising import _pca_latent, latent_susceptibility

    z = _pca_latent(x)
    assert abs(np.corrcoef(np.abs(z), np.abs(x.mean(1)))[0, 1]) > 0.99
    chi_ts, chi = latent_susceptibility(z, temps, 64)
    assert peak(chi_ts, chi) == pytest.approx(2.25, abs=0.1)


def test_crossing_and_peak_interpolate_exactly():
    ts = np.array([1.0, 2.0, 3.0, 4.0])
    assert crossing(ts, np.array([1.0, 0.8, 0.2, 0.0])) == pytest.approx(2.5)
    assert peak(ts, -((ts - 2.3) ** 2)) == pytest.approx(2.3)  # a parabola's vertex, exactly
    with pytest.raises(DataError, match="never falls through 0.5"):
        crossing(ts, np.array([1.0, 0.9, 0.8, 0.7]))


def test_finite_size_fit_recovers_an_exact_line():
    sizes = [8, 16, 32, 64]
    fit = finite_size_fit(sizes, [ising.T_C + 1.7 / s for s in sizes])
    assert fit["t_c"] == pytest.approx(ising.T_C, abs=1e-12) and fit["a"] == pytest.approx(1.7, abs=1e-10)
    assert fit["relative_to_onsager"] == pytest.approx(0.0, abs=1e-12) and fit["t_c_error"] < 1e-9  # no residuals
    # with the points' errors: the weighted fit's error, sigma / sqrt(n) scaling for equal weights
    noisy = finite_size_fit(sizes, [ising.T_C + 1.7 / s for s in sizes], [0.01] * 4)
    assert 0.005 < noisy["t_c_error"] < 0.05
    assert np.isnan(finite_size_fit([8, 16], [2.4, 2.3])["t_c_error"])  # two sizes, no errors: unknown
    assert np.isnan(finite_size_fit([8, 16], [2.4, 2.3], [float("nan")] * 2)["t_c_error"])
    with pytest.raises(DataError, match="two or more lattice sizes"):
        finite_size_fit([16], [2.3])


def test_cli_ising_transition_extrapolates_synthetic_sizes(capsys, tmp_path):
    # T_c(L) = 2.2692 + 1 / L by construction; the probe's crossings extrapolate back to it
    files = []
    for size, seed in ((8, 1), (16, 2)):
        spins, temps = _two_phase(size, ising.T_C + 1.0 / size, TEMPS, 800, seed)
        files.append(ising.write_ising(tmp_path / f"L{size}.h5", spins, temps))
    code, out, err = _cli(capsys, "ising-transition", *files, "--out", tmp_path / "tc", "--bootstrap", "4", "--quiet")
    assert code == 0, err
    assert re.search(r"^L = 8: T_c\(L\) pca [\d.]+ \+- [\d.e-]+, probe [\d.]+", out, re.M)
    assert out.strip().splitlines()[-1] == str(tmp_path / "tc" / "ising_tc.html")
    res = json.loads((tmp_path / "tc" / "ising_tc.json").read_text())
    for row in res["sizes"]:
        assert row["probe"]["t_c"] == pytest.approx(ising.T_C + 1.0 / row["size"], abs=0.03)
        assert row["probe"]["t_c_error"] > 0
    fit = res["extrapolation"]["probe"]
    assert fit["t_c"] == pytest.approx(ising.T_C, abs=0.06) and fit["a"] == pytest.approx(1.0, abs=0.6)
    for name in ("latent", "latent_susceptibility", "probe", "finite_size"):
        assert (tmp_path / "tc" / "figures" / f"{name}.png").is_file()


@pytest.mark.parametrize("case", ["thermo-spins", "thermo-temperature", "thermo-keep", "transition-spins",
                                  "transition-one-phase", "transition-low-high", "transition-set-without-vae"])
def test_analysis_commands_refuse_bad_input_in_one_line(case, capsys, tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["spins"] = np.random.default_rng(0).integers(0, 2, (30, 4, 4)).astype(np.int8)  # {0, 1}, not +-1
        f["temperature"] = np.full(30, 2.0)
    cold_spins, cold_t = _two_phase(4, 2.25, np.array([1.5, 1.7, 1.9]), 20, 0)
    cold = ising.write_ising(tmp_path / "cold.h5", cold_spins, cold_t)
    good = ising.simulate(4, [1.5, 3.0], 20, tmp_path / "sim", chains=10)
    out = ["--out", tmp_path / "o"]
    args, pattern = {
        "thermo-spins": (["ising-thermo", bad, *out], r"Spins in '.*bad\.h5' must be \+-1, but they hold values such as 0"),
        "thermo-temperature": (["ising-thermo", good, *out, "--temperatures", "2.5"],
                               r"holds no configurations at T = \[2\.5\]; it has \[1\.5, 3\.0\]"),
        "thermo-keep": (["ising-thermo", good, *out, "--steps", "10", "--keep", "20"], r"--keep \(20\) cannot exceed --steps \(10\)"),
        "transition-spins": (["ising-transition", bad, *out], r"Spins in '.*bad\.h5' must be \+-1"),
        "transition-one-phase": (["ising-transition", cold, *out],
                                 r"trains on configurations below T = 2\.0 and above T = 2\.5, but the data's temperatures span 1\.5\.\.1\.9"),
        "transition-low-high": (["ising-transition", cold, *out, "--low", "2.5", "--high", "2.0"], r"--low must lie below --high"),
        "transition-set-without-vae": (["ising-transition", cold, *out, "--set", "train.epochs=1"], r"no --vae-config was given"),
    }[case]
    code, stdout, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_vae_config_trains_on_ising_files(tmp_path):
    # the bundled VAE config builds on the ising source and gives a 2-D code per configuration
    spins, temps = _two_phase(8, 2.3, np.array([1.8, 2.3, 2.8]), 60, 0)
    path = ising.write_ising(tmp_path / "L8.h5", spins, temps)
    cfg = lvmkit.load_config(CONFIGS / "ising_vae_L32.toml", [f"data.path={path}", "train.epochs=1"])
    assert cfg.data.name == "ising" and cfg.model.kind == "vae" and cfg.model.latent_dim == 2
    run = lvmkit.train(cfg, tmp_path / "run", progress=False)
    codes = run.load_model().embed(torch.from_numpy((spins[:5] + 1) / 2.0).float()[:, None])
    assert codes.shape == (5, 2) and torch.isfinite(codes).all()
    # the VAE's latent for T_c is odd under a global spin flip, so |z| is blind to the Z2 choice
    from lvmkit.analysis.ising import _vae_latent

    x01 = np.concatenate([(spins + 1) / 2.0, (1 - spins) / 2.0]).astype(np.float32)  # s, then -s
    z = _vae_latent(path, CONFIGS / "ising_vae_L32.toml", ["train.epochs=1"], tmp_path / "run", x01)
    np.testing.assert_allclose(z[: len(spins)], -z[len(spins) :], atol=1e-5)
    assert np.std(z) > 0
