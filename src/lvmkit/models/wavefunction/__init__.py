"""Boltzmann machines as trial wave functions: variational Monte Carlo (family ``vmc``).

One concept per module: the Gaussian-binary RBM over coordinates with its Pade-Jastrow factor
(:mod:`.gaussian_rbm`), Carleo & Troyer's RBM of spins (:mod:`.spin_rbm`), the Hamiltonians
(:mod:`.hamiltonians`), the local energy (:mod:`.local_energy`), chains on |psi|^2 from the
shared kernels of :mod:`lvmkit.models.mcmc` (:mod:`.samplers`), the energy gradient and
stochastic reconfiguration (:mod:`.gradient`), and the family itself (:mod:`.vmc`).
"""
from lvmkit.models.wavefunction.config import VMCConfig
from lvmkit.models.wavefunction.gaussian_rbm import GaussianBinaryWave, PadeJastrow
from lvmkit.models.wavefunction.gradient import energy_gradient, linear_surrogate, per_sample_log_grads, sr_direction
from lvmkit.models.wavefunction.hamiltonians import HarmonicTrap, Heisenberg, TransverseIsing
from lvmkit.models.wavefunction.local_energy import flip_ratios, kinetic_energy, log_psi_derivatives
from lvmkit.models.wavefunction.samplers import Density, Exchange, SpinFlip, draw, make_kernel
from lvmkit.models.wavefunction.spin_rbm import SpinRBMWave, log_2cosh
from lvmkit.models.wavefunction.vmc import VMC, build_vmc

__all__ = ["Density", "Exchange", "GaussianBinaryWave", "HarmonicTrap", "Heisenberg", "PadeJastrow", "SpinFlip",
           "SpinRBMWave", "TransverseIsing", "VMC", "VMCConfig", "build_vmc", "draw", "energy_gradient", "flip_ratios",
           "kinetic_energy", "linear_surrogate", "log_2cosh", "log_psi_derivatives", "make_kernel", "per_sample_log_grads",
           "sr_direction"]
