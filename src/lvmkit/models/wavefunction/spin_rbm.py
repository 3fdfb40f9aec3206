"""The RBM wave function of spins of Carleo & Troyer (Science 355, 602, 2017, eq. 2), with real
parameters (enough for the transverse-field Ising chain and, after the Marshall sign rule,
the Heisenberg chain, whose ground states are positive):

    psi(s) = exp(sum_i a_i s_i) prod_j 2 cosh(b_j + sum_i W_ij s_i),    s_i = +-1,

the binary-binary RBM with hidden units +-1 summed out. ``alpha`` = hidden units per spin.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def log_2cosh(x: Tensor) -> Tensor:
    """log(2 cosh x), stable for large |x|."""
    ax = x.abs()
    return ax + torch.log1p(torch.exp(-2.0 * ax))


class SpinRBMWave(nn.Module):
    """Carleo & Troyer's RBM (module docstring) on ``sites`` spins with ``hidden`` hidden units;
    a, b and W start as N(0, init_scale^2) (their 0.01)."""

    continuous = False

    def __init__(self, sites: int, hidden: int, init_scale: float = 0.01) -> None:
        super().__init__()
        self.sites, self.hidden = sites, hidden
        self.a = nn.Parameter(init_scale * torch.randn(sites))
        self.b = nn.Parameter(init_scale * torch.randn(hidden))
        self.w = nn.Parameter(init_scale * torch.randn(sites, hidden))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.sites,)

    def log_psi(self, s: Tensor) -> Tensor:
        """log psi(s): spins (n, L) of +-1 -> (n,)."""
        theta = self.b.to(s.dtype) + s @ self.w.to(s.dtype)
        return s @ self.a.to(s.dtype) + log_2cosh(theta).sum(-1)

    def forward(self, x: Tensor) -> Tensor:  # torch.func.functional_call calls forward
        return self.log_psi(x)


__all__ = ["SpinRBMWave", "log_2cosh"]
