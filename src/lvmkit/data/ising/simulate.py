"""Markov chain Monte Carlo of the 2-D Ising model, many chains at once in torch.

Two update rules (:data:`UPDATES`), each one step of every chain (chains, L, L) of +-1:

- ``metropolis``: one sweep of single-spin Metropolis flips: each site is attempted with
  probability ``attempt`` (0.9) and then flipped with probability min(1, exp(-beta dE)),
  dE = 2 s_i (sum of neighbours + h). Sites of one sublattice share no bond, so a whole
  sublattice is updated at once: the two colours of the checkerboard on even L; on odd L the
  periodic checkerboard would join sites of one colour across the boundary, so three
  sublattices are used instead, colour (c(i) + c(j)) mod 3 with c = 0, 1, 0, 1, ..., 2 a proper
  3-colouring of the ring. Every sublattice update satisfies detailed balance; the sweep,
  their product in a fixed order, leaves the Boltzmann distribution invariant. Why not
  attempt every site: with attempt = 1 the flips with dE <= 0 are forced, and a parallel
  update can then cycle for ever (on L = 2 the stripes flip to the inverted stripes and back at
  every sweep; on L = 3 the fixed-order sweep has four closed two-state cycles besides the
  504 other states), which biased chains there by 3 sigma. With attempt < 1 every subset of a
  sublattice may flip, so one sweep reaches every state: the chain is irreducible and aperiodic.
- ``wolff``: one Wolff cluster flip per chain (Wolff, PRL 62, 361, 1989), h = 0 only: every
  bond between equal neighbours is open with probability 1 - exp(-2 beta), drawn once per
  step; the cluster is the seed's connected component over open bonds (grown breadth first,
  all chains together) and is flipped. Drawing all bonds first gives the same cluster law as
  testing each bond when the cluster first reaches it.

:func:`simulate_temperature` measures the integrated autocorrelation time of |M| and E in a
pilot run (doubled until its second half spans 20 tau), discards the pilot as burn-in, keeps
configurations 2 tau apart and estimates the observables from every step of production.
:func:`simulate` runs a list of temperatures, one HDF5 part file per finished temperature
(written atomically and skipped on a rerun), and joins them into one file.
"""
from __future__ import annotations

import abc
import hashlib
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError, LvmkitError
from lvmkit.core.registry import Registry
from lvmkit.core.statistics import autocorrelation_time
from lvmkit.data.ising.observables import QUANTITIES, T_C, energy_magnetization, thermodynamics


def sublattices(size: int) -> Tensor:
    """Masks (K, L, L) of sublattices of the periodic L x L lattice whose sites share no bond:
    K = 2 (checkerboard) for even L, K = 3 for odd L (module docstring)."""
    if size % 2 == 0:
        ring = torch.arange(size) % 2
        k = 2
    else:
        ring = torch.cat([torch.arange(size - 1) % 2, torch.tensor([2])]) if size > 1 else torch.tensor([0])
        k = 3
    colour = (ring[:, None] + ring[None, :]) % k
    return torch.stack([colour == c for c in range(k)])


def _neighbours(s: Tensor) -> Tensor:
    return torch.roll(s, 1, -1) + torch.roll(s, -1, -1) + torch.roll(s, 1, -2) + torch.roll(s, -1, -2)


class Update(abc.ABC):
    """One step of every chain of an L x L lattice; ``sweeps_per_step``: lattice sweeps one step
    is worth (1 for Metropolis; the mean cluster size over N for Wolff, updated as it runs)."""

    name: str

    def __init__(self, size: int) -> None:
        self.size = size
        self.sweeps_per_step = 1.0

    @abc.abstractmethod
    def step(self, spins: Tensor, beta: float, field: float, generator: torch.Generator) -> Tensor:
        """Advance every chain of ``spins`` (chains, L, L) float +-1 by one step; returns the new spins."""

    def summary(self) -> dict:
        """Rates of the steps so far (acceptance, cluster size)."""
        return {}


