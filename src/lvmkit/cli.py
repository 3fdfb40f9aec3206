"""The ``lvmkit`` command: one subcommand per task, each a thin wrapper over the Python API.

Expected errors (bad config, missing data, corrupted checkpoint...) print one line on stderr
and exit with status 2; no traceback.
"""
from __future__ import annotations

import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lvmkit.core.errors import LvmkitError, LvmkitWarning

app = typer.Typer(
    name="lvmkit",
    help="Deep latent-variable models for scientific data: train, evaluate, sample, report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SetOpt = Annotated[List[str], typer.Option("--set", "-s", help="Override a config field: section.key=value (repeatable).")]


def bundled_config(name: str) -> Path:
    """Path of a config shipped with the package (the same files as the repository's configs/)."""
    return Path(str(resources.files("lvmkit") / "configs" / name))


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment TOML file.")] = None,
    set_: SetOpt = [],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default: runs/KIND-DATA-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run from its last checkpoint.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out (its files are deleted).")] = False,
    report: Annotated[bool, typer.Option(help="Write report.html when training ends.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress.")] = False,
) -> None:
    """Train a model; prints the run directory."""
    from lvmkit.core.config import load_config
    from lvmkit.training.train import resume as _resume
    from lvmkit.training.train import train as _train

    _start_or_resume(_train, _resume, load_config, config, set_, out, resume, overwrite, report, quiet)


def _start_or_resume(start, restart, load, config: Optional[Path], set_: list[str], out: Optional[Path],
                     resume: Optional[Path], overwrite: bool, report: bool, quiet: bool, needs_config: str | None = None) -> None:
    """What `train` and `vmc` share: --resume alone, or a config (``load``ed with --set) started in
    --out, whose old run --overwrite deletes once the config is valid; prints the run directory."""
    if resume is not None:
        if config is not None or set_ or out is not None or overwrite:
            raise LvmkitError("--resume continues a run with its own config; do not pass CONFIG, --set, --out or --overwrite with it.")
        run = restart(resume, progress=not quiet, report=report)
    else:
        if config is None and needs_config:
            raise LvmkitError(needs_config)
        cfg = load(config, set_)
        if overwrite:
            if out is None:
                raise LvmkitError("--overwrite replaces the run in --out, but no --out was given; pass --out RUN_DIRECTORY.")
            from lvmkit.core.distributed import made_by_this_launch
            from lvmkit.runs.run import clear_run_directory

            if not made_by_this_launch(out):  # a torchrun restart keeps the run it made, to resume it
                clear_run_directory(out)  # after the config is validated: a typo does not cost the old run
        run = start(cfg, out, progress=not quiet, report=report)
    typer.echo(str(run.path))


