"""Report sections of variational Monte Carlo runs, appended to :data:`lvmkit.report.page.SECTIONS`:
the energy per iteration with its blocking error and the exact value where known, the
acceptance rate per iteration, and the radial one-body density of particles in a trap (from the
wave function's ``configurations``). A run whose metrics hold no ``train_energy`` gets none."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lvmkit.report import page as _report  # noqa: E402


def _vmc(ctx) -> str | None:
    rows = [m for m in ctx.metrics if "train_energy" in m and "train_energy_error" in m]
    if not rows:
        return None
    it = np.array([m["epoch"] for m in rows])
    e = np.array([m["train_energy"] for m in rows])
    err = np.array([m.get("train_energy_error", 0.0) for m in rows])
    exact = getattr(ctx.model, "exact_energy", lambda: None)()
    ev = ctx.run.read_json("eval.json") or {}
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2))
    axes[0].fill_between(it, e - err, e + err, alpha=0.3, lw=0)
    axes[0].plot(it, e, lw=1, label="<E_L> per iteration")
    if exact is not None:
        axes[0].axhline(exact, color="k", ls="--", lw=0.8, label=f"exact {exact:.6g}")
        lo, hi = exact - 0.02 * abs(exact) - 1e-3, max(e[len(e) // 10:].max(), exact) + 1e-3
        axes[0].set_ylim(lo, hi)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("energy")
    axes[0].legend(fontsize=7)
    if "train_acceptance" in rows[0]:
        axes[1].plot(it, [m["train_acceptance"] for m in rows], lw=1)
        axes[1].set_ylim(0, 1)
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("acceptance rate")
    fig.tight_layout()
    caption = "energy per iteration (band: blocking error) and the sampler's acceptance rate"
    if "energy" in ev:
        caption += f"; evaluated: E = {ev['energy']:.6g} ± {ev.get('energy_error', float('nan')):.2g}"
    body = ctx.figure("vmc_energy", fig, caption)
    dims = getattr(ctx.run.config.model, "dims", None)
    draw = getattr(ctx.model, "configurations", None)  # a wave function's draws from |psi|^2
    if draw is not None and getattr(ctx.run.config.model, "system", None) == "harmonic" and dims:
        g = torch.Generator().manual_seed(0)
        x = draw(4000, generator=g).double().numpy().reshape(4000, -1, dims)  # (n, P, D)
        r = np.sqrt((x**2).sum(-1)).ravel()
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.hist(r, bins=60, density=True, histtype="step")
        ax.set_xlabel("distance from the trap centre r")
        ax.set_ylabel("one-body density (radial)")
        fig.tight_layout()
        body += ctx.figure("one_body_density", fig, "radial one-body density of 4000 configurations drawn from |psi|^2")
    return _report._section("Variational Monte Carlo", body)


_report.SECTIONS.insert(1, _vmc)
