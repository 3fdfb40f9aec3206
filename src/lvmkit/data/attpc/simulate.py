"""Simulated AT-TPC events of the 46Ar(p,p) experiment, written as Spyral point clouds.

Kinematics and detector response come from attpc-engine (McCann & Serikow, the AT-TPC
group's simulator; ``pip install 'lvmkit[attpc]'``), used as its getting-started guide shows:
a ``KinematicsPipeline`` with one elastic ``Reaction`` samples the beam energy loss to a
vertex, the centre-of-mass angle and the outgoing 4-momenta; ``simulate`` of
``attpc_engine.detector.simulator`` solves each product's equation of motion in the fields,
ionises the gas, drifts and diffuses the electrons onto the pad plane; ``SpyralWriter``
applies the GET response and writes the Spyral layout (:mod:`lvmkit.attpc.spyral`). We call
the per-event ``simulate`` rather than ``run_simulation`` so that one seeded
``numpy.random.Generator`` drives everything and runs repeat exactly.

Classes (labels 0, 1, 2; :data:`~lvmkit.attpc.spyral.CLASS_NAMES`):

* proton: 46Ar(p,p)46Ar, the ejectile is the proton from the isobutane's hydrogen;
* carbon: 46Ar(12C,12C)46Ar elastic scattering on the isobutane's carbon;
* other: noise-dominated events, 20-300 hits on random pads (beam pads excluded, as Spyral
  excludes them) at random drift times with peak amplitude uniform in 1-4000 ADC, alone or
  on top of a proton or carbon track. Noise hits go through the same GET response and
  writer as track points, so hits at or below the ADC threshold are dropped as the
  electronics would drop them (about 1% of them with the default threshold of 40).

Events that leave no point above threshold (a track hidden on the beam pads, say) are drawn
again, as a trigger would never record them, so a file holds exactly the events asked for.

The beam energy, gas pressure and fields are :class:`AttpcSetup` fields in attpc-engine's
units (MeV of total kinetic energy, Torr, V/m, T); ``lvmkit simulate attpc`` sets them with
``--beam-energy``, ``--pressure``, ``--e-field`` and ``--b-field``.
"""
from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from numbers import Real
from types import SimpleNamespace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from lvmkit.core.errors import ConfigError, LvmkitError
from lvmkit.data.attpc.spyral import CLASS_NAMES, LABEL_ATTR

REACTIONS = {"proton": (1, 1), "carbon": (6, 12)}  # target = ejectile (Z, A): elastic scattering
BEAM = (18, 46)
# Isobutane, C4H10, as spyral-utils' compound list of (Z, A, atoms per molecule).
ISOBUTANE = [(6, 12, 4), (1, 1, 10)]
NOISE_HITS = (20, 300)
NOISE_AMPLITUDE = (1.0, 4000.0)  # ADC
_MAX_DRAWS = 1000
_INSTALL = "pip install 'lvmkit[attpc]'"


# The parameters a physicist changes: (CLI option, unit, whether 0 is allowed, what to give).
_CHECKED = {
    "beam_energy_mev": ("--beam-energy", "MeV", False,
                        "give the 46Ar beam's total kinetic energy, not per nucleon (4.6 MeV/u is 211.6 MeV)"),
    "pressure_torr": ("--pressure", "Torr", False, "give the isobutane pressure, e.g. 19.2"),
    "efield_v_per_m": ("--e-field", "V/m", False, "give the drift field's magnitude, e.g. 9500"),
    "bfield_t": ("--b-field", "T", True, "give the magnetic field's magnitude, e.g. 1.68, or 0 for no field"),
}