@app.command()
def vmc(
    config: Annotated[Optional[Path], typer.Argument(help="VMC experiment TOML (model.kind = 'nqs'; no \\[data] table needed).")] = None,
    set_: SetOpt = [],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default: runs/vmc-none-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run from its last checkpoint.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out (its files are deleted).")] = False,
    report: Annotated[bool, typer.Option(help="Write report.html when training ends.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Variational Monte Carlo: train a trial wave function (energy ± blocking error per iteration); prints the run directory."""
    from lvmkit.training.vmc import load_vmc_config, vmc as _vmc, vmc_resume

    _start_or_resume(_vmc, vmc_resume, load_vmc_config, config, set_, out, resume, overwrite, report, quiet,
                     needs_config="lvmkit vmc needs a config file, e.g. configs/vmc_ho_1d.toml; pass its path.")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    k: Annotated[Optional[int], typer.Option("--k", help="Importance samples per example (default: eval.k of the run's config).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per importance-sampling batch.")] = None,
    max_examples: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test examples.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto (default: the run's train.device).")] = None,
) -> None:
    """Evaluate on the test split; writes RUN/eval.json."""
    from lvmkit.analysis.evaluate import evaluate as _evaluate

    if k is not None and k <= 0:
        raise LvmkitError(f"--k must be a positive number of importance samples, got {k}.")
    res = _evaluate(run, k, batch_size=batch_size, max_examples=max_examples, device=device)
    for key, v in res.items():
        typer.echo(f"{key:>24}  {v:.6g}" if isinstance(v, float) else f"{key:>24}  {v}")
    typer.echo(str(Path(run) / "eval.json"))


# Options of an iterative model's sampler (lvmkit sample, lvmkit quality): each is validated by the
# sampler chosen; one that none of the model's samplers takes is refused in one line (exit 2).
_SAMPLER_HELP = ("Iterative models: the sampler (ddpm: ancestral, ddim; rbm, dbn: gibbs, mh; ebm: langevin; "
                 "default: the model's, or the one that takes the options given).")
_STEPS_HELP = "Sampler steps (ddim: up to T; ancestral: all T only; gibbs, mh, langevin: any)."
_ETA_HELP = "DDIM's eta in [0, 1]: 0 deterministic, 1 ancestral-like noise (only DDIM takes it)."


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 64,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .png grid, .npy or .csv.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Random seed of the prior draws.")] = 0,
    units: Annotated[str, typer.Option(help="model: as the model sees data (after data.scale); data: in the data's own units.")] = "model",
    sampler: Annotated[Optional[str], typer.Option(help=_SAMPLER_HELP)] = None,
    steps: Annotated[Optional[int], typer.Option(help=_STEPS_HELP)] = None,
    eta: Annotated[Optional[float], typer.Option(help=_ETA_HELP)] = None,
    weights: Annotated[Optional[str], typer.Option(help="ema or raw (default: the EMA weights when the run kept them).")] = None,
) -> None:
    """Draw samples from a trained generator (VAE prior, GAN, diffusion, ...)."""
    from lvmkit.analysis.sampling import sample as _sample

    _sample(run, n, out, seed=seed, units=units, sampler=sampler, steps=steps, eta=eta, weights=weights)
    typer.echo(str(out))


@app.command()
def quality(
    run: Annotated[Path, typer.Argument(help="Run directory of a model that can sample (gan, vae, ...).")],
    n: Annotated[int, typer.Option("--n", help="Number of generated examples to score.")] = 10000,
    seed: Annotated[int, typer.Option(help="Random seed of the samples.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    sampler: Annotated[Optional[str], typer.Option(help=_SAMPLER_HELP)] = None,
    steps: Annotated[Optional[int], typer.Option(help=_STEPS_HELP)] = None,
    eta: Annotated[Optional[float], typer.Option(help=_ETA_HELP)] = None,
    weights: Annotated[Optional[str], typer.Option(help="ema or raw (default: the EMA weights when the run kept them).")] = None,
) -> None:
    """Sample quality: Frechet distance, precision and recall in a data-set classifier's features; RUN/quality.json."""
    from lvmkit.analysis.quality import quality as _quality

    res = _quality(run, n, seed=seed, device=device, progress=True, sampler=sampler, steps=steps, eta=eta,
                   weights=weights)
    fl = res["floor"]
    typer.echo(f"Frechet distance {res['frechet_distance']:.4g}  (floor, train vs test: {fl['frechet_distance']:.4g})")
    typer.echo(f"precision {res['precision']:.3f}  recall {res['recall']:.3f}  "
               f"(floor: {fl['precision']:.3f} / {fl['recall']:.3f}); classes present {res['classes_present']}")
    typer.echo(str(Path(run) / "quality.json"))


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    embedding: Annotated[str, typer.Option(help="2-D view of latents wider than 2: pca or tsne.")] = "pca",
) -> None:
    """Write RUN/report.html (figures embedded) and print its path."""
    from lvmkit.report import write_report

    if embedding not in ("pca", "tsne"):
        raise LvmkitError(f"--embedding must be 'pca' or 'tsne', got {embedding!r}.")
    typer.echo(str(write_report(run, embedding=embedding)))


simulate_app = typer.Typer(help="Simulate detector events and Ising configurations.", no_args_is_help=True)
convert_app = typer.Typer(help="Convert detector files into training sets.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
app.add_typer(convert_app, name="convert")


@simulate_app.command("attpc")
def simulate_attpc(
    reaction: Annotated[str, typer.Option(help="proton (46Ar(p,p)), carbon (46Ar + 12C elastic) or other (noise events).")],
    n: Annotated[int, typer.Option("--n", help="Number of events.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the Spyral point-cloud file run_NNNN.h5.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    noise_events: Annotated[int, typer.Option(help="Also append this many 'other' (noise-dominated) events.")] = 0,
    run: Annotated[Optional[int], typer.Option(help="Run number of the file name (default: 1 proton, 2 carbon, 3 other).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    beam_energy: Annotated[Optional[float], typer.Option(help="46Ar beam kinetic energy in MeV, total, not per nucleon (attpc-engine's unit; default: 211.6, i.e. 4.6 MeV/u).")] = None,
    pressure: Annotated[Optional[float], typer.Option(help="Isobutane pressure in Torr (default: 19.2).")] = None,
    e_field: Annotated[Optional[float], typer.Option("--e-field", help="Electric (drift) field along the beam axis in V/m (default: 9500).")] = None,
    b_field: Annotated[Optional[float], typer.Option("--b-field", help="Magnetic field along the beam axis in T, 0 for none (default: 1.68).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """AT-TPC events of the 46Ar(p,p) experiment with attpc-engine (pip install 'lvmkit\\[attpc]'); prints the file."""
    from lvmkit.data.attpc import AttpcSetup, simulate

    if n <= 0:
        raise LvmkitError(f"--n must be a positive number of events, got {n}.")
    given = {"beam_energy_mev": beam_energy, "pressure_torr": pressure, "efield_v_per_m": e_field, "bfield_t": b_field}
    setup = AttpcSetup(**{k: v for k, v in given.items() if v is not None})  # checks the values; unset ones keep the experiment's
    typer.echo(str(simulate(reaction, n, out, seed, noise_events=noise_events, run=run, overwrite=force, setup=setup,
                            progress=not quiet)))


def _float_list(text: str, option: str) -> list[float]:
    """Comma-separated numbers, or START:STOP:COUNT for COUNT evenly spaced values."""
    try:
        if text.count(":") == 2:
            start, stop, count = text.split(":")
            k = int(count)
            if k < 1:
                raise ValueError
            return [float(start) + i * (float(stop) - float(start)) / max(k - 1, 1) for i in range(k)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LvmkitError(f"{option} takes comma-separated numbers such as 1.5,2.269,3.0 or START:STOP:COUNT such as "
                          f"1.0:3.5:10; got {text!r}.") from None


@simulate_app.command("ising")
def simulate_ising(
    size: Annotated[int, typer.Option("--size", "-L", help="Lattice side L (>= 2; odd L: three sublattices, since the checkerboard needs even L).")],
    temperatures: Annotated[str, typer.Option(help="Temperatures in J / k_B: comma-separated, or START:STOP:COUNT.")],
    n: Annotated[int, typer.Option("--n", help="Configurations per temperature.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for ising_L<size>.h5 and parts/ (one file per finished temperature).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    field: Annotated[float, typer.Option(help="Magnetic field h (J = 1).")] = 0.0,
    update: Annotated[str, typer.Option(help="metropolis (sublattice single-spin), wolff (clusters, h = 0) or auto (Wolff within 15% of T_c).")] = "auto",
    chains: Annotated[Optional[int], typer.Option(help="Parallel chains per temperature (default min(n, 200)).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (default: torch's).")] = None,
    force: Annotated[bool, typer.Option(help="Simulate every temperature again, even those finished before.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-temperature lines.")] = False,
) -> None:
    """2-D Ising configurations by Monte Carlo; burn-in and spacing from the measured autocorrelation time; prints the file."""
    from lvmkit.data.ising import simulate

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    temps = _float_list(temperatures, "--temperatures")
    typer.echo(str(simulate(size, temps, n, out, seed=seed, field=field, update=update, chains=chains, device=device,
                            overwrite=force, progress=not quiet)))


@app.command("ising-thermo")
def ising_thermo(
    data: Annotated[Path, typer.Argument(help="A file written by 'lvmkit simulate ising'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for runs/ (one model per T), ising_thermo.json and ising_thermo.html.")],
    config: Annotated[Optional[Path], typer.Option(help="Experiment TOML of the model (default: the bundled ising_rbm_L8.toml).")] = None,
    set_: SetOpt = [],
    temperatures: Annotated[Optional[str], typer.Option(help="The file's temperatures to use, comma-separated (default: all).")] = None,
    chains: Annotated[int, typer.Option(help="Sampler chains per model.")] = 500,
    steps: Annotated[int, typer.Option(help="Sampler steps per chain.")] = 2000,
    keep: Annotated[int, typer.Option(help="Evenly spaced states kept from each chain.")] = 200,
    burn_in: Annotated[float, typer.Option(help="Share of the kept states dropped as burn-in, in [0, 1).")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the model's chains.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-temperature lines.")] = False,
) -> None:
    """One model per temperature (Torlai & Melko 2016): E, |M|, C and chi of its samples against the simulator's; prints the table and OUT/ising_thermo.html."""
    from lvmkit.analysis.ising import format_thermo, ising_thermo as _ising_thermo

    for name, v in (("--chains", chains), ("--steps", steps), ("--keep", keep)):
        if v < 1:
            raise LvmkitError(f"{name} must be a positive integer, got {v}.")
    if keep > steps:
        raise LvmkitError(f"--keep ({keep}) cannot exceed --steps ({steps}); keep at most one state per step.")
    if not 0 <= burn_in < 1:
        raise LvmkitError(f"--burn-in is the share of kept states dropped and must lie in [0, 1), got {burn_in}.")
    temps = _float_list(temperatures, "--temperatures") if temperatures is not None else None
    res = _ising_thermo(data, out, config if config is not None else bundled_config("ising_rbm_L8.toml"), overrides=set_,
                        temperatures=temps, chains=chains, steps=steps, keep=keep, burn_in=burn_in, seed=seed,
                        progress=not quiet)
    for line in format_thermo(res):
        typer.echo(line)
    typer.echo(res["html"])


@app.command("ising-transition")
def ising_transition(
    files: Annotated[List[Path], typer.Argument(help="Files of 'lvmkit simulate ising', one per lattice size, with temperatures on both sides of T_c.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for ising_tc.json and ising_tc.html.")],
    low: Annotated[float, typer.Option(help="The phase probe trains on T below this (ordered).")] = 2.0,
    high: Annotated[float, typer.Option(help="... and on T above this (disordered).")] = 2.5,
    vae_config: Annotated[Optional[Path], typer.Option(help="Also train this config (e.g. configs/ising_vae_L32.toml) on each file and use its leading code.")] = None,
    set_: Annotated[List[str], typer.Option("--set", "-s", help="Override a key of --vae-config: section.key=value (repeatable).")] = [],
    bootstrap: Annotated[int, typer.Option(help="Resamples per temperature for the errors of T_c(L); 0 for none.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the probe's split and the resamples.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-size lines.")] = False,
) -> None:
    """T_c per lattice size from the leading latent (PCA, optionally a VAE) and a phase probe, and T_c(L) = T_c + a / L; prints OUT/ising_tc.html."""
    from lvmkit.analysis.ising import ising_transition as _ising_transition

    if not low < high:
        raise LvmkitError(f"--low must lie below --high (the probe trains on T < low and T > high), got {low} and {high}.")
    if bootstrap < 0:
        raise LvmkitError(f"--bootstrap must be 0 or a positive number of resamples, got {bootstrap}.")
    if set_ and vae_config is None:
        raise LvmkitError("--set overrides the VAE's config, but no --vae-config was given; pass --vae-config FILE.")
    res = _ising_transition(files, out, low=low, high=high, vae_config=vae_config, vae_overrides=set_,
                            bootstrap=bootstrap, seed=seed, progress=not quiet)
    for row in res["sizes"]:
        parts = [f"{name} {row[name]['t_c']:.4f}" + (f" +- {row[name]['t_c_error']:.2g}" if "t_c_error" in row[name] else "")
                 for name in ("pca", "probe", "vae") if name in row]
        typer.echo(f"L = {row['size']}: T_c(L) " + ", ".join(parts))
    for name, fit in res["extrapolation"].items():
        typer.echo(f"{name}: T_c(L) = T_c + a / L gives T_c = {fit['t_c']:.4f} +- {fit['t_c_error']:.2g} "
                   f"({100 * fit['relative_to_onsager']:+.2f}% from Onsager's {res['onsager']:.4f})")
    typer.echo(res["html"])


@convert_app.command("attpc")
def convert_attpc(
    inputs: Annotated[List[Path], typer.Argument(help="Spyral point-cloud HDF5 files (simulated or real).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HDF5 set for data.name = 'attpc'.")],
    projection: Annotated[str, typer.Option(help="xy, xz, yz, several joined by commas (one channel each), or points.")] = "xy",
    strict: Annotated[bool, typer.Option(help="Stop at the first bad event instead of skipping and counting it.")] = False,
    min_points: Annotated[int, typer.Option(help="Drop events with fewer points (the thesis used 50).")] = 50,
    labels: Annotated[Optional[Path], typer.Option(help="CSV of event,label for files without labels (real data).")] = None,
    scale: Annotated[str, typer.Option(help="Charge scale: global (the set's largest intensity), event, or a number.")] = "global",
    align: Annotated[str, typer.Option(help="none, or azimuth: rotate each event about the beam axis so its charge centre lies on +x.")] = "none",
    intensity: Annotated[str, typer.Option(help="Pixel intensity: log1p of the charge (the thesis) or linear, then divided by the scale.")] = "log1p",
) -> None:
    """Project events to 128 x 128 images (log1p, or linear, charge in [0, 1]) and write one compressed set."""
    from lvmkit.data.attpc import convert

    try:
        scale_arg = float(scale)
    except ValueError:
        scale_arg = scale
    stats = convert(inputs, out, projection, strict=strict, min_points=min_points, labels=labels, scale=scale_arg,
                    align=align, intensity=intensity)
    for key, v in stats.items():
        typer.echo(f"{key:>24}  {v}")
    typer.echo(str(out))


@app.command()
def forecast(
    run: Annotated[Path, typer.Argument(help="Run directory of a time-series model (latent-ode, rnn, neural-ode).")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Long-format CSV of the series to forecast (the run's id and time columns).")],
    until: Annotated[float, typer.Option(help="Forecast up to this time, in the CSV's time units.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output CSV (default RUN/forecast.csv); the figure goes beside it as .png.")] = None,
    points: Annotated[int, typer.Option(help="Grid points per series from its first time to --until.")] = 100,
    samples: Annotated[int, typer.Option(help="Posterior trajectories for the band (latent-ode).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the posterior draws.")] = 0,
) -> None:
    """Interpolate and extrapolate new series with uncertainty; writes a CSV and a figure."""
    from lvmkit.analysis.forecast import forecast as _forecast

    res = _forecast(run, input, until, out=out, points=points, samples=samples, seed=seed)
    typer.echo(f"forecast of {res['series']} series up to {res['until']:g}: {res['rows']} rows", err=True)
    typer.echo(res["csv"])
    typer.echo(res["figure"])


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LvmkitError(f"{option} takes comma-separated integers such as 10,100,1000; got {text!r}.") from None


@app.command()
def probe(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    labels: Annotated[str, typer.Option(help="Labelled examples per class, comma-separated.")] = "10,100,1000",
    repeats: Annotated[int, typer.Option(help="Random draws of the labelled examples per budget.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    protocol: Annotated[str, typer.Option(help="labels: n labelled examples per class, scored on the test split; thesis: 15% of each class of the training split, split 70/30 (RUN/probe_thesis.json).")] = "labels",
) -> None:
    """Few-label logistic-regression probes on the codes, raw inputs and PCA; writes RUN/probe.json."""
    from lvmkit.analysis.probe import probe as _probe, probe_thesis

    if protocol not in ("labels", "thesis"):
        raise LvmkitError(f"Unknown probe protocol {protocol!r}; choose 'labels' or 'thesis'.")
    if protocol == "thesis":
        res = probe_thesis(run, repeats=repeats, seed=seed)
        for name, note in res["notes"].items():
            typer.echo(f"{name}: {note}", err=True)
        for name, r in res["results"].items():
            f1 = ", ".join(f"{c}: {m:.3f}" for c, m in zip(res["class_names"] or r["classes"], r["f1"]["mean"]))
            typer.echo(f"{name:>7} thesis protocol  macro f1 {r['macro_f1']['mean']:.3f} +- {r['macro_f1']['std']:.3f}  per class f1 {f1}")
        typer.echo(str(Path(run) / "probe_thesis.json"))
        return
    res = _probe(run, _int_list(labels, "--labels"), repeats, seed=seed)
    for n, why in res["skipped"].items():
        typer.echo(f"skipped {n} labels/class: {why}", err=True)
    for name, note in res["notes"].items():  # a baseline narrower than the codes
        typer.echo(f"{name}: {note}", err=True)
    for name, by_n in res["results"].items():
        for n, r in by_n.items():
            typer.echo(f"{name:>7} {n:>5} labels/class  macro f1 {r['macro_f1']['mean']:.3f} +- {r['macro_f1']['std']:.3f}"
                       f"  accuracy {r['accuracy']['mean']:.3f}")
    typer.echo(str(Path(run) / "probe.json"))


@app.command()
def cluster(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    k: Annotated[int, typer.Option("--k", help="Number of clusters.")] = 10,
    method: Annotated[str, typer.Option(help="kmeans, gmm, or model (the clusters a DEC run learned).")] = "kmeans",
    seed: Annotated[int, typer.Option(help="Random seed of the clusterer.")] = 0,
    metrics: Annotated[Optional[bool], typer.Option("--metrics/--no-metrics", help="Compute ACC/NMI/ARI (needs labels; default: when labels exist).")] = None,
) -> None:
    """Cluster the test codes (K-means on raw inputs and PCA as baselines); writes RUN/cluster.json."""
    from lvmkit.analysis.cluster import cluster as _cluster

    res = _cluster(run, k, method, seed=seed, metrics=metrics)
    for name, note in res["notes"].items():  # a baseline narrower than the codes
        typer.echo(f"{name}: {note}", err=True)
    for name, r in res["results"].items():
        if "acc" in r:
            typer.echo(f"{name:>7} ({r['method']})  ACC {r['acc']:.3f}  NMI {r['nmi']:.3f}  ARI {r['ari']:.3f}")
        else:
            typer.echo(f"{name:>7} ({r['method']})  cluster sizes {r['sizes']}")
    typer.echo(str(Path(run) / "cluster.json"))


@app.command()
def anomaly(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    score: Annotated[str, typer.Option(help="recon (reconstruction error), elbo (negative ELBO), energy (RBM free energy, EBM energy), latent-knn (distance to normal codes) or recon+knn.")] = "recon",
    target_fpr: Annotated[str, typer.Option(help="False-positive rates for thresholds chosen on normal validation data.")] = "0.1,0.002",
    data: Annotated[Optional[Path], typer.Option(help=".npz with x to score and optional labels y, 0/1 anomaly flags (default: the test split).")] = None,
    anomaly_label: Annotated[Optional[str], typer.Option(help="The label of y in --data that means anomaly (others are normal), for class labels that are not 0/1 flags.")] = None,
) -> None:
    """Anomaly scores, ROC / PR curves and thresholds; writes RUN/anomaly.json."""
    from lvmkit.analysis.anomaly import anomaly as _anomaly

    try:
        rates = [float(v) for v in target_fpr.split(",") if v.strip()]
    except ValueError:
        raise LvmkitError(f"--target-fpr takes comma-separated rates such as 0.1,0.002; got {target_fpr!r}.") from None
    res = _anomaly(run, score, rates, data_file=data, anomaly_label=anomaly_label)
    if "auroc" in res:
        typer.echo(f"AUROC {res['auroc']:.4f}  AUPRC {res['auprc']:.4f}")
        for r, v in res["at_target_fpr"].items():
            typer.echo(f"  threshold for fpr {r}: {v['threshold']:.4g}  test TPR {v['tpr']:.3f}  test FPR {v['fpr']:.3f}")
    else:
        typer.echo(f"scored {res['n']} examples; flagged at each target fpr: {res['flagged']}")
    typer.echo(str(Path(run) / "anomaly.json"))


@app.command("one-class")
def one_class(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file (a labelled data set).")],
    normal_class: Annotated[str, typer.Option(help="The class to train on, or 'all' to loop over every class.")] = "all",
    set_: SetOpt = [],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the runs and one_class.json.")] = Path("runs/one-class"),
    score: Annotated[str, typer.Option(help="recon, elbo, energy, latent-knn or recon+knn.")] = "recon",
) -> None:
    """Train on one class, score the test split with the other classes as anomalies; mean AUROC."""
    from lvmkit.core.config import load_config
    from lvmkit.analysis.oneclass import one_class as _one_class

    res = _one_class(load_config(config, set_), normal_class, out, score=score)
    typer.echo(f"mean AUROC over classes {res['classes']}: {res['mean_auroc']:.4f}")
    typer.echo(str(out / "one_class.json"))


@app.command()
def compare(
    runs: Annotated[List[Path], typer.Argument(help="Run directories trained on one data set (any families).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for compare.html, compare.json and the sample grids.")] = Path("compare"),
    n_time: Annotated[int, typer.Option("--n-time", help="Samples drawn to time sampling (scaled to 1,000).")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed of the sample grids.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto: where sampling is timed.")] = "cpu",
) -> None:
    """One table of runs on one data set: size, training and sampling time, sample quality, test NLL or bound, probes, samples; prints OUT/compare.html."""
    from lvmkit.analysis.compare import compare as _compare

    _compare(runs, out, n_time=n_time, seed=seed, device=device)
    typer.echo(str(out / "compare.html"))


@app.command()
def search(
    space: Annotated[Optional[Path], typer.Argument(help="Space TOML: an experiment with a \\[search] table.")] = None,
    set_: Annotated[List[str], typer.Option("--set", "-s", help="Override a key of the space file: section.key=value, e.g. train.epochs=2 or search.objective_labels=10 (repeatable).")] = [],
    trials: Annotated[Optional[int], typer.Option("--trials", "-n", help="Finished trials wanted in all (default: search.trials).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Local worker processes sharing the study.")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db). The same URL and study name on another machine joins the search; a password is never written to disk (give it again with --resume, or through PGPASSWORD / ~/.pgpass).")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default: the space file's stem).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Search directory (default: searches/STUDY-TIME).")] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="random (default) or tpe.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this search directory (a trial whose heartbeat stopped is failed and retried once; live workers' trials are left running).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-trial lines.")] = False,
) -> None:
    """Hyperparameter search (optuna): each trial is a run directory OUT/trials/NNNN; prints OUT."""
    from lvmkit.search import run_search

    if sampler is not None and sampler not in ("random", "tpe"):
        raise LvmkitError(f"--sampler must be 'random' or 'tpe', got {sampler!r}.")
    found = run_search(space, trials=trials, workers=workers, storage=storage, study=study, out=out,
                       sampler=sampler, resume=resume, progress=not quiet, overrides=set_)
    best = [t for t in found.trials if t.state.name == "COMPLETE"]
    if best and not quiet:
        typer.echo(f"best: trial {found.best_trial.number}, value {found.best_value:.6g}", err=True)
    typer.echo(found.user_attrs["directory"])


@app.command("search-report")
def search_report(
    directory: Annotated[Path, typer.Argument(help="Search directory ('lvmkit search' printed it).")],
) -> None:
    """Trials ranked by the objective, Spearman rank correlations, best.toml; prints DIR/search.html."""
    from lvmkit.search import search_report as _search_report

    typer.echo(str(_search_report(directory)))


@app.command()
def repeat(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file (e.g. a search's best.toml).")],
    seeds: Annotated[int, typer.Option("--seeds", help="Number of runs, with seeds train.seed, train.seed + 1, ...")] = 10,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for the runs, repeat.json and repeat.html (default: repeats/KIND-DATA-TIME).")] = None,
    set_: SetOpt = [],
    objective: Annotated[str, typer.Option(help="val_loss or another metrics key, or probe_f1 (as search.objective).")] = "val_loss",
    objective_class: Annotated[Optional[str], typer.Option(help="probe_f1: the label or class name whose f1 is scored.")] = None,
    objective_labels: Annotated[Optional[int], typer.Option(help="probe_f1: labelled training examples per class (default 100).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Local processes training seeds in parallel (threads split between them).")] = 1,
) -> None:
    """Retrain one configuration with several seeds: mean +- std of every metric on validation and test, per-class
    precision/recall/f1 (thesis Table 4.4); prints OUT/repeat.html."""
    from lvmkit.search.repeat import repeat as _repeat

    target: int | str | None = objective_class
    if objective_class is not None and objective_class.lstrip("-").isdigit():
        target = int(objective_class)
    res = _repeat(config, seeds, out, overrides=set_, objective=objective, objective_class=target,
                  objective_labels=objective_labels, progress=not quiet, workers=workers)
    obj = res["objective"]

    def pm(st: dict) -> str:
        if st["mean"] is None:
            return "-"
        return f"{st['mean']:.4g}" + (f" +- {st['std']:.3g}" if st["std"] is not None else "")

    names = obj.get("names", {"validation": obj["name"], "test": obj["name"]})
    typer.echo(f"{names['validation']} over {len(res['seeds'])} seeds: {pm(obj['validation'])}; {names['test']}: "
               f"{pm(obj['test'])}", err=True)
    typer.echo(res["definitions"], err=True)
    typer.echo(str(Path(res["runs"][0]).parent / "repeat.html"))


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory.")] = None,
    set_: SetOpt = [],
    k: Annotated[int, typer.Option("--k", help="Importance samples for the likelihood estimate.")] = 1000,
) -> None:
    """The main job on the bundled digits: a VAE with a 2-D latent space (its picture, likelihood
    and report) and the same VAE with 8 latent dimensions, whose codes are probed as features."""
    from lvmkit.core.config import load_config
    from lvmkit.analysis.evaluate import evaluate as _evaluate
    from lvmkit.analysis.probe import probe as _probe
    from lvmkit.report.summaries import describe_probe as describe
    from lvmkit.report import write_report
    from lvmkit.training.train import train as _train

    cfg = load_config(bundled_config("vae_digits.toml"), set_)
    run = _train(cfg, out, progress=True)
    typer.echo(f"run directory: {run.path}", err=True)
    res = _evaluate(run, k)
    if "nll" in res:
        typer.echo(f"test ELBO {res['test_elbo']:.3f} nats, importance-weighted log p(x) (k={k}) {res['log_likelihood']:.3f} nats", err=True)
    typer.echo(describe(_probe(run, [10, 50, 100], 3)), err=True)
    # The 2-D codes are for the picture (seed report, fig. 14); the features to classify with
    # come from the same model with a wider latent space, probed the same way.
    wide = _train(load_config(bundled_config("vae_digits.toml"), [*set_, "model.latent_dim=8"]),
                  Path(f"{run.path}-latent8"), progress=True)
    typer.echo(f"the same VAE with 8 latent dimensions: {wide.path}", err=True)
    typer.echo(describe(_probe(wide, [10, 50, 100], 3)), err=True)
    write_report(wide)
    path = write_report(run)
    typer.echo(f"report: {path}")


def _click():
    """The click that typer runs on: vendored as ``typer._click`` by recent typer, else click."""
    from typer import core

    vendored = getattr(core, "_click", None)
    if vendored is not None:
        return vendored
    import click

    return click


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning expected errors into one line and exit status 2.

    Usage errors (unknown option, missing argument) are one line too, worded by typer, also
    status 2; lvmkit's warnings (:class:`LvmkitWarning`) are one line on stderr.
    """
    click = _click()
    no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: bare 'lvmkit'
    aborted = (KeyboardInterrupt, typer.Abort, *[e for e in (getattr(click.exceptions, "Abort", None),) if e])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LvmkitWarning)
            warnings.showwarning = _warn_one_line
            code = app(args=argv, prog_name="lvmkit", standalone_mode=False)
    except SystemExit as ex:
        return ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    except no_args_help as err:
        if err.format_message().strip():  # typer's rich help has printed the help already
            err.show()
        return 2
    except click.exceptions.ClickException as err:
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "lvmkit"
        text = " ".join(err.format_message().split()).rstrip(".")
        see = f" See '{where} --help'." if text.endswith("?") else f"; see '{where} --help'."  # after "Did you mean ...?"
        print(f"error: {text}{see}", file=sys.stderr)
        return 2
    except LvmkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except aborted:  # typer's vendored click has no Abort of its own
        code = 130
    if code == 130:  # typer turns Ctrl-C into exit status 130 itself
        print("interrupted; a run can be continued with 'lvmkit train --resume RUN'", file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
