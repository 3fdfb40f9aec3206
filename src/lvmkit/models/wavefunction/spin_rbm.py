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
    # x + log(1 + e^-2x) in one kernel; softplus is linear past its threshold, where log1p(e^-40) < 1e-17
    return x + nn.functional.softplus(-2.0 * x, threshold=40.0)


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

    def theta(self, s: Tensor) -> Tensor:
        """The hidden units' fields theta_j = b_j + sum_i W_ij s_i: spins (n, L) -> (n, H)."""
        return self.b.to(s.dtype) + s @ self.w.to(s.dtype)

    def log_psi(self, s: Tensor) -> Tensor:
        """log psi(s): spins (n, L) of +-1 -> (n,)."""
        return s @ self.a.to(s.dtype) + log_2cosh(self.theta(s)).sum(-1)

    @torch.no_grad()
    def log_grads(self, s: Tensor) -> Tensor:
        """O (n, P) = d log psi / d (a, b, W) in ``parameters()`` order, in closed form (Carleo &
        Troyer 2017): O_a = s_i, O_b = tanh(theta_j), O_W = s_i tanh(theta_j); float64."""
        s = s.detach().to(torch.float64)
        t = torch.tanh(self.theta(s))
        return torch.cat([s, t, (s[:, :, None] * t[:, None, :]).reshape(len(s), -1)], 1)

    @torch.no_grad()
    def log_ratios(self, s: Tensor, masks: Tensor) -> Tensor:
        """log psi(s^(k)) - log psi(s) for s^(k) = s with the sites of ``masks[k]`` flipped, from
        theta alone: flipping the sites F moves theta to theta - 2 sum_{i in F} s_i W_i, so the
        difference is -2 sum_{i in F} a_i s_i + sum_j [log 2cosh(theta'_j) - log 2cosh(theta_j)].
        Spins (n, L), masks (K, L) of 0/1 -> (n, K)."""
        a, w = self.a.to(s.dtype), self.w.to(s.dtype)
        theta = self.theta(s)  # (n, H)
        counts = masks.sum(1)
        if bool((counts == counts[0]).all()) and 0 < int(counts[0]) <= 2:  # one or two sites each (the chains' H)
            sites = masks.nonzero()[:, 1].view(len(masks), -1)  # (K, r)
            ss = s[:, sites]  # (n, K, r): the spins before the flip
            shifted = torch.addcmul(theta[:, None, :], ss[..., 0, None], -2.0 * w[sites[:, 0]])  # (n, K, H)
            da = ss[..., 0] * a[sites[:, 0]]
            if sites.shape[1] == 2:
                shifted.addcmul_(ss[..., 1, None], -2.0 * w[sites[:, 1]])
                da = da + ss[..., 1] * a[sites[:, 1]]
        else:
            sm = s[:, None, :] * masks.to(s.dtype)[None]  # (n, K, L)
            shifted, da = theta[:, None, :] - 2.0 * (sm @ w), sm @ a
        return log_2cosh(shifted).sum(-1) - log_2cosh(theta).sum(-1, keepdim=True) - 2.0 * da

    def forward(self, x: Tensor) -> Tensor:  # torch.func.functional_call calls forward
        return self.log_psi(x)


__all__ = ["SpinRBMWave", "log_2cosh"]
