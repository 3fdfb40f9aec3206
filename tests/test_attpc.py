"""AT-TPC events: the Spyral point-cloud reader, projection geometry and charge scaling, the
streaming converter and its bad-input handling, and (with the extra installed) the simulator."""
from __future__ import annotations

import dataclasses
import json
import sys
import tracemalloc
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from lvmkit import ConfigError, DataError, LvmkitError, attpc

from conftest import CONFIGS

SPYRAL_COLUMNS = 8  # x, y, z, amplitude, integral, pad, time, scale


def _cloud(xyzq, n_cols=SPYRAL_COLUMNS):
    """Spyral rows from (x, y, z, amplitude) rows; the integral is twice the amplitude."""
    xyzq = np.atleast_2d(np.asarray(xyzq, dtype=np.float64))
    rows = np.zeros((len(xyzq), n_cols))
    rows[:, :4] = xyzq
    if n_cols > 4:
        rows[:, 4] = 2 * xyzq[:, 3]
    return rows


def _track(n, rng, charge=(10.0, 3000.0)):
    r = rng.uniform(0, 250, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    return _cloud(np.column_stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(0, 1000, n), rng.uniform(*charge, n)]))


def write_spyral(path, clouds: dict, labels: dict | None = None, event_range=None):
    """A Spyral point-cloud file as Spyral's PointcloudPhase writes it (layout in attpc.spyral)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("cloud")
        if event_range is not False:
            lo, hi = event_range or (min(clouds), max(clouds))
            group.attrs["min_event"], group.attrs["max_event"] = lo, hi
        for event, data in clouds.items():
            ds = group.create_dataset(f"cloud_{event}", data=data)
            ds.attrs["ic_amplitude"] = -1.0
            if labels and event in labels:
                ds.attrs["label"] = labels[event]
    return path


# ---- reader ----------------------------------------------------------------------------

def test_reader_yields_xyz_charge_labels_and_counts_missing_events(tmp_path):
    rng = np.random.default_rng(0)
    clouds = {0: _track(5, rng), 1: _track(7, rng), 3: _track(4, rng)}
    path = write_spyral(tmp_path / "run_0001.h5", clouds, labels={0: 1, 3: 2}, event_range=(0, 4))
    reader = attpc.read_spyral(path)
    events = list(reader)
    assert [e.event_id for e in events] == [0, 1, 3]
    assert [e.label for e in events] == [1, None, 2]
    np.testing.assert_array_equal(events[1].points, clouds[1][:, :4])
    assert reader.skipped == {"missing": 2} and reader.n_read == 3
    integral = next(iter(attpc.read_spyral(path, charge="integral")))
    np.testing.assert_array_equal(integral.points[:, 3], clouds[0][:, 4])


def test_reader_without_range_attributes_uses_dataset_names(tmp_path):
    rng = np.random.default_rng(1)
    path = write_spyral(tmp_path / "r.h5", {12: _track(3, rng), 2: _track(3, rng)}, event_range=False)
    assert [e.event_id for e in attpc.read_spyral(path)] == [2, 12]


def test_reader_rejects_files_that_are_not_spyral_point_clouds(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="is not an HDF5 file"):
        attpc.read_spyral(text)
    with h5py.File(tmp_path / "traces.h5", "w") as f:
        f.create_group("get")
    with pytest.raises(DataError, match=r"has no 'cloud' group \(it has \['get'\]\)"):
        attpc.read_spyral(tmp_path / "traces.h5")
    with pytest.raises(DataError, match="does not exist"):
        attpc.read_spyral(tmp_path / "absent.h5")
    with pytest.raises(DataError, match="Unknown charge column 'charge'"):
        attpc.read_spyral(tmp_path / "traces.h5", charge="charge")


def _bad_file(tmp_path):
    rng = np.random.default_rng(2)
    nan = _track(6, rng)
    nan[2, 1] = np.nan
    outside = _track(6, rng)
    outside[0, :2] = [250.0, 150.0]  # radius 291.5 mm
    clouds = {0: _track(6, rng), 1: np.zeros((0, SPYRAL_COLUMNS)), 2: nan, 3: outside,
              4: np.arange(5.0), 5: _track(2, rng), 6: _track(6, rng)}
    return write_spyral(tmp_path / "bad.h5", clouds, labels={0: 0, 6: 1, 5: 0})


def test_bad_events_are_skipped_and_counted(tmp_path):
    reader = attpc.read_spyral(_bad_file(tmp_path), min_points=3)
    assert [e.event_id for e in reader] == [0, 6]
    assert reader.skipped == {"empty": 1, "non_finite": 1, "outside_pad_plane": 1, "malformed": 1,
                              "too_few_points": 1}


@pytest.mark.parametrize("drop, message", [
    ((), r"Event 1 of .*bad.h5' has no points; fix or drop the event, or read without strict"),
    ((1,), r"Event 2 .* has 1 points with NaN or infinite x, y, z or charge"),
    ((1, 2), r"Event 3 .* has 1 points outside the 275 mm pad plane \(largest radius 291.5 mm\)"),
    ((1, 2, 3), r"Event 4 .* has shape \(5,\) and dtype float64; expected a numeric \(N, 8\) point cloud"),
])
def test_strict_reading_stops_at_the_first_bad_event(tmp_path, drop, message):
    path = _bad_file(tmp_path)
    with h5py.File(path, "a") as f:
        for event in drop:
            del f[f"cloud/cloud_{event}"]
    with pytest.raises(DataError, match=message):
        list(attpc.read_spyral(path, strict=True))


# ---- representations ---------------------------------------------------------------------

def test_projection_puts_a_point_in_the_expected_pixel():
    # 128 bins over [-275, 275] mm: 4.296875 mm per pixel; image[i, j] = (y bin, x bin).
    img = attpc.project(_cloud([100.0, -50.0, 500.0, 100.0])[:, :4], "xy")
    assert img.shape == (128, 128) and img.dtype == np.float32
    assert list(zip(*np.nonzero(img))) == [(52, 87)]  # floor(225 / 4.297), floor(375 / 4.297)
    corner = attpc.project(np.array([[275.0, 275.0, 0.0, 5.0], [-275.0, -275.0, 0.0, 5.0]]), "xy")
    assert corner[127, 127] == 1 and corner[0, 0] == 1  # the upper edge belongs to the last bin
    assert attpc.project(np.array([[276.0, 0.0, 0.0, 5.0]]), "xy").sum() == 0  # outside: left out
    # z runs over 0-1000 mm: 7.8125 mm per pixel.
    xz = attpc.project(np.array([[-100.0, 30.0, 500.0, 5.0]]), "xz", bins=128)
    assert list(zip(*np.nonzero(xz))) == [(64, 40)]
    yz = attpc.project(np.array([[-100.0, 30.0, 999.0, 5.0]]), "yz", bins=64)
    assert list(zip(*np.nonzero(yz))) == [(63, 35)]


def test_projection_occupancy_matches_histogram2d():
    rng = np.random.default_rng(3)
    pts = np.column_stack([rng.uniform(-275, 275, (500, 2)), rng.uniform(0, 1000, 500), np.full(500, 7.0)])
    for plane, across, up, ranges in [("xy", 0, 1, [[-275, 275], [-275, 275]]), ("xz", 0, 2, [[0, 1000], [-275, 275]])]:
        hist, _, _ = np.histogram2d(pts[:, up], pts[:, across], bins=32, range=ranges)  # rows: the second axis
        np.testing.assert_array_equal(attpc.project(pts, plane, bins=32) > 0, hist > 0)


def test_charge_is_log1p_scaled_to_unit_interval():
    e = np.e
    pts = np.array([[-200.0, 0, 0, 0.0], [0, 0, 0, e - 1], [200.0, 0, 0, e**2 - 1], [200.0, 1.0, 0, 1.0]])
    row = attpc.project(pts, "xy")[64]
    nonzero = row[row > 0]
    np.testing.assert_allclose(nonzero, [0.5, 1.0], rtol=1e-6)  # per-event max: log1p 1 and 2 over 2
    assert row[attpc.project(pts[:1], "xy")[64] > 0].sum() == 0  # zero charge stays dark
    fixed = attpc.project(pts, "xy", scale=4.0)[64]
    np.testing.assert_allclose(fixed[fixed > 0], [0.25, 0.5], rtol=1e-6)  # two points, one pixel: the max
    np.testing.assert_allclose(attpc.log_charge(np.array([-5.0, e**3 - 1]), 2.0), [0.0, 1.0])
    linear = attpc.project(pts, "xy", intensity="linear")[64]  # charges e - 1 and e^2 - 1 over e^2 - 1
    np.testing.assert_allclose(linear[linear > 0], [(e - 1) / (e**2 - 1), 1.0], rtol=1e-6)
    feats, _ = attpc.point_set(pts, n_max=4, scale=5.0, intensity="linear")
    np.testing.assert_allclose(feats[:, 3], [1.0, (e - 1) / 5, 0.2, 0.0], rtol=1e-6)  # e^2 - 1 > 5: clipped
    with pytest.raises(DataError, match="Unknown intensity 'cubic'; choose one of: log1p, linear"):
        attpc.project(pts, "xy", intensity="cubic")


def test_point_set_keeps_the_brightest_points_scaled_and_masked():
    pts = np.array([[275.0, 0, 1000.0, 1.0], [0, -137.5, 0, 100.0], [10, 10, 10, 10.0]])
    feats, mask = attpc.point_set(pts, n_max=5)
    assert feats.shape == (5, 4) and feats.dtype == np.float32 and mask.tolist() == [True] * 3 + [False] * 2
    np.testing.assert_allclose(feats[:, 3], np.log1p([100.0, 10.0, 1.0, 0, 0]) / np.log1p(100.0), rtol=1e-6)
    np.testing.assert_allclose(feats[0, :3], [0, -0.5, 0])
    np.testing.assert_allclose(feats[2, :3], [1, 0, 1])
    few, mask2 = attpc.point_set(pts, n_max=2)
    assert mask2.all() and few[1, 3] == pytest.approx(np.log1p(10.0) / np.log1p(100.0))


def test_azimuthal_alignment_rotates_the_charge_centre_onto_plus_x():
    from lvmkit.data.attpc.project import align_azimuth

    pts = np.array([[0.0, 100.0, 5.0, 3.0], [0.0, 50.0, 7.0, 1.0]])  # both on +y: rotate by -90 degrees
    np.testing.assert_allclose(align_azimuth(pts), [[100.0, 0, 5.0, 3.0], [50.0, 0, 7.0, 1.0]], atol=1e-9)
    rng = np.random.default_rng(0)
    track = _track(40, rng)
    aligned = align_azimuth(track)
    centre = np.average(aligned[:, :2], axis=0, weights=aligned[:, 3])
    assert centre[0] > 0 and abs(centre[1]) < 1e-9
    np.testing.assert_allclose(np.hypot(aligned[:, 0], aligned[:, 1]), np.hypot(track[:, 0], track[:, 1]))
    for phi in (0.3, 2.0, -2.9):  # any rotation of the event about the beam axis aligns to the same points
        c, s = np.cos(phi), np.sin(phi)
        turned = track.copy()
        turned[:, 0], turned[:, 1] = c * track[:, 0] - s * track[:, 1], s * track[:, 0] + c * track[:, 1]
        np.testing.assert_allclose(align_azimuth(turned), aligned, atol=1e-9)
    still = np.array([[10.0, 0, 1, 1.0], [-10.0, 0, 1, 1.0]])  # charge centre on the axis: left as it is
    np.testing.assert_array_equal(align_azimuth(still), still)


# ---- conversion --------------------------------------------------------------------------

def test_convert_writes_chunked_compressed_images_labels_and_skip_counts(tmp_path):
    rng = np.random.default_rng(4)
    a = write_spyral(tmp_path / "run_0001.h5", {i: _track(8, rng) for i in range(10)}, labels={i: i % 3 for i in range(10)})
    b = _bad_file(tmp_path)
    stats = attpc.convert([a, b], tmp_path / "set.h5", min_points=3, chunk=4)
    assert stats["events"] == 12 and stats["labelled"] == 12
    assert stats["per_class"] == {"proton": 5, "carbon": 4, "other": 3}
    assert stats["skipped"] == {"empty": 1, "non_finite": 1, "outside_pad_plane": 1, "malformed": 1, "too_few_points": 1}
    with h5py.File(tmp_path / "set.h5") as f:
        x = f["x"]
        assert x.shape == (12, 1, 128, 128) and x.dtype == np.float32
        assert x.chunks[0] <= 4 and x.compression == "gzip" and x.maxshape[0] is None
        assert f["event_id"][()].tolist() == list(range(10)) + [0, 6]
        assert f["source"][()].tolist() == [0] * 10 + [1, 1]
        assert f["y"][()].tolist() == [i % 3 for i in range(10)] + [0, 1]
        assert list(f.attrs["class_names"]) == ["proton", "carbon", "other"]
        assert f.attrs["skipped_empty"] == 1 and f.attrs["n_events"] == 12
        # The global scale is the largest log1p(amplitude) of the kept events.
        top = max(np.log1p(e.points[:, 3]).max() for p in (a, b) for e in attpc.read_spyral(p, min_points=3))
        assert float(f.attrs["charge_scale"]) == stats["charge_scale"] == pytest.approx(top)
        assert float(x[()].max()) == pytest.approx(1.0)
        first = attpc.project(next(iter(attpc.read_spyral(a))).points, "xy", scale=stats["charge_scale"])
        np.testing.assert_array_equal(x[0, 0], first)
    assert not (tmp_path / "set.h5.partial").exists()
    attpc.convert([a], tmp_path / "aligned.h5", min_points=3, align="azimuth")
    with h5py.File(tmp_path / "aligned.h5") as f:
        from lvmkit.data.attpc.project import align_azimuth

        assert f.attrs["align"] == "azimuth"
        event = next(iter(attpc.read_spyral(a, min_points=3)))
        np.testing.assert_array_equal(f["x"][0, 0], attpc.project(align_azimuth(event.points), "xy",
                                                                  scale=float(f.attrs["charge_scale"])))
    with pytest.raises(DataError, match="Unknown alignment 'north'; choose 'none' or 'azimuth'"):
        attpc.convert([a], tmp_path / "bad.h5", align="north")
    stats = attpc.convert([a], tmp_path / "linear.h5", min_points=3, intensity="linear")
    with h5py.File(tmp_path / "linear.h5") as f:
        top = max(e.points[:, 3].max() for e in attpc.read_spyral(a, min_points=3))
        assert f.attrs["intensity"] == "linear" and stats["charge_scale"] == pytest.approx(top)
        assert float(f["x"][()].max()) == pytest.approx(1.0)


def test_convert_planes_points_uint8_and_label_files(tmp_path):
    rng = np.random.default_rng(5)
    path = write_spyral(tmp_path / "run_0002.h5", {i: _track(30, rng) for i in range(5)})
    s = attpc.convert([path], tmp_path / "three.h5", "xy,xz,yz", bins=32, min_points=1, dtype="uint8", scale=9.0)
    with h5py.File(tmp_path / "three.h5") as f:
        assert f["x"].shape == (5, 3, 32, 32) and f["x"].dtype == np.uint8 and "y" not in f
        assert f["x"].attrs["x_scale"] == pytest.approx(1 / 255) and f.attrs["charge_scale"] == 9.0
    assert s["labelled"] == 0
    (tmp_path / "labels.csv").write_text("evt_id,label\n0,p\n3,c\n4,junk\n")
    attpc.convert([path], tmp_path / "pts.h5", "points", n_max=16, min_points=1, labels=tmp_path / "labels.csv")
    with h5py.File(tmp_path / "pts.h5") as f:
        assert f["x"].shape == (5, 16, 4) and f["mask"][()].all()
        assert f["y"][()].tolist() == [0, -1, -1, 1, 2]
    (tmp_path / "bad.csv").write_text("event,label\n1,muon\n")
    with pytest.raises(DataError, match=r"Line 2 of .*bad.csv' has event '1' and label 'muon'"):
        attpc.convert([path], tmp_path / "x.h5", labels=tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"Event 0 of .* has label 7; expected 0-2 \(proton, carbon, other\)"):
        attpc.convert([path], tmp_path / "x.h5", min_points=1, labels={0: 7})
    with pytest.raises(DataError, match=r"Invalid projection 'xy,zz'; give one or more distinct planes"):
        attpc.convert([path], tmp_path / "x.h5", "xy,zz")


def test_convert_strict_stops_and_leaves_no_output(tmp_path):
    with pytest.raises(DataError, match="Event 1 of .* has no points"):
        attpc.convert([_bad_file(tmp_path)], tmp_path / "out.h5", min_points=1, strict=True)
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.partial").exists()
    with pytest.raises(DataError, match=r"No event of the 1 input file\(s\) passed the filters"):
        attpc.convert([_bad_file(tmp_path)], tmp_path / "out.h5", min_points=100)


def test_convert_memory_does_not_grow_with_the_number_of_events(tmp_path):
    rng = np.random.default_rng(6)

    def peak(n):
        path = write_spyral(tmp_path / f"run_{n}.h5", {i: _track(20, rng) for i in range(n)})
        tracemalloc.start()
        attpc.convert([path], tmp_path / f"set_{n}.h5", min_points=1, chunk=8, scale="event")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(24), peak(240)
    image_bytes = 128 * 128 * 4
    assert large < small + 200_000  # the same few buffers, however many events
    assert large < 240 * image_bytes / 4  # far below holding every image at once


# ---- simulator ---------------------------------------------------------------------------

def test_simulate_without_attpc_engine_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "attpc_engine", None)  # import fails as if not installed
    with pytest.raises(LvmkitError, match=r"install the AT-TPC extra: pip install 'lvmkit\[attpc\]'"):
        attpc.simulate("proton", 2, tmp_path)
    with pytest.raises(LvmkitError, match="Unknown reaction 'alpha'; choose one of: proton, carbon, other"):
        attpc.simulate("alpha", 2, tmp_path)


def test_simulated_events_are_labelled_reproducible_and_readable(tmp_path):
    pytest.importorskip("attpc_engine", reason="install the AT-TPC extra: pip install 'lvmkit[attpc]'")
    proton = attpc.simulate("proton", 3, tmp_path / "a", seed=7, noise_events=2, on_track=0.5)
    again = attpc.simulate("proton", 3, tmp_path / "b", seed=7, noise_events=2, on_track=0.5)
    carbon = attpc.simulate("carbon", 2, tmp_path / "a", seed=8)
    other = attpc.simulate("other", 2, tmp_path / "a", seed=9, on_track=0.0)
    assert proton.name == "run_0001.h5" and carbon.name == "run_0002.h5" and other.name == "run_0003.h5"
    with pytest.raises(LvmkitError, match="exists; pass overwrite=True"):
        attpc.simulate("carbon", 1, tmp_path / "a")

    events = {p: list(attpc.read_spyral(p, strict=True)) for p in (proton, again, carbon, other)}
    assert [e.label for e in events[proton]] == [0, 0, 0, 2, 2]
    assert [e.label for e in events[carbon]] == [1, 1] and [e.label for e in events[other]] == [2, 2]
    for a, b in zip(events[proton], events[again]):
        np.testing.assert_array_equal(a.points, b.points)
    with h5py.File(other) as f:
        for event in (0, 1):
            ds = f[f"cloud/cloud_{event}"]
            assert ds.attrs["track"] == "none" and 20 <= ds.attrs["noise_hits"] <= 300
            assert 0 < ds.shape[0] <= ds.attrs["noise_hits"]  # hits at or below threshold are dropped
            assert (f[f"cloud/labels_{event}"][()] == -1).all()
            assert ds[:, 3].max() <= 4000 and ds[:, 3].min() > 40
    for evs in events.values():
        for e in evs:
            assert np.hypot(e.points[:, 0], e.points[:, 1]).max() < attpc.PAD_PLANE_RADIUS_MM
            assert e.points[:, 3].max() <= 4095
    stats = attpc.convert([proton, carbon, other], tmp_path / "sim.h5", min_points=1)
    assert stats["events"] == 9 and stats["per_class"] == {"proton": 3, "carbon": 2, "other": 4}


# ---- simulator: beam, gas and fields; progress -------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("beam_energy_mev", -5.0, r"^AttpcSetup.beam_energy_mev \(--beam-energy\) must be a positive finite number of MeV, "
                              r"got -5.0; give the 46Ar beam's total kinetic energy, not per nucleon"),
    ("pressure_torr", 0.0, r"^AttpcSetup.pressure_torr \(--pressure\) must be a positive finite number of Torr, got 0.0;"),
    ("pressure_torr", "19.2", r"\(--pressure\) must be .*, got '19.2';"),
    ("efield_v_per_m", float("nan"), r"^AttpcSetup.efield_v_per_m \(--e-field\) must be a positive finite number of V/m, got nan;"),
    ("bfield_t", -1.0, r"^AttpcSetup.bfield_t \(--b-field\) must be a non-negative finite number of T, got -1.0; .* or 0 for no field\.$"),
    ("bfield_t", float("inf"), r"\(--b-field\) must be .*, got inf;"),
])
def test_setup_rejects_impossible_beam_gas_and_fields(field, value, message):
    with pytest.raises(ConfigError, match=message):
        attpc.AttpcSetup(**{field: value})
    assert attpc.AttpcSetup(bfield_t=0).bfield_t == 0  # the magnet off is a setup


_SIM = ["simulate", "attpc", "--reaction", "proton", "--n", "2"]


def test_simulate_command_passes_beam_gas_fields_and_progress_to_the_simulator(tmp_path, capsys, monkeypatch):
    import typer

    from lvmkit.cli import app, main

    calls = []

    def simulate(reaction, n, out, seed, **kwargs):
        calls.append(kwargs)
        return out / "run_0001.h5"

    monkeypatch.setattr(attpc, "simulate", simulate)  # the command imports it from lvmkit.data.attpc
    assert main([*_SIM, "--out", str(tmp_path), "--beam-energy", "150", "--pressure", "30.5", "--e-field", "8000",
                 "--b-field", "0"]) == 0
    assert main([*_SIM, "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "run_0001.h5")] * 2
    given, default = calls
    assert given["setup"] == attpc.AttpcSetup(beam_energy_mev=150.0, pressure_torr=30.5, efield_v_per_m=8000.0, bfield_t=0.0)
    assert default["setup"] == attpc.AttpcSetup()
    assert given["progress"] is True and default["progress"] is False
    # The help states the units and the setup's own defaults.
    command = typer.main.get_command(app).commands["simulate"].commands["attpc"]
    helps = {p.name: p.help for p in command.params}
    setup = attpc.AttpcSetup()
    for name, field, unit in [("beam_energy", "beam_energy_mev", "in MeV, total, not per nucleon"),
                              ("pressure", "pressure_torr", "in Torr"), ("e_field", "efield_v_per_m", "in V/m"),
                              ("b_field", "bfield_t", "in T")]:
        assert unit in helps[name] and f"default: {getattr(setup, field):g}" in helps[name], name


@pytest.mark.parametrize("option, value, field, words", [
    ("--beam-energy", "-5", "beam_energy_mev", "positive finite number of MeV, got -5.0"),
    ("--pressure", "0", "pressure_torr", "positive finite number of Torr, got 0.0"),
    ("--e-field", "inf", "efield_v_per_m", "positive finite number of V/m, got inf"),
    ("--b-field", "nan", "bfield_t", "non-negative finite number of T, got nan"),
])
def test_simulate_command_rejects_impossible_values_in_one_line(tmp_path, capsys, option, value, field, words):
    from lvmkit.cli import main

    assert main([*_SIM, "--out", str(tmp_path / "sim"), option, value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: AttpcSetup.{field} ({option}) must be a {words}; give ")
    assert not (tmp_path / "sim").exists()


def _record_detector(monkeypatch) -> list:
    """Wrap attpc-engine's per-event detector simulation to record its 4-momenta, vertex and config."""
    import attpc_engine.detector.simulator as engine

    detect, calls = engine.simulate, []

    def record(momenta, vertex, proton_numbers, mass_numbers, config, *args):
        calls.append(SimpleNamespace(momenta=momenta.copy(), vertex=vertex.copy(), config=config))
        return detect(momenta, vertex, proton_numbers, mass_numbers, config, *args)

    monkeypatch.setattr(engine, "simulate", record)  # lvmkit imports it at each call
    return calls