@dataclass(frozen=True)
class AttpcSetup:
    """Detector, gas and beam of NSCL experiment e15503b, the 46Ar(p,p) data of the thesis and
    of Kuchera et al., NIM A 940 (2019).

    Values marked "example" are attpc-engine's getting-started values, kept where the
    experiment's own are not at hand; ``diffusion_v`` there is for deuterium, and isobutane,
    a cool gas, likely diffuses less. Units are attpc-engine's: ``beam_energy_mev`` is the
    beam's total kinetic energy (``KinematicsPipeline(beam_energy=...)``), ``pressure_torr``
    the gas pressure (spyral-utils' ``GasTarget``), ``efield_v_per_m`` and ``bfield_t`` the
    magnitudes of the fields along the beam axis (``DetectorParams``). These four are checked
    when the setup is built (a ``ConfigError`` names the field and its CLI option).
    """

    # 4.6 MeV/u 46Ar. attpc-engine slows the beam in the gas up to the vertex but has no
    # entrance window; about 4.17 MeV/u reach the gas, so 4.17 * 46 is the alternative.
    beam_energy_mev: float = 4.6 * 46
    pressure_torr: float = 19.2  # isobutane
    bfield_t: float = 1.68
    efield_v_per_m: float = 9500.0
    length_m: float = 1.0  # drift length
    rho_sigma_m: float = 0.007  # beam spot (example)
    mpgd_gain: int = 175_000  # Micromegas gain (example)
    diffusion_v: float = 0.277  # transverse diffusion coefficient (example)
    fano_factor: float = 0.2  # (example)
    w_value_ev: float = 23.0  # isobutane: Sauli, CERN 77-09 (1977), table 1
    clock_mhz: float = 12.5  # GET sampling clock, 512 time buckets
    amp_gain: int = 900  # GET amplifier, lsb/fC (example)
    shaping_time_ns: int = 1000  # (example)
    micromegas_tb: int = 10
    # 1 m drift at 5.2 cm/us (the thesis code's drift velocity) is 240 buckets of 80 ns.
    window_tb: int = 250
    adc_threshold: int = 40  # (example)

    def __post_init__(self):
        for name, (option, unit, zero_ok, hint) in _CHECKED.items():
            value = getattr(self, name)
            if not (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
                    and (value > 0 or zero_ok and value == 0)):
                kind = "non-negative" if zero_ok else "positive"
                raise ConfigError(f"AttpcSetup.{name} ({option}) must be a {kind} finite number of {unit}, got "
                                  f"{value!r}; {hint}.")


def _engine():
    try:
        import attpc_engine  # noqa: F401
    except ImportError:
        raise LvmkitError("Simulating AT-TPC events needs the optional package attpc-engine, which is not "
                          f"installed; install the AT-TPC extra: {_INSTALL}.") from None
    from attpc_engine import nuclear_map
    from attpc_engine.detector import Config, DetectorParams, ElectronicsParams, PadParams, SpyralWriter
    from attpc_engine.detector.beam_pads import BEAM_PADS_ARRAY
    from attpc_engine.detector.response import get_response
    from attpc_engine.detector.simulator import simulate as detect
    from attpc_engine.kinematics import (ExcitationGaussian, KinematicsPipeline, KinematicsTargetMaterial,
                                         PolarUniform, Reaction)
    from spyral_utils.nuclear.target import GasTarget

    return SimpleNamespace(**locals())


def _vertex_depth(e: SimpleNamespace, setup: AttpcSetup, gas) -> float:
    """How deep (m) vertices are drawn: the drift length, or less where the beam stops in the gas
    (attpc-engine would draw vertices past that point and give them a beam of no energy)."""
    return min(setup.length_m, float(gas.get_range(e.nuclear_map.get_data(*BEAM), setup.beam_energy_mev)))


