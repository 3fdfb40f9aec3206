"""Time-series families on packed series: the layout, its bad inputs, masks, batch-composition
independence, the circle's vector field, a conformance check per family and the CLI path."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit import DataError
from lvmkit.cli import main
from lvmkit.data import load_data
from lvmkit.models.timeseries import HELD_OUT, OBSERVED, channels, pack, unpack

from conftest import CONFIGS

TINY_SPIRALS = {"name": "spirals", "scale": "none", "n_series": 40, "window_points": 20, "observed_points": 12,
                "extrapolate_points": 10}
SMALL_NETS = {"latent_dim": 4, "rnn_hidden": 8, "ode_hidden": [8], "hidden": [8], "likelihood": "gaussian",
              "activation": "tanh"}
# The keys each family's config takes (an unused key is an error).
FAMILY_KEYS = {"latent-ode": set(SMALL_NETS), "rnn": {"rnn_hidden", "hidden", "likelihood", "activation"},
               "neural-ode": {"ode_hidden", "likelihood", "activation"}}


def small_nets(kind: str) -> dict:
    return {k: v for k, v in SMALL_NETS.items() if k in FAMILY_KEYS[kind]}
FAMILY_CASES = {
    "latent-ode": {"kind": "latent-ode"},
    "latent-ode-odernn-rk4": {"kind": "latent-ode", "recognition": "ode-rnn", "ode_solver": "rk4", "ode_step": 0.1},
    "latent-ode-adjoint": {"kind": "latent-ode", "ode_adjoint": True, "learn_sigma": True},
    "latent-ode-linear+mlp": {"kind": "latent-ode", "vector_field": "linear+mlp"},
    "rnn": {"kind": "rnn"},
    "neural-ode-mlp": {"kind": "neural-ode"},
    "neural-ode-linear": {"kind": "neural-ode", "vector_field": "linear"},
}


@pytest.fixture(scope="module")
def spirals():
    return load_data(lvmkit.make_config({"data": TINY_SPIRALS}).data)


def _model(case: str, shape):
    torch.manual_seed(0)
    cfg = lvmkit.make_config({"data": TINY_SPIRALS, "model": {**small_nets(FAMILY_CASES[case]["kind"]), **FAMILY_CASES[case]}})
    return cfg, lvmkit.build_model(cfg.model, shape)


# -- the packed layout and its bad inputs -------------------------------------------------------
def test_pack_and_unpack_round_trip_with_padding_and_missing_values():
    times = [np.array([0.0, 0.5, 2.0]), np.array([1.0, 1.5])]
    values = [np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]), np.array([[6.0, 7.0], [8.0, 9.0]])]
    codes = [np.array([[1, 0], [1, 1], [2, 2]]), np.ones((2, 2))]
    x = pack(times, values, codes)
    assert x.shape == (2, 3, 5) and x.dtype == np.float32
    assert x[1, 2, 0] == 1.5 and (x[1, 2, 1:] == 0).all()  # padding repeats the last time, codes 0
    back = unpack(x)
    for (t, v, c), t0, v0, c0 in zip(back, times, values, codes):
        np.testing.assert_array_equal(t, t0)
        np.testing.assert_array_equal(c, c0)
        np.testing.assert_array_equal(np.isnan(v), c0 == 0)
        np.testing.assert_array_equal(v[c0 != 0], v0[c0 != 0])


@pytest.mark.parametrize("case, pattern", [
    ("non-increasing", r"Series 'b' has non-increasing times \(0.5 after 0.5\)"),
    ("nan-without-mask", r"Series 'a' holds 1 NaN values but no mask was given"),
    ("nan-under-mask-1", r"NaN values where its mask says the value is present"),
    ("one-observation", r"Series 'b' has 1 observed time; every series needs at least two"),
])
def test_pack_rejects_bad_series_with_one_clear_sentence(case, pattern):
    times = [np.array([0.0, 1.0]), np.array([0.0, 0.5, 1.0])]
    values = [np.array([[1.0], [2.0]]), np.array([[1.0], [2.0], [3.0]])]
    codes = None
    if case == "non-increasing":
        times[1] = np.array([0.0, 0.5, 0.5])
    elif case == "nan-without-mask":
        values[0] = np.array([[np.nan], [2.0]])
    elif case == "nan-under-mask-1":
        values[0] = np.array([[np.nan], [2.0]])
        codes = [np.ones((2, 1)), np.ones((3, 1))]
    elif case == "one-observation":
        codes = [np.ones((2, 1)), np.array([[1.0], [2.0], [2.0]])]
    with pytest.raises(DataError, match=pattern):
        pack(times, values, codes, names=["a", "b"])


def _csv(tmp_path: Path, text: str) -> dict:
    p = tmp_path / "s.csv"
    p.write_text(text)
    return {"name": "series-csv", "scale": "none", "path": str(p)}


GOOD_ROWS = "".join(f"s{i},{t},{t * (i + 1)},{1 - t}\n" for i in range(6) for t in (0, 1, 2, 3))


@pytest.mark.parametrize("case, text, pattern", [
    ("no-id", "series,time,a,b\n" + GOOD_ROWS, r"has no id column 'id' \(its columns: series, time, a, b\); rename the column or set data.id_column"),
    ("no-time", "id,t,a,b\n" + GOOD_ROWS, r"has no time column 'time'"),
    ("non-increasing", "id,time,a,b\ns0,0,1,1\ns0,2,1,1\ns0,1,1,1\n" + GOOD_ROWS, r"Series 's0' .* non-increasing times \(1 after 2, line 4\)"),
    ("one-observation", "id,time,a,b\nlone,0,1,1\n" + GOOD_ROWS, r"Series 'lone' has 1 observed time; every series needs at least two"),
    ("bad-number", "id,time,a,b\ns0,0,x,1\n" + GOOD_ROWS, r"Line 2 of .* has 'x' in column 'a', not a number"),
])
def test_csv_reader_rejects_bad_input(case, text, pattern, tmp_path):
    with pytest.raises(DataError, match=pattern):
        load_data(lvmkit.make_config({"data": _csv(tmp_path, text)}).data)


def test_csv_source_normalises_time_and_holds_out_targets(tmp_path):
    text = "id,time,a,b\n" + "".join(f"s{i},{10 + 5 * t},{t},{'' if t == 1 else 2 * t}\n" for i in range(10) for t in range(8))
    cfg = {**_csv(tmp_path, text), "extrapolate_fraction": 0.25}
    data = load_data(lvmkit.make_config({"data": cfg}).data)
    assert data.info["time_offset"] == 10.0 and data.info["time_scale"] == 35.0 and data.info["features"] == ["a", "b"]
    t, v, c = unpack(data.test.x)[0]
    np.testing.assert_allclose(t, np.arange(8) * 5 / 35, rtol=1e-6)
    assert c[1, 1] == 0 and np.isnan(v[1, 1])                       # the missing value
    assert (c[-2:] == HELD_OUT).all() and (c[:6][c[:6] != 0] == OBSERVED).all()  # last 25% of the span


def test_time_series_sources_need_unscaled_data(tmp_path):
    with pytest.raises(lvmkit.ConfigError, match=r"set data.scale = 'none'"):
        load_data(lvmkit.make_config({"data": {**TINY_SPIRALS, "scale": "minmax"}}).data)
    with pytest.raises(lvmkit.ConfigError, match=r"data.scale = 'minmax' / data.binarize = 'none' cannot apply; leave "
                                                 r"data.scale unset \(or 'none' to keep the values as given\)"):
        load_data(lvmkit.make_config({"data": {**_csv(tmp_path, "id,time,a\ns,0,1\ns,1,2\n"), "scale": "minmax"}}).data)


# -- the data's own units ---------------------------------------------------------------------------
def _hundreds(tmp_path: Path, name: str, n: int = 24, standardised: bool = False) -> tuple[Path, float, float]:
    """Series 340 + 10 sin(t + phase) + noise at irregular times (or their z-scores over the whole
    file), as a long-format CSV; returns the path and the file's mean and std."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        t = np.sort(rng.uniform(0.0, 6.0, 16))
        rows += [(f"s{i}", tt, 340.0 + 10.0 * np.sin(tt + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.5)) for tt in t]
    v = np.array([r[2] for r in rows])
    mean, std = float(v.mean()), float(v.std())
    p = tmp_path / name
    p.write_text("id,time,level\n" + "".join(f"{i},{t:.6f},{((x - mean) / std if standardised else x):.6f}\n"
                                                for i, t, x in rows))
    return p, mean, std