def _kinetic(momenta):
    """Kinetic energies (MeV) of rows (px, py, pz, E): E minus the invariant mass."""
    return momenta[:, 3] - np.sqrt(momenta[:, 3] ** 2 - (momenta[:, :3] ** 2).sum(axis=1))


def test_beam_energy_and_pressure_set_the_energy_at_the_vertex(tmp_path, monkeypatch):
    pytest.importorskip("attpc_engine", reason="install the AT-TPC extra: pip install 'lvmkit[attpc]'")
    from attpc_engine import nuclear_map
    from spyral_utils.nuclear.target import GasTarget

    ar46, isobutane = nuclear_map.get_data(18, 46), [(6, 12, 4), (1, 1, 10)]  # C4H10 as (Z, A, atoms)
    calls = _record_detector(monkeypatch)
    setups = {"default": attpc.AttpcSetup(), "faster": attpc.AttpcSetup(beam_energy_mev=300.0),
              "denser": attpc.AttpcSetup(pressure_torr=22.0), "fields": attpc.AttpcSetup(efield_v_per_m=5000.0, bfield_t=0.5),
              "stopping": attpc.AttpcSetup(pressure_torr=100.0)}
    first, depth = {}, {}
    for name, setup in setups.items():
        start = len(calls)
        path = attpc.simulate("proton", 2, tmp_path / name, seed=11, setup=setup)
        meta = json.loads(h5py.File(path).attrs["lvmkit_simulation"])
        assert meta["setup"] == dataclasses.asdict(setup)
        depth[name], first[name] = meta["vertex_depth_m"], calls[start]
        gas = GasTarget(isobutane, setup.pressure_torr, nuclear_map)
        for call in calls[start:]:
            det = call.config.det_params
            assert (det.efield, det.bfield, det.gas_target.pressure) == (setup.efield_v_per_m, setup.bfield_t, setup.pressure_torr)
            assert call.vertex[2] <= depth[name]
            # Rows: target (at rest), 46Ar beam, ejectile, 46Ar residual. The beam reaches the vertex
            # with what the gas leaves it, and elastic scattering (Q = 0) shares exactly that.
            t = _kinetic(call.momenta)
            at_vertex = setup.beam_energy_mev - gas.get_energy_loss(ar46, setup.beam_energy_mev, call.vertex[2:])[0]
            assert t[1] == pytest.approx(at_vertex, rel=1e-9) and t[2] + t[3] == pytest.approx(t[1], rel=1e-6)
    # In these setups the beam crosses the whole drift length, so a seed draws the same vertex and
    # centre-of-mass angle: a faster beam gives a faster proton, a denser gas slows the beam more.
    assert depth["default"] == depth["faster"] == depth["denser"] == 1.0
    assert first["faster"].vertex[2] == first["denser"].vertex[2] == first["default"].vertex[2]
    assert _kinetic(first["faster"].momenta)[2] > 1.2 * _kinetic(first["default"].momenta)[2]
    assert _kinetic(first["denser"].momenta)[1] < _kinetic(first["default"].momenta)[1]
    # At 100 Torr the beam stops after about a quarter of the drift length: vertices are drawn
    # uniformly up to there, the same draw as in 1 m shrunk to that depth.
    assert depth["stopping"] == pytest.approx(GasTarget(isobutane, 100.0, nuclear_map).get_range(ar46, 211.6))
    assert 0.2 < depth["stopping"] < 0.3
    assert first["stopping"].vertex[2] == pytest.approx(first["default"].vertex[2] * depth["stopping"], rel=1e-12)