def _pipelines(e: SimpleNamespace, setup: AttpcSetup, gas, depth: float, names: list[str],
               rng: np.random.Generator) -> dict:
    out = {}
    for name in names:
        light = e.nuclear_map.get_data(*REACTIONS[name])
        pipeline = e.KinematicsPipeline(
            [e.Reaction(target=light, projectile=e.nuclear_map.get_data(*BEAM), ejectile=light)],
            [e.ExcitationGaussian(0.0, 0.0)],  # elastic: the 46Ar stays in its ground state
            [e.PolarUniform(0.0, np.pi)],  # isotropic in the centre-of-mass frame
            beam_energy=setup.beam_energy_mev,
            target_material=e.KinematicsTargetMaterial(material=gas, z_range=(0.0, depth),
                                                          rho_sigma=setup.rho_sigma_m),
        )
        pipeline.rng = rng  # the pipeline draws from its own default_rng(); ours makes runs repeat
        out[name] = pipeline
    return out


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yields a function to call once per event done. On an interactive terminal it moves a bar
    on stderr, with the columns training shows; in a log it prints a line per tenth done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)  # stdout is left to the caller (the CLI prints the file there)
    if enabled and console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if enabled and done * 10 // total > (done - 1) * 10 // total:  # a tenth more is done
            print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)

    yield advance


def _plan(reaction: str, n: int, noise_events: int, on_track: float, rng: np.random.Generator) -> list:
    """(label, track reaction or None, with noise) for each event."""
    if reaction == "other":
        tracks = [str(rng.choice(list(REACTIONS))) if rng.random() < on_track else None for _ in range(n)]
        return [(2, t, True) for t in tracks]
    plan = [(CLASS_NAMES.index(reaction), reaction, False)] * n
    return plan + [(2, reaction if rng.random() < on_track else None, True) for _ in range(noise_events)]


