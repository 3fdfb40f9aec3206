"""Variational Monte Carlo as a model family (``vmc``): a trial wave function trained to minimise
its energy <psi|H|psi> / <psi|psi>, through the one training loop.

The family reads no data (``data.name = "none"``: a placeholder of one row per split, so an
epoch of the loop is one VMC iteration): its training step samples instead. One iteration
(:meth:`VMC.training_step`) advances the persistent chains (a buffer, saved in checkpoints, so
a resumed run replays an uninterrupted one exactly), measures the local energy on the samples
(its mean, blocking error and variance are the logged terms), and steps the optimizer along
the energy gradient 2(<E_L O> - <E_L><O>) or, with ``model.sr``, the stochastic-reconfiguration
direction (:mod:`.gradient`). ``forward`` is the mean local energy at the chains' current
states (pure); ``evaluate_split`` is a long run of the chains with the blocking error
(Flyvbjerg & Petersen 1989, :func:`lvmkit.core.statistics.blocking`).

Capabilities: an energy model (E(x) = -2 ln psi(x), so that |psi|^2 = exp(-E)). It is no
``Generator``: its draws (:meth:`VMC.configurations`) are configurations of a physical system,
not examples of a data set, and the consumers of generators compare samples with data.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.contract import FAMILIES, AbstractModel, EnergyModel, Family, LossOutput
from lvmkit.core.errors import DataError, LvmkitWarning, TrainingDiverged
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.core.statistics import blocking
from lvmkit.data import SOURCES, RawData
from lvmkit.models.wavefunction.config import VMCConfig
from lvmkit.models.wavefunction.gaussian_rbm import GaussianBinaryWave
from lvmkit.models.wavefunction.gradient import linear_surrogate, per_sample_log_grads, sr_direction
from lvmkit.models.wavefunction.hamiltonians import HarmonicTrap, Heisenberg, TransverseIsing
from lvmkit.models.wavefunction.samplers import Density, draw, make_kernel
from lvmkit.models.wavefunction.spin_rbm import SpinRBMWave

MODEL_KINDS.register("nqs")({"family": "vmc"})  # a neural-network quantum state

_CHUNK = 8192  # configurations per local-energy evaluation (bounds the autograd graph)


@SOURCES.register("none")
def _no_data(cfg) -> RawData:
    """No data, for families that draw their own samples (vmc): three placeholder rows, so
    that each split holds one and an epoch of the loop is one training step."""
    return RawData(np.zeros((3, 1), dtype=np.float32), origin="no data (the model draws its own samples)", scale="none")


def error_of_mean(series: Tensor) -> float:
    """The blocking error of the mean of ``series`` (chains, T); T = 1: independent chains."""
    a = series.detach().cpu().numpy()
    return float(blocking(a if a.shape[1] >= 2 else a.T).error)


class VMC(AbstractModel, EnergyModel):
    """A trial wave function, its Hamiltonian, its chains (module docstring)."""

    selection_metric = None  # energies of successive iterations are noisy: the last checkpoint is the model
    divergence_advice = ("lower train.lr or model.step_size, or set model.sr = true with model.sr_shift = 0.01, or "
                         "start from smaller weights (model.init_scale).")

    def __init__(self, cfg: VMCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        scale = cfg.init_scale
        if cfg.system == "harmonic":
            sigma = cfg.sigma if cfg.sigma is not None else 1.0 / math.sqrt(cfg.omega)
            self.wave = GaussianBinaryWave(cfg.particles, cfg.dims, cfg.hidden, sigma, square_root=cfg.square_root,
                                           jastrow=cfg.jastrow, init_scale=scale or 0.1)
            self.hamiltonian = HarmonicTrap(cfg.particles, cfg.dims, cfg.omega, cfg.coulomb)
            start = sigma * torch.randn(cfg.chains, cfg.particles * cfg.dims, dtype=torch.float64)
        else:
            self.wave = SpinRBMWave(cfg.sites, max(1, round(cfg.alpha * cfg.sites)), init_scale=scale or 0.01)
            if cfg.system == "tfim":
                self.hamiltonian = TransverseIsing(cfg.sites, cfg.field, cfg.coupling)
                start = torch.randint(0, 2, (cfg.chains, cfg.sites)).to(torch.float64) * 2 - 1
            else:  # S^z = 0: the exchange moves keep it, and the ground state lies there
                self.hamiltonian = Heisenberg(cfg.sites, cfg.coupling)
                half = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat_interleave(cfg.sites // 2)
                start = torch.stack([half[torch.randperm(cfg.sites)] for _ in range(cfg.chains)])
        self.input_shape = self.wave.shape
        self.sampler_name = cfg.chosen_sampler
        self.kernel = make_kernel(self.sampler_name, cfg.step_size)
        self.thin = cfg.thin or (1 if self.wave.continuous else cfg.sites)
        self.register_buffer("chains", start)
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        if cfg.sr:
            self.optimizer_defaults = {"main": {"optimizer": "sgd", "lr": 0.05}}
        else:
            self.optimizer_defaults = {"main": {"optimizer": "adam", "lr": 0.01}}
        self._warned = False

    # -- the mathematics ----------------------------------------------------------------------
    def log_psi(self, x: Tensor) -> Tensor:
        return self.wave.log_psi(x)

    def local_energy(self, x: Tensor) -> Tensor:
        """E_L at configurations ``x`` (n, *input_shape), float64, detached."""
        x = x.detach().to(torch.float64)
        # spins: the RBM's closed-form ratios psi(s') / psi(s) from theta (SpinRBMWave.log_ratios)
        kw = {} if self.wave.continuous else {"log_ratios": self.wave.log_ratios}
        parts = [self.hamiltonian.local_energy(self.wave.log_psi, xb, **kw).detach() for xb in x.split(_CHUNK)]
        return torch.cat(parts)

    def exact_energy(self) -> float | None:
        """The ground-state energy when the Hamiltonian knows it in closed form, else None."""
        return self.hamiltonian.exact_energy()

    def draw(self, burn_in: int, samples: int, generator: torch.Generator | None = None, chains: Tensor | None = None):
        """Advance copies of the chains (or ``chains``): :func:`.samplers.draw`."""
        start = (self.chains if chains is None else chains).clone()
        return draw(self.kernel, Density(self.wave), start, burn_in=burn_in, samples=samples, thin=self.thin,
                    generator=generator)

    # -- the contract -------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        """The mean local energy at the chains' current states (``x``, a placeholder batch, is not read)."""
        with torch.autocast(self.chains.device.type, enabled=False):
            e = self.local_energy(self.chains)
        energy = e.mean()
        return LossOutput(energy.float(), {"loss": energy.float(), "energy": energy.float(), "variance": e.var().float()})

    def training_step(self, x: Tensor, step: int, opt) -> dict[str, Tensor]:
        """One VMC iteration (module docstring); ``x`` is not read."""
        cfg = self.cfg
        with torch.autocast(self.chains.device.type, enabled=False):  # float64 throughout
            first = int(self.iterations) == 0
            d = self.draw(cfg.warmup if first else cfg.burn_in, cfg.samples)
            flat = d.samples.reshape(-1, *self.input_shape)
            e_loc = self.local_energy(flat)
            bad = int((~torch.isfinite(e_loc)).sum())
            if bad:
                raise TrainingDiverged(f"the local energy (through the Laplacian of ln psi) is NaN or infinite at {bad} of "
                                       f"{len(e_loc)} samples")
            self._check_acceptance(d.acceptance)
            mean = e_loc.mean()
            params = [p for p in self.wave.parameters() if p.requires_grad]  # the columns of O, in order
            if cfg.sr:
                o = self.wave.log_grads(flat) if hasattr(self.wave, "log_grads") else per_sample_log_grads(self.wave, flat)
                loss = linear_surrogate(params, sr_direction(o, e_loc, cfg.sr_shift))
            else:  # d/dtheta of 2 <(E_L - <E_L>) ln psi> is the energy gradient 2(<E_L O> - <E_L><O>)
                loss = 2.0 * ((e_loc - mean) * self.wave.log_psi(flat)).mean().float()
            opt.minimize("main", loss)
        with torch.no_grad():
            self.chains.copy_(d.last)
            self.iterations += 1
        energy = mean.float()
        return {"loss": energy, "energy": energy, "energy_error": torch.tensor(error_of_mean(e_loc.view(cfg.chains, -1))),
                "variance": e_loc.var().float(), "acceptance": torch.tensor(d.acceptance)}

    def _check_acceptance(self, rate: float) -> None:
        if self._warned or self.sampler_name not in ("metropolis", "langevin") or 0.05 <= rate <= 0.99:
            return
        self._warned = True
        advice = "lower" if rate < 0.05 else "raise"
        warnings.warn(f"The {self.sampler_name} sampler accepted {rate:.1%} of its moves, outside 5%-99%, at model.step_size = "
                      f"{self.cfg.step_size}; {advice} model.step_size.", LvmkitWarning, stacklevel=3)

    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """The energy from ``model.eval_samples`` states of every chain (``split`` and ``k`` are
        not read): energy, energy_error (blocking), variance of E_L, acceptance, and the exact
        energy with the relative error where it is known."""
        cfg = self.cfg
        with torch.autocast(self.chains.device.type, enabled=False):
            d = self.draw(cfg.warmup if int(self.iterations) == 0 else cfg.burn_in, cfg.eval_samples)
            e_loc = self.local_energy(d.samples.reshape(-1, *self.input_shape))
        series = e_loc.view(cfg.chains, -1).cpu().numpy()
        if not np.all(np.isfinite(series)):
            raise DataError("The local energy is NaN or infinite on some evaluation samples; the run's weights are "
                            "unusable: resume from an earlier checkpoint or retrain with a lower train.lr.")
        b = blocking(series)
        out = {"energy": b.mean, "energy_error": b.error, "variance": float(series.var()), "acceptance": d.acceptance,
               "n_samples": int(series.size), "blocking_level": int(b.level)}
        exact = self.exact_energy()
        if exact is not None:
            out["exact_energy"] = exact
            out["relative_error"] = abs(b.mean - exact) / abs(exact) if exact else abs(b.mean)
        return out

    # -- capabilities -------------------------------------------------------------------------
    @torch.no_grad()
    def configurations(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` configurations from |psi|^2: chains started at the trained chains' states (cycled
        to ``n``), ``steps`` (default model.burn_in + model.thin) steps each."""
        start = self.chains[torch.arange(n, device=self.chains.device) % len(self.chains)]
        burn = self.cfg.burn_in if steps is None else max(steps - 1, 0)
        with torch.autocast(self.chains.device.type, enabled=False):
            d = draw(self.kernel, Density(self.wave), start, burn_in=burn, samples=1, thin=1, generator=generator)
        return d.last.float()

    def energy(self, x: Tensor) -> Tensor:
        """-2 ln psi(x), so that |psi(x)|^2 = exp(-energy); x (batch, *input_shape)."""
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise DataError(f"The wave function takes configurations of shape {tuple(self.input_shape)}, got examples "
                            f"of shape {tuple(x.shape[1:])}; pass configurations, e.g. from lvmkit sample.")
        with torch.autocast(x.device.type, enabled=False):
            return (-2.0 * self.wave.log_psi(x.to(torch.float64))).float()


def build_vmc(cfg: VMCConfig, input_shape: tuple[int, ...]) -> VMC:
    """The VMC model of ``cfg``; ``input_shape`` (the placeholder data's) is not read."""
    return VMC(cfg)


FAMILIES.register("vmc")(Family(
    config=VMCConfig, build=build_vmc, model_class=VMC,
    examples=(
        {"model": {"kind": "nqs", "system": "harmonic", "particles": 2, "dims": 2, "coulomb": True, "jastrow": True,
                   "hidden": 3, "chains": 16, "samples": 4, "warmup": 20, "step_size": 0.1}, "input_shape": (4,)},
        {"model": {"kind": "nqs", "system": "tfim", "sites": 6, "alpha": 1.0, "chains": 16, "samples": 3, "warmup": 6,
                   "sr": True}, "input_shape": (6,)},
    ),
))

__all__ = ["VMC", "VMCConfig", "build_vmc", "error_of_mean"]