def test_magnetic_field_bends_the_proton_track(tmp_path):
    pytest.importorskip("attpc_engine", reason="install the AT-TPC extra: pip install 'lvmkit[attpc]'")
    spread = []
    for b in (0.0, 1.68, 3.0):  # the same seed: the same proton, in a stronger field each time
        path = attpc.simulate("proton", 1, tmp_path / str(b), seed=0, setup=attpc.AttpcSetup(bfield_t=b))
        with h5py.File(path) as f:
            xy = f["cloud/cloud_0"][:, :2][f["cloud/labels_0"][()] == 2]  # the ejectile's points on the pad plane
        s = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
        spread.append(s[1] / s[0])  # 0 for a straight line; grows as the track curls
    assert spread[0] < 0.15 < spread[1] < spread[2]


def test_progress_goes_to_stderr_and_leaves_stdout_to_the_file(tmp_path, capsys, monkeypatch):
    pytest.importorskip("attpc_engine", reason="install the AT-TPC extra: pip install 'lvmkit[attpc]'")
    from lvmkit.cli import main

    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # rich would take these for a terminal
        monkeypatch.delenv(var, raising=False)
    attpc.simulate("carbon", 2, tmp_path / "api", seed=1)
    assert capsys.readouterr() == ("", "")  # library use is quiet
    cmd = ["simulate", "attpc", "--reaction", "carbon", "--out", str(tmp_path / "cli")]
    path = f"{tmp_path / 'cli' / 'run_0002.h5'}\n"
    assert main([*cmd, "--n", "12"]) == 0  # captured stderr is no terminal: a line per tenth done, as a log wants
    out, err = capsys.readouterr()
    assert out == path
    assert err.splitlines() == [f"simulating carbon events: {k}/12" for k in (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)]
    assert main([*cmd, "--n", "2", "--force", "--quiet"]) == 0
    assert capsys.readouterr() == (path, "")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch: stderr is a terminal
    assert main([*cmd, "--n", "2", "--force"]) == 0
    out, err = capsys.readouterr()
    assert out == path and "simulating carbon events" in err and "2/2" in err and "\x1b[" in err  # the bar