UPDATES: Registry[Callable[[int], Update]] = Registry("Ising update rule")


@UPDATES.register("metropolis")
class Metropolis(Update):
    """Single-spin Metropolis, one sublattice at a time; a step is one sweep."""

    name = "metropolis"

    def __init__(self, size: int, attempt: float = 0.9) -> None:
        if not 0 < attempt < 1:
            raise ConfigError(f"The Metropolis attempt probability must lie in (0, 1), got {attempt}; 1 would make the "
                              "parallel update non-ergodic (see lvmkit.data.ising.simulate).")
        super().__init__(size)
        self.masks = sublattices(size)
        self.attempt = attempt
        self._flips = self._sites = 0.0

    def update_sublattice(self, spins: Tensor, beta: float, field: float, k: int, uniform: Tensor) -> Tensor:
        """Metropolis on sublattice ``k`` of every chain with the uniforms ``uniform`` (chains, L, L):
        a site flips when uniform < attempt * min(1, exp(-beta dE))."""
        d_e = 2.0 * spins * (_neighbours(spins) + field)
        flip = (uniform < self.attempt * torch.exp(-beta * d_e).clamp(max=1.0)) & self.masks[k].to(spins.device)
        self._flips += float(flip.sum())
        return torch.where(flip, -spins, spins)

    def step(self, spins, beta, field, generator):
        # one uniform per site and sweep: each site is updated once per sweep
        u = torch.rand(spins.shape, generator=generator, device=spins.device)
        for k in range(len(self.masks)):
            spins = self.update_sublattice(spins, beta, field, k, u)
        self._sites += spins.numel()
        return spins

    def summary(self) -> dict:
        return {"acceptance": self._flips / self._sites if self._sites else float("nan")}


def neighbour_table(size: int) -> Tensor:
    """(N, 4) flat indices of each site's right, left, down and up neighbours (periodic)."""
    i = torch.arange(size * size)
    r, c = i // size, i % size
    return torch.stack([r * size + (c + 1) % size, r * size + (c - 1) % size,
                        (r + 1) % size * size + c, (r - 1) % size * size + c], 1)


@UPDATES.register("wolff")
class Wolff(Update):
    """Wolff single-cluster flips (h = 0); a step is one cluster per chain. The cluster grows
    breadth first over the open bonds of all chains at once, as a list of frontier sites (the
    work follows the cluster's size, not the lattice's)."""

    name = "wolff"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.neighbours = neighbour_table(size)
        self._flipped = self._steps = 0.0

    def step(self, spins, beta, field, generator):
        if field != 0:
            raise ConfigError(f"Wolff cluster updates need h = 0, got field {field}; use update 'metropolis'.")
        c, l, _ = spins.shape
        n, dev = l * l, spins.device
        nbr = self.neighbours.to(dev)
        p = 1.0 - math.exp(-2.0 * beta)
        s = spins.reshape(c, n)
        # each bond (to the right, downwards) open between equal spins with probability p, drawn once
        right = (s == s[:, nbr[:, 0]]) & (torch.rand(c, n, generator=generator, device=dev) < p)
        down = (s == s[:, nbr[:, 2]]) & (torch.rand(c, n, generator=generator, device=dev) < p)
        # (chains * N, 4): the bond from each site to its right, left, down and up neighbour
        open_ = torch.stack([right, right[:, nbr[:, 1]], down, down[:, nbr[:, 3]]], -1).reshape(c * n, 4)
        front = torch.arange(c, device=dev) * n + torch.randint(0, n, (c,), generator=generator, device=dev)
        cluster = torch.zeros(c * n, dtype=torch.bool, device=dev)
        cluster[front] = True
        while front.numel():
            site = front % n
            reached = ((front - site)[:, None] + nbr[site])[open_[front]]  # flat indices over all chains
            reached = torch.unique(reached[~cluster[reached]])
            cluster[reached] = True
            front = reached
        cluster = cluster.view(c, l, l)
        self._flipped += float(cluster.sum())
        self._steps += c
        self.sweeps_per_step = self._flipped / (self._steps * n)
        return torch.where(cluster, -spins, spins)

    def summary(self) -> dict:
        return {"mean_cluster_size": self._flipped / self._steps if self._steps else float("nan")}


