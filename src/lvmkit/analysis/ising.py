"""What models learn of the 2-D Ising model: thermodynamics from Boltzmann machines, and the
critical temperature from latent codes and phase probes.

- :func:`ising_thermo` (Torlai & Melko, Phys. Rev. B 94, 165134, 2016): one model per
  temperature, trained through the normal config and training API on that temperature's
  configurations (spins as {0, 1}); long chains of the trained model give samples whose E, |M|,
  C and chi are estimated by the same function as the simulator's
  (:func:`lvmkit.data.ising.thermodynamics`), and compared with the simulator's.
- :func:`ising_transition`: per lattice size, (a) unsupervised: PCA of the configurations at
  all temperatures, whose leading component is the magnetization (Wetzel, Phys. Rev. E 96,
  022140, 2017); T_c(L) at the peak of the latent's susceptibility N (<z^2> - <|z|>^2) / T;
  optionally the same from a VAE's leading code; (b) supervised (Carrasquilla & Melko, Nature
  Physics 13, 431, 2017): a logistic probe trained on configurations far from T_c (T < 2.0
  ordered, T > 2.5 disordered), T_c(L) where its mean output crosses 0.5. Then the finite-size
  extrapolation T_c(L) = T_c + a / L (nu = 1) of each estimate.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from lvmkit.core.config import ExperimentConfig, apply_overrides, load_config, make_config
from lvmkit.core.contract import Encoder, Generator, IterativeGenerator, has, require
from lvmkit.core.errors import ConfigError, DataError
from lvmkit.data.ising import T_C, measure, read_ising, read_observables, write_ising
from lvmkit.runs.run import Run

_COMPARED = ("energy", "abs_magnetization", "specific_heat", "susceptibility")


def _key(t: float) -> str:
    return f"T{t:.4f}"


def _train_or_resume(config: ExperimentConfig, out: Path, progress: bool) -> Run:
    """Train in ``out``; a run already there (a rerun, or a killed one) is resumed to its end."""
    from lvmkit.training.train import resume, train

    if (out / "config.toml").is_file():
        return resume(out, progress=progress)
    return train(config, out, progress=progress)


def model_spins(model, chains: int, steps: int, keep: int, burn_in: float, generator: torch.Generator) -> np.ndarray:
    """Samples of a trained generator as spins +-1: (chains, time, L, L) from ``keep`` states of
    each of ``chains`` chains of an iterative generator after the first ``burn_in`` share of
    ``steps``, or (chains, L, L) independent draws of a one-shot generator. Samples that are not
    {0, 1} are read as Bernoulli probabilities and drawn once."""
    require(model, Generator, "ising-thermo")
    with torch.no_grad():
        if has(model, IterativeGenerator):
            _, chain = model.sample(chains, steps=steps, generator=generator, keep=keep + 1)
            first = int(math.ceil(burn_in * keep))
            x = torch.stack([c for _, c in chain[first + 1 :]], 1)  # (chains, time, 1, L, L)
        else:
            x = model.sample(chains, generator=generator)  # (chains, 1, L, L)
    x = x.float().cpu()
    if bool(((x != 0) & (x != 1)).any()):
        x = torch.bernoulli(x.clamp(0, 1), generator=generator)
    s = (2 * x - 1).to(torch.int8).numpy()
    return s.reshape(*s.shape[:-3], s.shape[-2], s.shape[-1])


def ising_thermo(data: str | Path, out: str | Path, config: str | Path | ExperimentConfig | None = None, *,
                 overrides: Sequence[str] = (), temperatures: Optional[Sequence[float]] = None, chains: int = 500,
                 steps: int = 2000, keep: int = 200, burn_in: float = 0.25, seed: int = 0, progress: bool = True) -> dict:
    """One model per temperature of a simulated file, its thermodynamics against the simulator's.

    Args:
        data: a file written by ``lvmkit simulate ising``.
        out: folder for ``data/`` (one file per temperature), ``runs/`` (one run each),
            ``ising_thermo.json``, ``ising_thermo.html`` and ``figures/``.
        config: the experiment (default: the bundled ``ising_rbm_L8.toml``); data.name and
            data.path are set per temperature.
        overrides: ``section.key=value`` strings applied to the config.
        temperatures: the file's temperatures to use (default all).
        chains, steps, keep, burn_in: ``chains`` chains of ``steps`` sampler steps from each
            model, ``keep`` evenly spaced states of each, the first ``burn_in`` share dropped.
        seed: seed of the model's chains.

    Returns:
        The JSON's content: per temperature the simulator's and the model's quantities with
        errors, relative differences, the run directory, the timings.

    Raises:
        DataError: a file not written by the simulator, or temperatures it does not hold;
        ConfigError: a config whose model cannot sample.
    """
    from lvmkit.report import ising as figures

    data, out = Path(data), Path(out)
    spins, temps = read_ising(data)
    try:
        sim_rows = {round(r["temperature"], 10): r for r in read_observables(data)}
    except (KeyError, OSError):
        raise DataError(f"{str(data)!r} has no observables group; write it with 'lvmkit simulate ising'.") from None
    values = sorted(set(temps.tolist()))
    # a temperature given as text (2.269) names the file's value within 1e-6
    chosen = values if temperatures is None else [next((v for v in values if abs(v - float(t)) <= 1e-6), float(t))
                                                  for t in temperatures]
    missing = [t for t in chosen if t not in values]
    if missing:
        raise DataError(f"{str(data)!r} holds no configurations at T = {missing}; it has {[round(v, 6) for v in values]}.")
    if config is None:
        from importlib import resources

        config = Path(str(resources.files("lvmkit") / "configs" / "ising_rbm_L8.toml"))
    size = spins.shape[-1]
    rows, lattices = [], []
    for i, t in enumerate(chosen):
        at = spins[temps == t]
        part = write_ising(out / "data" / f"{_key(t)}.h5", at, t)
        sets = [*overrides, "data.name=ising", f"data.path={part}"]
        cfg = (make_config(apply_overrides(config.to_dict(), sets)) if isinstance(config, ExperimentConfig)
               else load_config(config, sets))
        t0 = time.perf_counter()
        run = _train_or_resume(cfg, out / "runs" / _key(t), progress=False)
        train_s = time.perf_counter() - t0
        model = run.load_model()
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed + i)
        s = model_spins(model, chains, steps, keep, burn_in, g)
        obs = measure(s, t)
        sample_s = time.perf_counter() - t0
        sim = sim_rows.get(round(t, 10)) or measure(at, t)
        rel = {q: (obs[q] - sim[q]) / abs(sim[q]) if sim[q] else float("nan") for q in _COMPARED}
        rows.append({"temperature": t, "simulator": {k: sim[k] for k in (*_q_keys(), "tau_energy", "tau_abs_magnetization")},
                     "model": obs, "relative_difference": rel, "run": str(run.path), "train_seconds": train_s,
                     "sample_seconds": sample_s, "training_configurations": int(len(at))})
        flat = s.reshape(-1, size, size)
        lattices.append((t, at[:3], flat[-3:]))
        if progress:
            import sys

            print(f"T = {t:.4g}: " + ", ".join(f"{q} {sim[q]:.4g} vs {obs[q]:.4g} ({100 * rel[q]:+.1f}%)" for q in _COMPARED)
                  + f"  [{train_s:.0f} s training]", file=sys.stderr, flush=True)
    label = cfg.model.kind.upper()
    result = {"data": str(data), "size": int(size), "model": label, "chains": chains, "steps": steps, "keep": keep,
              "burn_in": burn_in, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ising_thermo.json").write_text(json.dumps(result, indent=2))
    header = ["T", *[f"{q} {who}" for q in _COMPARED for who in ("MC", label)]]
    table = [[f"{r['temperature']:.4g}", *[f"{r[w][q]:.4f} ± {r[w][q + '_error']:.2g}" for q in _COMPARED
                                           for w in ("simulator", "model")]] for r in rows]
    figures.write_page(out / "ising_thermo.html", f"Ising thermodynamics, L = {size}: Monte Carlo and {label}", [
        ("Thermodynamics", [("thermodynamics", figures.thermodynamics(rows, label),
                             "E, |M|, C and chi per spin against T; error bars from blocking and the jackknife"),
                            figures.table_html(header, table)]),
        ("Lattices", [("lattices", figures.lattices(lattices, label),
                       "three training configurations (top) and three model samples (bottom) at each T")]),
    ])
    result["json"] = str(out / "ising_thermo.json")
    result["html"] = str(out / "ising_thermo.html")
    return result


def _q_keys() -> list[str]:
    from lvmkit.data.ising import QUANTITIES

    return [k for q in QUANTITIES for k in (q, f"{q}_error")]


def format_thermo(result: dict) -> list[str]:
    """The table of :func:`ising_thermo` as text lines."""
    lines = [f"{'T':>6}  " + "  ".join(f"{q[:12]:>12} MC  {'':>7}{result['model']:>9}  {'diff':>6}" for q in _COMPARED)]
    for r in result["rows"]:
        cells = [f"{r['simulator'][q]:9.4f}±{r['simulator'][q + '_error']:<7.2g} {r['model'][q]:9.4f}±{r['model'][q + '_error']:<7.2g} "
                 f"{100 * r['relative_difference'][q]:+5.1f}%" for q in _COMPARED]
        lines.append(f"{r['temperature']:6.3f}  " + "  ".join(cells))
    return lines


# -- the transition from latents ----------------------------------------------------------------
def _per_temperature(values: np.ndarray, temps: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    ts = np.unique(temps)
    return ts, [values[temps == t] for t in ts]


def latent_susceptibility(z: np.ndarray, temps: np.ndarray, n_sites: int) -> tuple[np.ndarray, np.ndarray]:
    """N (<z^2> - <|z|>^2) / T per temperature of a latent z in units of a magnetization per spin."""
    ts, groups = _per_temperature(z, temps)
    return ts, np.array([n_sites * (np.mean(g**2) - np.mean(np.abs(g)) ** 2) / t for t, g in zip(ts, groups)])


def peak(ts: np.ndarray, values: np.ndarray) -> float:
    """The T of the maximum, refined by the parabola through the largest value and its neighbours."""
    k = int(np.argmax(values))
    if k == 0 or k == len(ts) - 1:
        return float(ts[k])
    x, y = ts[k - 1 : k + 2], values[k - 1 : k + 2]
    a, b, _ = np.polyfit(x, y, 2)
    return float(np.clip(-b / (2 * a), x[0], x[2])) if a < 0 else float(ts[k])


def crossing(ts: np.ndarray, values: np.ndarray, level: float = 0.5) -> float:
    """The T where a decreasing curve first falls through ``level``, linearly interpolated."""
    above = values >= level
    for k in range(len(ts) - 1):
        if above[k] and not above[k + 1]:
            v0, v1 = values[k], values[k + 1]
            return float(ts[k] + (v0 - level) * (ts[k + 1] - ts[k]) / (v0 - v1))
    raise DataError(f"The probe's mean output never falls through {level} between T = {ts[0]:.4g} and {ts[-1]:.4g}; "
                    "simulate temperatures on both sides of the transition.")


def _pca_latent(x: np.ndarray) -> np.ndarray:
    """The leading principal component of +-1 configurations (n, N), scaled like m = sum(s) / N
    (a component along the uniform direction gives z = m)."""
    from sklearn.decomposition import PCA

    pc = PCA(n_components=1, random_state=0).fit(x)
    return (x - pc.mean_) @ pc.components_[0] / math.sqrt(x.shape[1])


def _gauge(x: np.ndarray) -> np.ndarray:
    """Each configuration flipped so that its magnetization is >= 0 (the Z2 symmetry fixed, so
    a linear probe can tell order from disorder)."""
    return x * np.where(x.sum(1, keepdims=True) >= 0, 1.0, -1.0)


def probe_curve(x: np.ndarray, temps: np.ndarray, low: float = 2.0, high: float = 2.5, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carrasquilla & Melko's protocol with a logistic probe: trained on half the configurations
    below ``low`` (ordered, 1) and above ``high`` (disordered, 0), gauge-fixed; its mean output
    per temperature on the other half, with the standard error."""
    from sklearn.linear_model import LogisticRegression

    if not (temps < low).any() or not (temps > high).any():
        raise DataError(f"The phase probe trains on configurations below T = {low} and above T = {high}, but the data's "
                        f"temperatures span {temps.min():.4g}..{temps.max():.4g}; simulate both sides.")
    xg = _gauge(x)
    half = np.random.default_rng(seed).random(len(x)) < 0.5
    train = half & ((temps < low) | (temps > high))
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(xg[train], (temps[train] < low).astype(int))
    p = clf.predict_proba(xg[~half])[:, 1]
    ts, groups = _per_temperature(p, temps[~half])
    return ts, np.array([g.mean() for g in groups]), np.array([g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else 0.0
                                                               for g in groups])


