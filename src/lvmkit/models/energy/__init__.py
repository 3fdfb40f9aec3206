"""Energy models: restricted Boltzmann machines and their mathematics (:mod:`.boltzmann`: free
energies, exact and AIS partition functions), deep belief networks, and energy networks trained
with Langevin chains. Their chains come from the shared kernels of :mod:`lvmkit.models.mcmc`."""
from lvmkit.models.energy.ebm import EBM, EBMConfig
from lvmkit.models.energy.rbm import DBN, RBM, DBNConfig, RBMConfig

__all__ = ["DBN", "DBNConfig", "EBM", "EBMConfig", "RBM", "RBMConfig"]