UPDATE_CHOICES = ("metropolis", "wolff", "auto")


def choose_update(update: str, temperature: float, field: float = 0.0) -> str:
    """The rule ``update`` names; ``auto``: Wolff within 15% of T_c at h = 0 (where Metropolis
    slows down critically), Metropolis elsewhere."""
    if update not in UPDATE_CHOICES:
        raise ConfigError(f"Unknown Ising update {update!r}; choose one of: {', '.join(UPDATE_CHOICES)}.")
    if update == "auto":
        return "wolff" if field == 0 and abs(temperature - T_C) <= 0.15 * T_C else "metropolis"
    if update == "wolff" and field != 0:
        raise ConfigError(f"Wolff cluster updates need h = 0, got --field {field}; use --update metropolis (or auto).")
    return update


def check_settings(size: int, temperatures: Sequence[float], n: int, field: float = 0.0, chains: Optional[int] = None) -> None:
    """One-sentence ConfigErrors for a lattice below 2 x 2, a non-positive or non-finite
    temperature, no configurations, or no chains."""
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise ConfigError(f"The lattice size must be an integer of at least 2, got {size!r}; pass e.g. --size 8.")
    if len(temperatures) == 0:
        raise ConfigError("No temperatures given; pass e.g. --temperatures 1.5,2.269,3.0.")
    for t in temperatures:
        if not (math.isfinite(t) and t > 0):
            raise ConfigError(f"Temperatures must be positive and finite, got {t}; pass T > 0 in units of J / k_B (T_c = 2.269).")
    if n < 1:
        raise ConfigError(f"The number of configurations per temperature must be at least 1, got {n}.")
    if chains is not None and chains < 1:
        raise ConfigError(f"The number of parallel chains must be at least 1, got {chains}.")
    if not math.isfinite(field):
        raise ConfigError(f"The field must be finite, got {field}.")


def _seed(seed: int, size: int, temperature: float, field: float) -> int:
    """A seed per (seed, L, T, h): a restarted temperature repeats its chains exactly."""
    text = f"{seed}:{size}:{float(temperature)!r}:{float(field)!r}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def initial_spins(chains: int, size: int, temperature: float, field: float, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> Tensor:
    """Ordered below T_c (each chain along the field, or with a random sign at h = 0: random
    starts there fall into long-lived stripes), random at and above T_c."""
    if temperature < T_C:
        if field != 0:
            sign = torch.full((chains, 1, 1), math.copysign(1.0, field), device=device)
        else:
            sign = 2.0 * torch.randint(0, 2, (chains, 1, 1), generator=generator, device=device).float() - 1.0
        return sign.expand(chains, size, size).clone()
    return 2.0 * torch.randint(0, 2, (chains, size, size), generator=generator, device=device).float() - 1.0