def _bootstrap(fn, x: np.ndarray, temps: np.ndarray, reps: int, seed: int) -> float:
    """Standard deviation of ``fn(x, temps)`` over resamples of configurations within each temperature."""
    rng = np.random.default_rng(seed)
    idx_by_t = [np.nonzero(temps == t)[0] for t in np.unique(temps)]
    vals = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(i, len(i)) for i in idx_by_t])
        try:
            vals.append(fn(x[idx], temps[idx]))
        except DataError:
            continue
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def finite_size_fit(sizes: Sequence[int], t_c: Sequence[float], errors: Sequence[float] | None = None) -> dict:
    """Weighted least squares T_c(L) = T_c + a / L (nu = 1): T_c, a and their errors (from the
    errors of the points, or without them from the residuals: NaN for two sizes, where the line
    goes through both)."""
    inv = 1.0 / np.asarray(sizes, dtype=float)
    y = np.asarray(t_c, dtype=float)
    if len(inv) < 2:
        raise DataError(f"The finite-size extrapolation needs two or more lattice sizes, got {list(sizes)}.")
    if errors is not None and not np.any(np.isfinite(np.asarray(errors, dtype=float)) & (np.asarray(errors, dtype=float) > 0)):
        errors = None  # no usable point errors (e.g. a VAE's T_c(L), trained once per size)
    err = np.asarray(errors, dtype=float) if errors is not None else np.ones_like(y)
    err = np.where(np.isfinite(err) & (err > 0), err, np.nanmedian(err[err > 0]) if (err > 0).any() else 1.0)
    a_mat = np.stack([np.ones_like(inv), inv], 1) / err[:, None]
    cov = np.linalg.inv(a_mat.T @ a_mat)
    coef = cov @ a_mat.T @ (y / err)
    if errors is None:  # unknown point errors: scale by the residuals (none left with two sizes)
        dof = len(y) - 2
        cov = cov * (float(((a_mat @ coef - y / err) ** 2).sum()) / dof if dof > 0 else float("nan"))
    return {"t_c": float(coef[0]), "a": float(coef[1]), "t_c_error": float(math.sqrt(cov[0, 0])),
            "a_error": float(math.sqrt(cov[1, 1])), "relative_to_onsager": float(coef[0] / T_C - 1.0)}