def test_convert_command_then_train_report_and_probe_on_the_set(tmp_path, capsys):
    """The CLI path of the thesis experiment on a tiny hand-written file."""
    from lvmkit.cli import main

    rng = np.random.default_rng(0)
    clouds = {i: _track(80, rng) for i in range(40)}
    labels = {i: i % 2 for i in range(40)}
    write_spyral(tmp_path / "run_0001.h5", clouds, labels)
    assert main(["convert", "attpc", str(tmp_path / "run_0001.h5"), "--out", str(tmp_path / "set.h5"),
                 "--align", "azimuth", "--intensity", "linear"]) == 0
    with h5py.File(tmp_path / "set.h5") as f:
        assert f.attrs["align"] == "azimuth" and f.attrs["intensity"] == "linear"
    assert main(["train", str(CONFIGS / "attpc_convae_mmd.toml"), "--set", f"data.path={tmp_path / 'set.h5'}",
                 "--set", "train.max_steps=2", "--set", "model.channels=[4,8,8,8]", "--set", "model.hidden=[16]",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Event displays</h2>" in html
    assert main(["probe", str(tmp_path / "run"), "--labels", "2", "--repeats", "1"]) == 0
    capsys.readouterr()
    assert main(["train", str(CONFIGS / "attpc_convae_mmd.toml"), "--set", f"data.path={tmp_path / 'nope.h5'}"]) == 2
    assert "make it with 'lvmkit simulate attpc'" in capsys.readouterr().err
    assert main(["convert", "attpc", str(tmp_path / "set.h5"), "--out", str(tmp_path / "again.h5")]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["convert", "attpc", str(tmp_path / "run_0001.h5"), "--out", str(tmp_path / "x.h5"), "--intensity", "sqrt"]) == 2
    err = capsys.readouterr().err
    assert "Unknown intensity 'sqrt'" in err and "Traceback" not in err
