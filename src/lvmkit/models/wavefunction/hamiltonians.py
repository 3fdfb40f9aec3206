"""Hamiltonians of the VMC family, each giving the local energy of a wave function
(:mod:`.local_energy`) and, where one is known in closed form, its exact ground-state energy.

- :class:`HarmonicTrap`: P particles in a D-dimensional isotropic trap (atomic units),
  H = sum_i (-1/2 nabla_i^2 + 1/2 omega^2 r_i^2) [+ sum_{i<j} 1 / r_ij]. Without repulsion the
  ground state of bosons (or of two electrons in a spin singlet) has E = P D omega / 2; with it,
  two electrons at omega = 1 in 2-D have E = 3 exactly (Taut, J. Phys. A 27, 1045, 1994).
- :class:`TransverseIsing`: H = -J sum_i s^z_i s^z_{i+1} - h sum_i s^x_i on a periodic chain
  (Pauli matrices); exact by the free-fermion solution (Pfeuty 1970).
- :class:`Heisenberg`: H = J sum_i S_i . S_{i+1} (S = sigma / 2) on a periodic chain of even
  length, written after the Marshall sign rule (a rotation of every other spin), which makes
  the off-diagonal elements -J/2 and the ground state positive (Carleo & Troyer 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lvmkit.models.wavefunction.local_energy import LogPsi, LogRatios, flip_ratios, kinetic_energy


@dataclass(frozen=True)
class HarmonicTrap:
    """The trap (module docstring) of ``particles`` particles in ``dims`` dimensions;
    configurations (n, P D) particle-major."""

    particles: int
    dims: int
    omega: float = 1.0
    coulomb: bool = False

    def potential(self, x: Tensor) -> Tensor:
        v = 0.5 * self.omega**2 * (x**2).sum(-1)
        if self.coulomb and self.particles > 1:
            pos = x.view(x.shape[0], self.particles, self.dims)
            i, j = torch.triu_indices(self.particles, self.particles, 1, device=x.device)
            r = (pos[:, i] - pos[:, j]).pow(2).sum(-1).sqrt()
            v = v + (1.0 / r).sum(-1)
        return v

    def local_energy(self, log_psi: LogPsi, x: Tensor) -> Tensor:
        return kinetic_energy(log_psi, x) + self.potential(x.detach())

    def exact_energy(self) -> float | None:
        if not self.coulomb or self.particles == 1:
            return self.particles * self.dims * self.omega / 2
        if self.particles == 2 and self.dims == 2 and self.omega == 1.0:
            return 3.0  # Taut 1994
        if self.particles == 2 and self.dims == 3 and self.omega == 0.5:
            return 2.0  # Taut 1993
        return None


def _bond_masks(sites: int, device=None) -> Tensor:
    """(L, L) 0/1: row i flips sites i and i + 1 (periodic)."""
    m = torch.zeros(sites, sites, device=device)
    idx = torch.arange(sites, device=device)
    m[idx, idx] = 1.0
    m[idx, (idx + 1) % sites] = 1.0
    return m


@dataclass(frozen=True)
class TransverseIsing:
    """The transverse-field Ising chain (module docstring), ``sites`` spins, periodic."""

    sites: int
    field: float = 1.0
    coupling: float = 1.0

    @torch.no_grad()
    def local_energy(self, log_psi: LogPsi, s: Tensor, log_ratios: LogRatios | None = None) -> Tensor:
        diag = -self.coupling * (s * s.roll(-1, dims=1)).sum(-1)
        masks = torch.eye(self.sites, dtype=s.dtype, device=s.device)
        return diag - self.field * flip_ratios(log_psi, s, masks, log_ratios).sum(-1)

    def exact_energy(self) -> float | None:
        """E_0 = -sum_k sqrt(J^2 + h^2 - 2 J h cos k), k = (2n + 1) pi / L: the even-parity
        (antiperiodic fermion) sector, which holds the ground state of the ferromagnetic chain."""
        if self.coupling < 0:
            return None
        j, h = self.coupling, self.field
        return -sum(math.sqrt(j * j + h * h - 2 * j * h * math.cos((2 * n + 1) * math.pi / self.sites))
                    for n in range(self.sites))


@dataclass(frozen=True)
class Heisenberg:
    """The antiferromagnetic Heisenberg chain (module docstring), ``sites`` (even) spins."""

    sites: int
    coupling: float = 1.0

    @torch.no_grad()
    def local_energy(self, log_psi: LogPsi, s: Tensor, log_ratios: LogRatios | None = None) -> Tensor:
        aligned = s * s.roll(-1, dims=1)  # (n, L): +1 where bond (i, i+1) is parallel
        diag = 0.25 * self.coupling * aligned.sum(-1)
        masks = _bond_masks(self.sites, s.device).to(s.dtype)
        # S^+ S^- + S^- S^+ exchanges an antiparallel pair with amplitude J/2; Marshall: -J/2
        off = -0.5 * self.coupling * (aligned < 0).to(s.dtype)
        return diag + (off * flip_ratios(log_psi, s, masks, log_ratios)).sum(-1)

    def exact_energy(self) -> float | None:
        return None  # no closed form at finite L: benchmarks/vmc_spins.py diagonalises


__all__ = ["Heisenberg", "HarmonicTrap", "TransverseIsing"]