def _vae_latent(path: Path, config, overrides: Sequence[str], out: Path, x01: np.ndarray) -> np.ndarray:
    """The leading latent of a model trained on all configurations of ``path``: the first
    principal component of the codes' part that is odd under a global spin flip,
    (code(s) - code(-s)) / 2, scaled like a magnetization. At h = 0 the model's distribution is
    symmetric under the flip, but its codes need not be centred on it: the two ordered phases
    land at unequal distances from the codes' mean, and |z| then fluctuates most at low T, not
    at T_c (measured on L = 32, BENCHMARKS.md). The odd part is centred by construction."""
    cfg = load_config(config, [*overrides, "data.name=ising", f"data.path={path}"])
    run = _train_or_resume(cfg, out, progress=False)
    model = run.load_model()
    require(model, Encoder, "ising-transition --vae-config")

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            codes = [model.embed(torch.from_numpy(x[i : i + 1024]).float()[:, None]) for i in range(0, len(x), 1024)]
        return torch.cat(codes).cpu().numpy().reshape(len(x), -1)

    codes = 0.5 * (embed(x01) - embed(1.0 - x01))  # (n, latent): odd under s -> -s
    from sklearn.decomposition import PCA

    z = PCA(n_components=1, random_state=0).fit_transform(codes)[:, 0]
    return z / (np.std(z) + 1e-12) * 0.5  # unit-free: a scale near a magnetization's, the peak's place is unchanged


