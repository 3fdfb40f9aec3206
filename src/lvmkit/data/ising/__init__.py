"""The 2-D Ising model: simulate configurations, measure thermodynamics with errors, enumerate
small lattices exactly, read the files as a data set.

::

    from lvmkit.data import ising
    path = ising.simulate(8, [1.5, 2.269, 3.0], 1000, "sim/", progress=True)   # sim/ising_L8.h5
    rows = ising.read_observables(path)        # per temperature: energy, |M|, C, chi, U, errors, tau
    ising.measure(spins, 2.269)                # the same estimators for any +-1 samples
    ising.exact(4, [2.0, 2.5])                 # exact values of the 4 x 4 lattice (2^16 states)

``data.name = "ising"`` with ``data.path = "sim/ising_L8.h5"`` trains on the configurations.
"""
from lvmkit.data.ising import source as _source  # noqa: F401  (registers data.name = "ising")
from lvmkit.data.ising.exact import MAX_SIZE, boltzmann_weights, enumerate_states, exact, state_index
from lvmkit.data.ising.observables import QUANTITIES, T_C, check_spins, energy_magnetization, measure, thermodynamics
from lvmkit.data.ising.simulate import (UPDATE_CHOICES, UPDATES, Metropolis, TemperatureRun, Update, Wolff, choose_update,
                                        read_observables, read_settings, simulate, simulate_temperature, sublattices)
from lvmkit.data.ising.source import read_ising, write_ising

__all__ = [
    "MAX_SIZE", "QUANTITIES", "T_C", "UPDATES", "UPDATE_CHOICES", "Metropolis", "TemperatureRun", "Update", "Wolff",
    "boltzmann_weights", "check_spins", "choose_update", "energy_magnetization", "enumerate_states", "exact", "measure",
    "read_ising", "read_observables", "read_settings", "simulate", "simulate_temperature", "state_index", "sublattices",
    "thermodynamics", "write_ising",
]