def simulate(reaction: str, n: int, out: Path | str, seed: int = 0, *, noise_events: int = 0,
             on_track: float = 0.5, setup: AttpcSetup = AttpcSetup(), run: Optional[int] = None,
             overwrite: bool = False, progress: bool = False) -> Path:
    """Simulate labelled AT-TPC events and write them as one Spyral point-cloud file.

    Args:
        reaction: ``"proton"``, ``"carbon"`` or ``"other"`` (noise events only).
        n: events of that class.
        out: folder for the file ``run_NNNN.h5`` (Spyral's run naming).
        seed: seeds every random draw; the same seed gives the same file.
        noise_events: "other" events added after the ``n`` proton or carbon events.
        on_track: share of "other" events whose noise lies on a track (the rest are noise alone).
        setup: detector, gas and beam; defaults to the 46Ar(p,p) experiment. Change the beam
            energy, pressure or fields with e.g. ``AttpcSetup(beam_energy_mev=150.0)``; where the
            beam stops in the gas before the end of the drift length, vertices are drawn only
            up to where it stops.
        run: run number of the file; default 1 for proton, 2 for carbon, 3 for other, so the
            three classes can share a folder.
        overwrite: replace an existing file instead of refusing.
        progress: show the events done on stderr (a bar on a terminal, a line per tenth in a log).

    Returns:
        The path of the written file. Each ``cloud_<event>`` carries a ``label`` attribute
        (0 proton, 1 carbon, 2 other), ``track`` (the reaction drawn, or "none") and
        ``noise_hits``; ``labels_<event>`` gives each point's origin (2 ejectile,
        3 46Ar residual, -1 noise). The file's ``lvmkit_simulation`` attribute holds the
        arguments, the whole setup, the vertex depth and the attpc-engine version as JSON.

    Raises:
        ConfigError: an unknown reaction or an impossible count or share.
        LvmkitError: attpc-engine is not installed, the file exists, or an event could not
            be drawn with any point above threshold.
    """
    valid = [*REACTIONS, "other"]
    if reaction not in valid:
        raise ConfigError(f"Unknown reaction {reaction!r}; choose one of: {', '.join(valid)}.")
    if n < 1 or noise_events < 0:
        raise ConfigError(f"n must be at least 1 and noise_events at least 0; got n={n}, noise_events={noise_events}.")
    if not 0.0 <= on_track <= 1.0:
        raise ConfigError(f"on_track is a share and must lie in [0, 1]; got {on_track}.")
    e = _engine()
    out = Path(out)
    run = valid.index(reaction) + 1 if run is None else run
    path = out / f"run_{run:04d}.h5"
    if path.exists() and not overwrite:
        raise LvmkitError(f"{str(path)!r} exists; pass overwrite=True (--force) or choose another run number.")
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    gas = e.GasTarget(ISOBUTANE, setup.pressure_torr, e.nuclear_map)
    config = e.Config(
        e.DetectorParams(length=setup.length_m, efield=setup.efield_v_per_m, bfield=setup.bfield_t,
                            mpgd_gain=setup.mpgd_gain, gas_target=gas, diffusion=setup.diffusion_v,
                            fano_factor=setup.fano_factor, w_value=setup.w_value_ev),
        e.ElectronicsParams(clock_freq=setup.clock_mhz, amp_gain=setup.amp_gain,
                               shaping_time=setup.shaping_time_ns, micromegas_edge=setup.micromegas_tb,
                               windows_edge=setup.window_tb, adc_threshold=setup.adc_threshold),
        e.PadParams(),  # the pad plane bundled with attpc-engine (10,240 pads)
    )
    plan = _plan(reaction, n, noise_events, on_track, rng)
    depth = _vertex_depth(e, setup, gas)
    pipelines = _pipelines(e, setup, gas, depth, sorted({t for _, t, _ in plan if t}), rng)
    # Peak of the GET response to one electron (ADC): turns a noise amplitude into electrons.
    adc_per_electron = float(e.get_response(config).max())
    noise_pads = np.setdiff1d(np.arange(len(config.pad_centers)), e.BEAM_PADS_ARRAY)

    # A huge file limit keeps every event in one file (SpyralWriter splits by event count).
    writer = e.SpyralWriter(out, config, max_events_per_file=2**62, first_run_number=run)
    complete = False
    try:
        with _progress(progress, len(plan), f"simulating {reaction} events") as advance:
            for event_id, (label, track, noisy) in enumerate(plan):
                for _ in range(_MAX_DRAWS):
                    cloud, origin = np.empty((0, 3)), np.empty(0, dtype=np.int64)
                    if track is not None:
                        pipeline = pipelines[track]
                        vertex, momenta = pipeline.run()
                        # Indices 2 and 3: the ejectile and the 46Ar residual, the reaction's products.
                        cloud, origin = e.detect(momenta.copy(), vertex, pipeline.get_proton_numbers(),
                                                  pipeline.get_mass_numbers(), config, rng, [2, 3])
                    hits = 0
                    if noisy:
                        hits = int(rng.integers(NOISE_HITS[0], NOISE_HITS[1] + 1))
                        noise = np.column_stack([  # rows of (pad, time bucket, electrons), as detect returns
                            rng.choice(noise_pads, hits),
                            rng.uniform(setup.micromegas_tb, setup.window_tb, hits),
                            rng.uniform(*NOISE_AMPLITUDE, hits) / adc_per_electron,
                        ])
                        cloud = np.concatenate([cloud, noise])
                        origin = np.concatenate([origin, np.full(hits, -1, dtype=np.int64)])
                    if len(cloud) == 0:
                        continue
                    writer.write(cloud, origin, config, event_id)
                    dataset = writer.cloud_group[f"cloud_{event_id}"]
                    if dataset.shape[0] > 0:
                        break
                    del writer.cloud_group[f"cloud_{event_id}"], writer.cloud_group[f"labels_{event_id}"]
                else:
                    raise LvmkitError(f"No {reaction} event with a point above the ADC threshold came out of "
                                      f"{_MAX_DRAWS} draws; check the setup (beam energy, pressure, fields, gain, "
                                      "threshold).")
                dataset.attrs[LABEL_ATTR] = label
                dataset.attrs["track"] = track or "none"
                dataset.attrs["noise_hits"] = hits
                advance()
        writer.cloud_group.attrs["class_names"] = list(CLASS_NAMES)
        writer.file.attrs["lvmkit_simulation"] = json.dumps(
            {"reaction": reaction, "n": n, "noise_events": noise_events, "on_track": on_track, "seed": seed,
             "setup": asdict(setup), "vertex_depth_m": depth, "attpc_engine": version("attpc_engine")})
        complete = True
    finally:
        writer.close()
        if not complete:
            path.unlink(missing_ok=True)
    return path
