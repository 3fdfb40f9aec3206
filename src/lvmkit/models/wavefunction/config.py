"""``[model]`` of the vmc family: the system, the trial wave function, the sampler, the optimisation."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from lvmkit.core.config import ModelConfig
from lvmkit.core.errors import ConfigError

#: the samplers (samplers.VMC_KERNELS) that move particle coordinates, and those that move spins
CONTINUOUS_SAMPLERS = ("langevin", "metropolis", "gibbs")
SPIN_SAMPLERS = ("flip", "exchange")

_TRAP_KEYS = ("particles", "dims", "omega", "coulomb", "statistics", "hidden", "sigma", "square_root", "jastrow")
_SPIN_KEYS = ("sites", "field", "coupling", "alpha")


class VMCConfig(ModelConfig):
    """``[model]`` of the vmc family.

    ``system``: "harmonic" (particles in a trap; keys particles, dims, omega, coulomb,
    statistics, hidden, sigma, square_root, jastrow), "tfim" or "heisenberg" (periodic spin
    chains; keys sites, field (TFIM's h), coupling (J), alpha). An iteration draws ``samples``
    states from each of ``chains`` chains, ``thin`` steps apart, after ``burn_in`` steps
    (``warmup`` before the first iteration), then takes one optimizer step.
    """

    kind: str = "nqs"  # a neural-network quantum state
    system: Literal["harmonic", "tfim", "heisenberg"] = "harmonic"
    # particles in a harmonic trap
    particles: int = Field(1, gt=0)
    dims: int = Field(1, ge=1, le=3)
    omega: float = 1.0
    coulomb: bool = False
    statistics: Literal["fermions", "bosons"] = "fermions"
    hidden: int = Field(2, ge=0)
    sigma: Optional[float] = Field(None, gt=0.0)  # None: 1 / sqrt(omega)
    square_root: bool = False  # psi = sqrt(F): |psi|^2 is the RBM's marginal (Gibbs)
    jastrow: bool = False  # the Pade-Jastrow factor
    # spin chains
    sites: int = Field(20, ge=2)
    field: float = 1.0
    coupling: float = 1.0
    alpha: float = Field(2.0, gt=0.0)  # hidden units per spin
    init_scale: Optional[float] = Field(None, gt=0.0)  # None: 0.1 (trap), 0.01 (spins)
    # sampling
    sampler: Optional[Literal["langevin", "metropolis", "gibbs", "flip", "exchange"]] = None
    step_size: float = Field(0.5, gt=0.0)  # metropolis: move scale; langevin: the time step dt
    chains: int = Field(100, gt=0)
    samples: int = Field(10, gt=0)
    thin: Optional[int] = Field(None, gt=0)  # None: 1 (trap), sites (spins: one sweep)
    burn_in: int = Field(5, ge=0)
    warmup: int = Field(200, ge=0)
    # optimisation: the plain gradient, or stochastic reconfiguration with a diagonal shift
    sr: bool = False
    sr_shift: float = Field(0.01, ge=0.0)
    eval_samples: int = Field(200, gt=0)  # per chain, for lvmkit evaluate

    @model_validator(mode="after")
    def _check(self) -> "VMCConfig":
        trap = self.system == "harmonic"
        # a stored config.toml lists every key with its value: only a changed value is foreign
        fields = type(self).model_fields
        alien = [k for k in (_SPIN_KEYS if trap else _TRAP_KEYS)
                 if k in self.model_fields_set and getattr(self, k) != fields[k].default]
        if alien:
            own = _TRAP_KEYS if trap else _SPIN_KEYS
            raise ConfigError(f"model.{', model.'.join(alien)} {'does' if len(alien) == 1 else 'do'} not apply to "
                              f"model.system = {self.system!r}; its keys are {', '.join(own)}.")
        if trap:
            if not self.omega > 0:
                raise ConfigError(f"model.omega is the trap frequency and must be positive, got {self.omega}; set e.g. "
                                  "model.omega = 1.")
            if self.statistics == "fermions" and self.particles > 2:
                raise ConfigError(f"model.particles = {self.particles} electrons need an antisymmetric wave function, but this "
                                  "RBM ansatz is symmetric in the particles (right for two electrons in a spin singlet); use "
                                  "at most 2 electrons, or model.statistics = 'bosons'.")
            if self.coulomb and self.dims == 1 and self.particles > 1:
                raise ConfigError("model.coulomb in 1-D makes 1/|x| non-integrable at contact; use model.dims = 2 or 3.")
            if self.jastrow and self.dims == 1:
                raise ConfigError("model.jastrow's cusp factor 1/(D - 1) needs model.dims >= 2; turn model.jastrow off in 1-D.")
            sampler = self.sampler or "langevin"
            if sampler not in CONTINUOUS_SAMPLERS:
                raise ConfigError(f"model.sampler = {sampler!r} moves spins; particles in a trap take 'langevin', "
                                  "'metropolis' or 'gibbs'.")
            if sampler == "gibbs" and (not self.square_root or self.jastrow):
                raise ConfigError("model.sampler = 'gibbs' samples the RBM's own marginal, which is |psi|^2 only for "
                                  "psi = sqrt(F) without a Jastrow factor; set model.square_root = true and model.jastrow = "
                                  "false, or use model.sampler = 'langevin'.")
        else:
            sampler = self.sampler or ("exchange" if self.system == "heisenberg" else "flip")
            if sampler not in SPIN_SAMPLERS:
                raise ConfigError(f"model.sampler = {sampler!r} moves coordinates; spin chains take 'flip' or 'exchange'.")
            if self.system == "heisenberg" and self.sites % 2:
                raise ConfigError(f"The Heisenberg chain's Marshall sign rule needs an even number of sites, got "
                                  f"model.sites = {self.sites}; use an even number.")
            if sampler == "exchange" and self.system == "tfim":
                raise ConfigError("model.sampler = 'exchange' keeps the number of up spins, but the transverse field "
                                  "changes it; use model.sampler = 'flip' for the TFIM.")
        return self

    @property
    def chosen_sampler(self) -> str:
        if self.sampler is not None:
            return self.sampler
        return {"harmonic": "langevin", "tfim": "flip", "heisenberg": "exchange"}[self.system]


__all__ = ["VMCConfig"]