def _tiny_csv_run(path: Path, out: Path, **data) -> lvmkit.Run:
    cfg = lvmkit.make_config({
        "data": {"name": "series-csv", "path": str(path), "holdout_fraction": 0.3, "extrapolate_fraction": 0.2, **data},
        "model": {**SMALL_NETS, "kind": "latent-ode"},
        "train": {"epochs": 4, "batch_size": 8, "lr": 0.01, "patience": 0, "device": "cpu", "seed": 0}})
    return lvmkit.train(cfg, out, progress=False)


def test_series_scaler_standardises_observed_values_and_keeps_times_codes_and_gaps(tmp_path):
    text = "id,time,a,b\n" + "".join(f"s{i},{t},{300 + 7 * i + t},{'' if t == 2 else -50 * t}\n"
                                      for i in range(12) for t in range(6))
    cfg = {"name": "series-csv", "path": str(tmp_path / "s.csv"), "holdout_fraction": 0.3, "extrapolate_fraction": 0.2}
    (tmp_path / "s.csv").write_text(text)
    data = load_data(lvmkit.make_config({"data": cfg}).data)
    raw = load_data(lvmkit.make_config({"data": {**cfg, "scale": "none"}}).data)
    scaler = data.scaler
    assert scaler.name == "series-standard" and data.info["scaler"]["codes"] == [-1, 3, 4, -1, -1]
    t, v, c = channels(raw.train.x)
    seen = [v[..., j][c[..., j] == OBSERVED].double() for j in range(2)]  # the training split's observed values
    np.testing.assert_allclose(scaler.shift, [0.0, seen[0].mean(), seen[1].mean(), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(scaler.span, [1.0, seen[0].std(unbiased=False), seen[1].std(unbiased=False), 1.0, 1.0],
                               rtol=1e-5)
    for split, unscaled in ((data.train, raw.train), (data.test, raw.test)):
        ts, vs, cs = channels(split.x)
        _, vr, cr = channels(unscaled.x)
        torch.testing.assert_close(ts, channels(unscaled.x)[0])
        torch.testing.assert_close(cs, cr)
        assert (vs[cs == 0] == 0).all()                                       # absent stays 0
        present = cr != 0                                                     # observed and held out alike
        span, shift = torch.tensor(scaler.span[1:3]).float(), torch.tensor(scaler.shift[1:3]).float()
        torch.testing.assert_close((vs * span + shift)[present], vr[present], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(scaler.inverse(data.test.x.numpy()), raw.test.x.numpy(), atol=1e-4)
    stored = lvmkit.data.scaling.Scaler.from_state(json.loads(json.dumps(scaler.state())))
    np.testing.assert_array_equal(stored.transform(raw.test.x.numpy()), data.test.x.numpy())


def test_csv_time_scale_defaults_to_the_longest_series_span(tmp_path):
    # Windows cut from one long record at different times: each spans at most one unit of model time.
    text = "id,time,a\n" + "".join(f"w{i},{100 * i + t},{t}\n" for i in range(8) for t in range(0, 1 + 10 + (i == 3) * 10))
    data = load_data(lvmkit.make_config({"data": _csv(tmp_path, text)}).data)
    assert data.info["time_offset"] == 0.0 and data.info["time_scale"] == 20.0
    data = load_data(lvmkit.make_config({"data": {**_csv(tmp_path, text), "time_scale": 5.0}}).data)
    assert data.info["time_scale"] == 5.0


def test_a_series_in_the_hundreds_trains_like_its_standardised_copy(tmp_path):
    """The oracle: standardising is affine, so the run on values near 340 sees (up to float
    rounding) the same scaled data as the run on its z-scores, and trains to the same loss; its
    errors are the copy's times the file's std, and the model's scaled errors times the scaler's."""
    hundreds, mean, std = _hundreds(tmp_path, "h.csv")
    copy, _, _ = _hundreds(tmp_path, "z.csv", standardised=True)
    run_h = _tiny_csv_run(hundreds, tmp_path / "h")
    run_z = _tiny_csv_run(copy, tmp_path / "z")
    loss_h, loss_z = run_h.read_metrics()[-1]["val_loss"], run_z.read_metrics()[-1]["val_loss"]
    assert loss_h == pytest.approx(loss_z, rel=1e-3)
    data = run_h.data()
    model = run_h.load_model()
    ev = model.evaluate_split(data.test, k=1, scaler=data.scaler)
    assert ev["interp_points"] > 0 and ev["extrap_points"] > 0
    span = data.scaler.span[1]
    assert 5.0 < span < 9.0  # 10 sin: std 7.07
    for kind in ("interp", "extrap"):
        assert ev[f"{kind}_rmse"] == pytest.approx(ev[f"{kind}_rmse_scaled"] * span, rel=1e-6)
        assert ev[f"{kind}_rmse_scaled"] == pytest.approx(model.evaluate_split(data.test, k=1)[f"{kind}_rmse"], rel=1e-6)
    ev_z = run_z.load_model().evaluate_split(run_z.data().test, k=1, scaler=run_z.data().scaler)
    assert ev["interp_rmse"] == pytest.approx(ev_z["interp_rmse"] * std, rel=1e-2)
    # Without the scaling the same series train to a loss orders of magnitude higher.
    with pytest.warns(lvmkit.LvmkitWarning):
        run_raw = _tiny_csv_run(hundreds, tmp_path / "raw", scale="none")
    assert run_raw.read_metrics()[-1]["val_loss"] > 1e3 * abs(loss_h)


def test_unscaled_series_warn_with_cause_and_fix_and_scaled_ones_do_not(tmp_path):
    hundreds, _, _ = _hundreds(tmp_path, "h.csv", n=12)
    with pytest.warns(lvmkit.LvmkitWarning, match=r"latent-ode model's first loss is [\d.e+]+ times what its Gaussian "
                                                   r"likelihood \(sigma = 0.1\) implies for data of unit scale.*Leave "
                                                   r"data.scale unset so data.name = 'series-csv' standardises each feature"):
        _tiny_csv_run(hundreds, tmp_path / "raw", scale="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _tiny_csv_run(hundreds, tmp_path / "scaled")
        lvmkit.train(lvmkit.make_config({"data": TINY_SPIRALS, "model": {"kind": "rnn", "rnn_hidden": 8, "hidden": [8]},
                                         "train": {"epochs": 1, "device": "cpu"}}), tmp_path / "spirals", progress=False)


def test_forecasts_and_figures_come_back_in_the_data_units(tmp_path):
    hundreds, _, _ = _hundreds(tmp_path, "h.csv", n=12)
    run = _tiny_csv_run(hundreds, tmp_path / "h")
    inp = tmp_path / "new.csv"
    inp.write_text("id,time,level\na,0,341.5\na,0.7,347.25\na,1.9,339\n")
    res = lvmkit.forecast(run, inp, until=4.0, points=10, samples=5, out=tmp_path / "f.csv")
    rows = [r.split(",") for r in (tmp_path / "f.csv").read_text().splitlines()[1:]]
    assert [r[3] for r in rows if r[3]] == ["341.5", "347.25", "339"]       # observations as given
    means = np.array([float(r[4]) for r in rows])
    assert ((means > 300) & (means < 380)).all(), means                   # predictions in the data's units
    assert res["series"] == 1
    from lvmkit.report import write_report

    html = write_report(run).read_text()
    assert "<h2>Trajectories</h2>" in html


# -- masks and batch composition ------------------------------------------------------------------
def test_spiral_series_lie_on_the_curve_away_from_its_ends():
    from lvmkit.data.series import spiral_curves
    from lvmkit.data.series import spirals as make_spirals

    cfg = lvmkit.make_config({"data": {**TINY_SPIRALS, "n_series": 60, "curve_points": 100, "obs_noise": 0.0}}).data
    raw = make_spirals(cfg)
    ts, cw, cc = spiral_curves(points=100)
    starts = []
    for row, label in zip(raw.x, raw.y):
        curve = cc if label else cw
        i0 = int(np.argmin(np.abs(curve - row[0, 1:3]).sum(1)))
        np.testing.assert_allclose(row[:, 1:3], curve[i0 : i0 + 30], atol=1e-5)  # window 20 + 10 extrapolated
        np.testing.assert_allclose(row[:, 0], ts[i0 : i0 + 30] - ts[i0], atol=1e-5)
        starts.append(i0)
    assert min(starts) >= 20 and max(starts) <= 100 - 30 - 20  # margin: window_points = 20 at both ends
    assert max(starts) - min(starts) > 20  # starts spread over the allowed range
    with pytest.raises(lvmkit.ConfigError, match=r"Each spiral has 25 points \(data.curve_points\), fewer than"):
        make_spirals(lvmkit.make_config({"data": {**TINY_SPIRALS, "curve_points": 25}}).data)


def test_masked_entries_contribute_nothing(spirals):
    """Values under code 0 or 2 change neither the loss nor its gradient; the likelihood equals
    the explicit sum over observed entries."""
    cfg, model = _model("latent-ode", spirals.shape)
    x = spirals.train.x[:8].clone()
    d = 2
    eps = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    codes = x[..., 1 + d :]
    noisy = x.clone()
    noisy[..., 1 : 1 + d] = torch.where(codes == OBSERVED, x[..., 1 : 1 + d], torch.randn_like(codes) * 100)

    def loss_and_grads(batch):
        model.zero_grad()
        loss, _ = model.series_loss(batch, step=10**6, eps=eps)
        loss.sum().backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (l1, g1), (l2, g2) = loss_and_grads(x), loss_and_grads(noisy)
    torch.testing.assert_close(l2, l1, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # -log p(x|z) by hand: a Gaussian term for every observed entry and nothing else.
    from lvmkit.models.timeseries.parts import masked_log_lik

    mean = torch.randn(2, 3, 2)
    xs = torch.randn(2, 3, 2)
    mask = torch.tensor([[[1, 0], [1, 1], [0, 0]], [[0, 0], [0, 1], [1, 1]]], dtype=torch.float32)
    sigma = float(model.likelihood.log_sigma.exp())
    by_hand = (mask * (-0.5 * ((xs - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi))).sum((1, 2))
    torch.testing.assert_close(masked_log_lik(model.likelihood, mean, xs, mask), by_hand)


@pytest.mark.parametrize("case", ["latent-ode", "rnn", "neural-ode-mlp"])
def test_a_series_loss_does_not_depend_on_its_batch(case, spirals):
    """Series 0 in two batches with different companions (and a different position) gets the
    same loss. Per-sample solves make this exact up to float rounding of batched matmuls, so
    the comparison allows 1e-5 relative."""
    _, model = _model(case, spirals.shape)
    x = spirals.train.x
    batch_a = x[[0, 1, 2, 3]]
    batch_b = x[[5, 9, 0, 11, 14, 20, 21]]
    kw = {}
    if case == "latent-ode":
        eps = torch.randn(len(x), 4, generator=torch.Generator().manual_seed(2))
        kw_a, kw_b = {"eps": eps[[0, 1, 2, 3]]}, {"eps": eps[[5, 9, 0, 11, 14, 20, 21]]}
    else:
        kw_a = kw_b = kw
    with torch.no_grad():
        la, _ = model.series_loss(batch_a, step=50, **kw_a)
        lb, _ = model.series_loss(batch_b, step=50, **kw_b)
        pred_a, pred_b = model.predict(batch_a)[0][0], model.predict(batch_b)[0][2]
    torch.testing.assert_close(la[0], lb[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred_a, pred_b, rtol=1e-5, atol=1e-5)


def test_rnn_predicts_rows_before_the_first_observation_with_its_values(spirals):
    from lvmkit.data.packing import HELD_OUT, OBSERVED, channels

    _, model = _model("rnn", spirals.shape)
    x = spirals.train.x[:6].clone()
    t, v, c = channels(x)
    c[:, :3] = HELD_OUT  # the first three rows become held-out targets
    c[:, 3] = OBSERVED
    with torch.no_grad():
        pred = model.predict(x)[0]
    torch.testing.assert_close(pred[:, :3], v[:, 3:4].expand(-1, 3, -1))
    assert not torch.allclose(pred[:, 4:], v[:, 3:4].expand(-1, pred.shape[1] - 4, -1))
    c[:, 3, 1] = HELD_OUT  # feature 1 of row 3 is now a target: it must not be carried back
    c[:, 4:, 1] = OBSERVED
    with torch.no_grad():
        pred = model.predict(x)[0]
    torch.testing.assert_close(pred[:, :3, 0], v[:, 3:4, 0].expand(-1, 3))
    torch.testing.assert_close(pred[:, :4, 1], v[:, 4:5, 1].expand(-1, 4))


# -- the seed's circle: the linear vector field --------------------------------------------------
def test_linear_vector_field_is_recovered_on_circular_data():
    """Seed report sec. 5.1.1: x(0) = (1, 0), one point x(t_stop) per series; the fitted A is
    [[0, -1], [1, 0]] within 0.02 (full-batch L-BFGS here for speed; the config trains with Adam)."""
    cfg = lvmkit.make_config({"data": {"name": "circle", "scale": "none", "n_series": 150},
                              "model": {"kind": "neural-ode", "vector_field": "linear", "likelihood": "gaussian",
                                        "sigma": 1.0, "ode_rtol": 1e-6, "ode_atol": 1e-7}})
    data = load_data(cfg.data)
    torch.manual_seed(0)
    model = lvmkit.build_model(cfg.model, data.shape)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=60, line_search_fn="strong_wolfe", tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        out = model(data.train.x)
        out.loss.backward()
        return out.loss

    opt.step(closure)
    ev = model.evaluate_split(data.test, k=1)
    assert np.abs(np.array(ev["A"]) - np.array([[0.0, -1.0], [1.0, 0.0]])).max() < 0.02, ev["A"]
    assert np.abs(ev["b"]).max() < 0.02 and ev["interp_rmse"] < 0.01


# -- conformance of each family ---------------------------------------------------------------
@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_family_evaluation_reports_both_error_kinds(case, spirals):
    """The generic checks run in test_conformance.py; here: interpolation and extrapolation errors."""
    _, model = _model(case, spirals.shape)
    ev = model.evaluate_split(spirals.test, k=1)
    assert ev["interp_points"] > 0 and ev["extrap_points"] > 0 and np.isfinite(ev["extrap_rmse"])


def test_kl_weight_warms_up_with_the_shared_schedule(spirals):
    cfg = lvmkit.make_config({"data": TINY_SPIRALS, "model": {**SMALL_NETS, "kind": "latent-ode", "warmup_steps": 100}})
    torch.manual_seed(0)
    model = lvmkit.build_model(cfg.model, spirals.shape)
    x, eps = spirals.train.x[:4], torch.zeros(4, 4)
    with torch.no_grad():
        (l0, parts), (l50, _), (l200, _) = (model.series_loss(x, s, eps=eps) for s in (0, 50, 200))
    torch.testing.assert_close(l0, parts["recon"])
    torch.testing.assert_close(l50, parts["recon"] + 0.5 * parts["kl"])
    torch.testing.assert_close(l200, parts["recon"] + parts["kl"])


def test_image_data_is_refused_with_a_clear_error():
    cfg = lvmkit.make_config({"model": {**SMALL_NETS, "kind": "latent-ode"}})
    with pytest.raises(DataError, match=r"packed series of shape \(T, 1 \+ 2D\), but the data has examples of shape \(1, 8, 8\)"):
        lvmkit.build_model(cfg.model, (1, 8, 8))
    cfg = lvmkit.make_config({"model": {"kind": "rnn", "likelihood": "bernoulli"}})
    with pytest.raises(lvmkit.ConfigError, match=r"set model.likelihood = 'gaussian'"):
        lvmkit.build_model(cfg.model, (20, 5))


# -- the command line ----------------------------------------------------------------------------
def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


SMOKE = ["--quiet", "--set", "train.max_steps=3", "--set", "data.n_series=30", "--set", "data.observed_points=10",
         "--set", "data.window_points=20", "--set", "data.extrapolate_points=10", "--set", "model.rnn_hidden=8",
         "--set", "model.hidden=[8]", "--set", "train.batch_size=10"]
SMOKE_FAMILY = {"latent_ode_spirals.toml": ["--set", "model.ode_hidden=[8]"], "rnn_spirals.toml": []}


@pytest.mark.parametrize("config", ["latent_ode_spirals.toml", "rnn_spirals.toml"])
def test_train_evaluate_forecast_report_on_spirals(config, capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", str(CONFIGS / config), "--out", str(run), *SMOKE, *SMOKE_FAMILY[config])
    assert code == 0, err
    html = (run / "report.html").read_text()
    assert "<h2>Trajectories</h2>" in html
    assert ("<h2>Latent trajectories</h2>" in html) == config.startswith("latent")
    assert ("<h2>Function evaluations</h2>" in html) == config.startswith("latent")

    code, out, err = _cli(capsys, "evaluate", str(run))
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["interp_points"] > 0 and ev["extrap_points"] > 0 and np.isfinite(ev["extrap_rmse"])

    inp = tmp_path / "new.csv"
    inp.write_text("id,time,x,y\na,0,5.3,1.0\na,0.3,5.0,1.4\na,0.9,4.5,2.1\nb,0.1,-4,1\nb,0.5,-4.4,\nb,0.6,-4.5,1.3\n")
    code, out, err = _cli(capsys, "forecast", str(run), "--input", str(inp), "--until", "6", "--points", "20",
                          "--samples", "5", "--out", str(tmp_path / "f.csv"))
    assert code == 0, err
    assert out.split() == [str(tmp_path / "f.csv"), str(tmp_path / "f.png")]
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert rows[0] == "id,time,feature,observed,mean,lower,upper"
    last = rows[-1].split(",")
    assert last[:3] == ["b", "6", "y"] and last[3] == "" and float(last[5]) <= float(last[4]) <= float(last[6])
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"

    code, _, err = _cli(capsys, "forecast", str(run), "--input", str(inp), "--until", "-1")
    assert code == 2 and err.count("\n") == 1
    assert "--until -1 is not after the first time (0) of series 'a'; choose a later time." in err


def test_neural_ode_and_csv_configs_train(capsys, tmp_path):
    for config, extra in (("neural_ode_circle.toml", ["--set", "data.n_series=60", "--set", "model.ode_step=0.5"]),
                          ("neural_ode_spiral_adjoint.toml", ["--set", "data.n_series=30", "--set", "model.ode_rtol=1e-3",
                                                              "--set", "model.ode_atol=1e-4"]),
                          ("latent_ode_csv.toml", ["--set", f"data.path={CONFIGS / 'series_example.csv'}",
                                                   "--set", "model.ode_hidden=[8]"])):
        run = tmp_path / config
        code, out, err = _cli(capsys, "train", str(CONFIGS / config), "--out", str(run), "--quiet", "--no-report",
                              "--set", "train.max_steps=2", "--set", "train.epochs=1", *extra)
        assert code == 0, (config, err)
        code, out, err = _cli(capsys, "evaluate", str(run))
        assert code == 0, (config, err)


def test_forecast_of_an_image_run_is_refused(capsys, trained_run, tmp_path):
    inp = tmp_path / "x.csv"
    inp.write_text("id,time,x\na,0,1\na,1,2\n")
    code, _, err = _cli(capsys, "forecast", str(trained_run.path), "--input", str(inp), "--until", "3")
    assert code == 2 and "needs a run trained on time series" in err and err.count("\n") == 1


def test_sample_of_a_time_series_run_points_to_forecast(capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = _cli(capsys, "train", str(CONFIGS / "rnn_spirals.toml"), "--out", str(run), "--no-report", *SMOKE)
    assert code == 0, err
    code, _, err = _cli(capsys, "sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npy"))
    assert code == 2 and "use 'lvmkit forecast RUN --input FILE --until T'" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "quality", str(run), "--n", "10")
    assert code == 2 and "lvmkit quality needs a model that is a generator, but this GRUForecaster is not" in err