def ising_transition(files: Sequence[str | Path], out: str | Path, *, low: float = 2.0, high: float = 2.5,
                     vae_config: str | Path | None = None, vae_overrides: Sequence[str] = (), bootstrap: int = 20,
                     seed: int = 0, progress: bool = True) -> dict:
    """T_c from latents and a phase probe per lattice size, and their finite-size extrapolation.

    Args:
        files: one file of ``lvmkit simulate ising`` per lattice size, each with temperatures on
            both sides of T_c (a dense grid near 2.27 sharpens the estimates).
        out: folder for ``ising_tc.json``, ``ising_tc.html`` and ``figures/``.
        low, high: the probe trains on T < low (ordered) and T > high (disordered).
        vae_config: also train this config (e.g. ``ising_vae_L32.toml``) on each file and use the
            leading principal component of its codes as a second unsupervised latent.
        bootstrap: resamples of the configurations per temperature for the errors of T_c(L).

    Returns:
        The JSON's content: per size the estimates with bootstrap errors and the curves; per
        estimator the fit T_c(L) = T_c + a / L (with two or more sizes).
    """
    from lvmkit.report import ising as figures

    out = Path(out)
    per_size, curves, estimates = [], {"pca": [], "probe": [], "vae": []}, {}
    scatter = None
    for f in files:
        spins, temps = read_ising(f)
        size = spins.shape[-1]
        n = size * size
        x = spins.reshape(len(spins), n).astype(np.float64)
        if len(np.unique(temps)) < 3:
            raise DataError(f"{str(f)!r} holds {len(np.unique(temps))} temperatures; T_c estimates need three or more.")

        def pca_tc(xs, ts):
            return peak(*latent_susceptibility(_pca_latent(xs), ts, n))

        def probe_tc(xs, ts):
            return crossing(*probe_curve(xs, ts, low, high, seed)[:2])

        z = _pca_latent(x)
        ts, chi_z = latent_susceptibility(z, temps, n)
        row = {"size": int(size), "configurations": int(len(x)), "temperatures": ts.tolist()}
        row["pca"] = {"t_c": peak(ts, chi_z), "t_c_error": _bootstrap(pca_tc, x, temps, bootstrap, seed),
                      "susceptibility": chi_z.tolist(),
                      "correlation_with_abs_m": float(np.corrcoef(np.abs(z), np.abs(x.mean(1)))[0, 1])}
        pts, mean_p, err_p = probe_curve(x, temps, low, high, seed)
        row["probe"] = {"t_c": crossing(pts, mean_p), "t_c_error": _bootstrap(probe_tc, x, temps, bootstrap, seed),
                        "mean_output": mean_p.tolist(), "error": err_p.tolist()}
        curves["pca"].append({"label": f"L={size}", "temperature": ts, "value": chi_z / n, "t_c": row["pca"]["t_c"],
                              "ylabel": "latent susceptibility / N"})
        curves["probe"].append({"label": f"L={size}", "temperature": pts, "value": mean_p, "error": err_p,
                                "t_c": row["probe"]["t_c"], "level": 0.5, "ylabel": "probe's mean output (ordered)"})
        if vae_config is not None:
            zv = _vae_latent(Path(f), vae_config, vae_overrides, out / "runs" / f"vae_L{size}", (x + 1) / 2)
            tv, chi_v = latent_susceptibility(zv, temps, n)
            row["vae"] = {"t_c": peak(tv, chi_v), "susceptibility": chi_v.tolist(),
                          "correlation_with_abs_m": float(np.corrcoef(np.abs(zv), np.abs(x.mean(1)))[0, 1])}
            curves["vae"].append({"label": f"L={size}", "temperature": tv, "value": chi_v / n, "t_c": row["vae"]["t_c"],
                                  "ylabel": "VAE latent susceptibility / N"})
        per_size.append(row)
        scatter = (temps, z, np.abs(x.mean(1)), size)
        if progress:
            import sys

            print(f"L = {size}: T_c(L) PCA {row['pca']['t_c']:.4f} +- {row['pca']['t_c_error']:.2g}, probe "
                  f"{row['probe']['t_c']:.4f} +- {row['probe']['t_c_error']:.2g}"
                  + (f", VAE {row['vae']['t_c']:.4f}" if "vae" in row else ""), file=sys.stderr, flush=True)
    fits = {}
    for name in ("pca", "probe", "vae"):
        have = [r for r in per_size if name in r]
        if len(have) >= 2:
            fits[name] = finite_size_fit([r["size"] for r in have], [r[name]["t_c"] for r in have],
                                         [r[name].get("t_c_error", float("nan")) for r in have])
            estimates[name] = {"label": name, "sizes": [r["size"] for r in have], "t_c": [r[name]["t_c"] for r in have]}
    result = {"files": [str(f) for f in files], "low": low, "high": high, "sizes": per_size, "extrapolation": fits,
              "onsager": T_C}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ising_tc.json").write_text(json.dumps(result, indent=2))
    sections = [("Leading latent", [("latent", figures.latent_against_order(scatter[0], scatter[1], scatter[2]),
                                     f"L = {scatter[3]}: the first principal component against T and |M|")]),
                ("Latent susceptibility", [("latent_susceptibility", figures.crossing(curves["pca"]),
                                            "N (<z^2> - <|z|>^2) / T of the first principal component; dashed: its peak")]),
                ("Phase probe", [("probe", figures.crossing(curves["probe"]),
                                  f"mean output of a logistic probe trained on T < {low} and T > {high}; dashed: the 0.5 crossing")])]
    if curves["vae"]:
        sections.append(("VAE latent", [("vae_susceptibility", figures.crossing(curves["vae"]), "the VAE's leading code")]))
    if estimates:
        sections.append(("Finite-size extrapolation", [("finite_size", figures.finite_size(list(estimates.values()),
                                                                                            [fits[k] for k in estimates]),
                                                        "T_c(L) = T_c + a / L")]))
    figures.write_page(out / "ising_tc.html", "The Ising transition from latents and probes", sections)
    result["json"], result["html"] = str(out / "ising_tc.json"), str(out / "ising_tc.html")
    return result


__all__ = ["crossing", "finite_size_fit", "format_thermo", "ising_thermo", "ising_transition", "latent_susceptibility",
           "model_spins", "peak", "probe_curve"]