@dataclass
class TemperatureRun:
    """One temperature's result: ``spins`` (n, L, L) int8, the observables of
    :func:`~lvmkit.data.ising.observables.thermodynamics` over every production step, and how
    the chains ran (times in steps of the update; ``sweeps_per_step`` converts to sweeps)."""

    temperature: float
    update: str
    spins: np.ndarray
    observables: dict
    chains: int
    burn_in: int
    interval: int
    production: int
    tau_energy: float
    tau_abs_magnetization: float
    tau_converged: bool
    sweeps_per_step: float
    seconds: float
    rates: dict = dc_field(default_factory=dict)

    def describe(self) -> str:
        """One line: the measured autocorrelation times and the chain lengths they set."""
        spp = self.sweeps_per_step
        unit = "sweeps" if self.update == "metropolis" else f"sweeps ({self.tau_abs_magnetization:.3g} and {self.tau_energy:.3g} clusters)"
        warn = "" if self.tau_converged else "; the pilot reached its limit before tau settled, so errors may be low"
        o = self.observables
        return (f"T = {self.temperature:.4g} ({self.update}): tau_int |M| {self.tau_abs_magnetization * spp:.3g}, "
                f"E {self.tau_energy * spp:.3g} {unit}; burn-in {self.burn_in} steps, {self.interval} between "
                f"configurations, {self.production} measured; e = {o['energy']:.5f} +- {o['energy_error']:.2g}, "
                f"|m| = {o['abs_magnetization']:.4f} +- {o['abs_magnetization_error']:.2g}{warn}")


def _run(spins: Tensor, rule: Update, steps: int, beta: float, field: float, g: torch.Generator,
         keep_every: int = 0) -> tuple[Tensor, np.ndarray, np.ndarray, list[np.ndarray]]:
    """``steps`` steps; the (chains, steps) series of e and m after each, and every
    ``keep_every``-th configuration as int8."""
    es, ms, kept = [], [], []
    for i in range(1, steps + 1):
        spins = rule.step(spins, beta, field, g)
        e, m = energy_magnetization(spins, field)
        es.append(e)
        ms.append(m)
        if keep_every and i % keep_every == 0:
            kept.append(spins.to(torch.int8).cpu().numpy())
    e_ = torch.stack(es, 1).double().cpu().numpy() if es else np.zeros((spins.shape[0], 0))
    m_ = torch.stack(ms, 1).double().cpu().numpy() if ms else np.zeros((spins.shape[0], 0))
    return spins, e_, m_, kept


def simulate_temperature(size: int, temperature: float, n: int, *, field: float = 0.0, update: str = "auto",
                         chains: Optional[int] = None, seed: int = 0, device: str = "cpu", min_pilot: int = 64,
                         max_pilot: int = 2**14, production: Optional[int] = None,
                         status: Optional[Callable[[str], None]] = None) -> TemperatureRun:
    """Simulate one temperature: a pilot run until its second half spans 20 integrated
    autocorrelation times of |M| and E (doubling from ``min_pilot`` steps up to ``max_pilot``),
    discarded as burn-in; then production, keeping ``n`` configurations 2 tau apart from
    ``chains`` parallel chains (default min(n, 200)) and measuring every step.

    Args:
        production: steps of production per chain (default: enough for the configurations,
            and at least 100 tau and 128 steps).
        status: called with a short text as phases progress (the progress bar's).

    Raises:
        ConfigError: bad settings (:func:`check_settings`), an unknown update, Wolff with h != 0.
    """
    check_settings(size, [temperature], n, field, chains)
    name = choose_update(update, temperature, field)
    rule = UPDATES.get(name)(size)
    chains = chains or min(n, 200)
    t0 = time.perf_counter()
    g = torch.Generator(device=device).manual_seed(_seed(seed, size, temperature, field))
    beta = 1.0 / temperature
    spins = initial_spins(chains, size, temperature, field, g, device)
    say = status or (lambda text: None)
    es, ms, done, target = [], [], 0, max(4, min_pilot)
    while True:
        say(f"pilot {done}/{target} steps")
        spins, e, m, _ = _run(spins, rule, target - done, beta, field, g)
        es.append(e)
        ms.append(m)
        done = target
        e_all, m_all = np.concatenate(es, 1), np.abs(np.concatenate(ms, 1))
        tau_e = autocorrelation_time(e_all[:, done // 2 :])
        tau_m = autocorrelation_time(m_all[:, done // 2 :])
        tau = max(tau_e.tau, tau_m.tau)
        converged = tau_e.converged and tau_m.converged and done // 2 >= 20 * tau
        if converged or done >= max_pilot:
            break
        target = min(2 * target, max_pilot)
    burn_in = done
    interval = max(1, math.ceil(2 * tau))
    per_chain = math.ceil(n / chains)
    steps = production or max(per_chain * interval, math.ceil(100 * tau), 128)
    steps = max(steps, per_chain * interval)
    say(f"production {steps} steps")
    spins, e, m, kept = _run(spins, rule, steps, beta, field, g, keep_every=interval)
    configs = np.stack(kept[:per_chain], 0).reshape(-1, size, size)[:n]  # step-major: all chains at each kept step
    obs = thermodynamics(e, m, temperature, size * size)
    return TemperatureRun(float(temperature), name, configs, obs, chains, burn_in, interval, steps, tau_e.tau, tau_m.tau,
                          bool(converged), rule.sweeps_per_step, time.perf_counter() - t0, rule.summary())


# -- files -------------------------------------------------------------------------------------
FORMAT = "lvmkit-ising-1"


def _settings(size: int, n: int, seed: int, field: float, update: str, chains: Optional[int]) -> dict:
    return {"format": FORMAT, "size": int(size), "n": int(n), "seed": int(seed), "field": float(field),
            "update": update, "chains": chains, "J": 1.0}


_OBS_KEYS = (*[k for q in QUANTITIES for k in (q, f"{q}_error")], "tau_energy", "tau_abs_magnetization", "samples")
_RUN_KEYS = ("burn_in", "interval", "production", "chains", "sweeps_per_step", "seconds")


def _write_h5(path: Path, spins: np.ndarray, temperature: np.ndarray, rows: list[dict], settings: dict) -> None:
    """Write atomically: a temporary file beside ``path``, renamed over it when complete."""
    import h5py

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("spins", data=spins.astype(np.int8), chunks=(min(len(spins), 1024), *spins.shape[1:]),
                             compression="gzip", compression_opts=4)
            f.create_dataset("temperature", data=temperature.astype(np.float64))
            obs = f.create_group("observables")
            obs.create_dataset("temperature", data=np.array([r["temperature"] for r in rows], dtype=np.float64))
            for key in (*_OBS_KEYS, *_RUN_KEYS, "tau_converged"):
                obs.create_dataset(key, data=np.array([float(r[key]) for r in rows], dtype=np.float64))
            obs.create_dataset("update", data=np.array([r["update"] for r in rows], dtype="S16"))
            f.attrs["lvmkit_ising"] = json.dumps(settings)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _row(r: TemperatureRun) -> dict:
    row = {k: r.observables[k] for k in _OBS_KEYS}
    row.update(temperature=r.temperature, update=r.update, tau_converged=r.tau_converged,
               **{k: getattr(r, k) for k in _RUN_KEYS})
    return row


def read_observables(path: str | Path) -> list[dict]:
    """The per-temperature rows of a file written by :func:`simulate` (or one of its parts)."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["observables"]
        keys = [k for k in g.keys() if k != "update"]
        cols = {k: g[k][()] for k in keys}
        updates = [u.decode() for u in g["update"][()]]
    return [{**{k: float(cols[k][i]) for k in keys}, "update": updates[i]} for i in range(len(updates))]


def read_settings(path: str | Path) -> dict:
    """The settings a file written by :func:`simulate` records (size, n, seed, field, update, chains)."""
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["lvmkit_ising"])


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[tuple[Callable[[str, str], None], Callable[[str], None]]]:
    """Yields (status(temperature, text), done(line)): on a terminal a bar over temperatures with
    the current one and its phase, finished lines printed above it; in a log, the lines alone."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if enabled and console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("temperatures"),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[now]}"),
                      console=console, transient=True) as bar:
            task = bar.add_task(description, total=total, now="")

            def done(line: str) -> None:
                bar.console.print(line, highlight=False)
                bar.advance(task)

            yield (lambda t, text: bar.update(task, now=f"T = {t} {text}")), done
        return

    def line(text: str) -> None:
        if enabled:
            print(text, file=sys.stderr, flush=True)

    yield (lambda t, text: None), line


def _part_path(parts: Path, size: int, temperature: float, field: float) -> Path:
    return parts / f"L{size}_h{field:+.6g}_T{temperature:.6f}.h5"


def simulate(size: int, temperatures: Sequence[float], n: int, out: str | Path, *, seed: int = 0, field: float = 0.0,
             update: str = "auto", chains: Optional[int] = None, device: str = "cpu", overwrite: bool = False,
             progress: bool = False, **chain_options) -> Path:
    """Simulate ``n`` configurations at each temperature and write one HDF5 file.

    Args:
        size: the lattice side L (>= 2; odd L uses three sublattices, see the module docstring).
        temperatures: in units of J / k_B; each is simulated independently.
        n: configurations per temperature.
        out: folder for ``ising_L<size>.h5`` and ``parts/`` (one finished file per temperature).
        seed: the same seed gives the same file; each temperature's chains are seeded from it.
        field: the field h (J = 1).
        update: metropolis, wolff or auto (Wolff within 15% of T_c at h = 0).
        chains: parallel chains per temperature (default min(n, 200)).
        overwrite: simulate every temperature again, even those whose parts exist.
        progress: a bar over temperatures on stderr and one line per temperature with the
            measured autocorrelation times.
        chain_options: passed to :func:`simulate_temperature` (``min_pilot``, ``max_pilot``,
            ``production``).

    Returns:
        The path of the joined file: datasets ``spins`` (n * len(temperatures), L, L) int8 of
        +-1 and ``temperature`` (one per configuration), the group ``observables`` (one row per
        temperature: every quantity with its error, tau, burn-in, interval) and the settings
        as JSON in the attribute ``lvmkit_ising``. A killed run resumes at the first
        unfinished temperature when rerun with the same arguments.

    Raises:
        ConfigError: bad settings; LvmkitError: parts in ``out`` written with other settings.
    """
    temperatures = [float(t) for t in temperatures]
    check_settings(size, temperatures, n, field, chains)
    for t in temperatures:
        choose_update(update, t, field)
    out = Path(out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    settings = _settings(size, n, seed, field, update, chains)
    rows, spins, temps = [], [], []
    with _progress(progress, len(temperatures), f"simulating L = {size}") as (status, done):
        for t in temperatures:
            part = _part_path(parts, size, t, field)
            if part.is_file() and not overwrite:
                old = read_settings(part)
                differ = [k for k in settings if old.get(k) != settings[k]]
                if differ:
                    raise LvmkitError(f"{str(part)!r} was simulated with other settings ({', '.join(f'{k} {old.get(k)!r}' for k in differ)}, "
                                      f"now {', '.join(repr(settings[k]) for k in differ)}); choose another --out or pass --force.")
                done(f"T = {t:.4g}: finished before, read from {part}")
            else:
                r = simulate_temperature(size, t, n, field=field, update=update, chains=chains, seed=seed, device=device,
                                         status=lambda text, t=t: status(f"{t:.4g}", text), **chain_options)
                _write_h5(part, r.spins, np.full(len(r.spins), t), [_row(r)], settings)
                done(r.describe())
            import h5py

            with h5py.File(part, "r") as f:
                spins.append(f["spins"][()])
                temps.append(f["temperature"][()])
            rows.extend(read_observables(part))
    name = f"ising_L{size}.h5" if field == 0 else f"ising_L{size}_h{field:g}.h5"
    path = out / name
    _write_h5(path, np.concatenate(spins), np.concatenate(temps), rows, settings)
    return path


__all__ = ["FORMAT", "Metropolis", "TemperatureRun", "UPDATES", "UPDATE_CHOICES", "Update", "Wolff", "check_settings",
           "choose_update", "initial_spins", "read_observables", "read_settings", "simulate", "simulate_temperature",
           "sublattices"]
