"""The Gaussian-binary RBM as a trial wave function over particle coordinates, with an optional
Pade-Jastrow factor for the electron-electron cusp.

The ML lectures (seed 001, "Gaussian-binary RBM") give the energy
E(X, h) = sum_i (X_i - a_i)^2 / 2 sigma^2 - sum_j b_j h_j - sum_ij X_i w_ij h_j / sigma^2; summing
out the binary hidden units leaves the marginal

    F(X) = exp(-sum_i (X_i - a_i)^2 / 2 sigma^2) prod_j (1 + exp(b_j + sum_i X_i w_ij / sigma^2)),

which the Oslo computational-physics course takes as psi(X) = F(X) (``square_root = False``), or
as psi(X) = sqrt(F(X)) so that |psi|^2 = F is the RBM's own marginal and block Gibbs sampling
(h ~ p(h | X), X ~ N(a + W h, sigma^2)) draws from it exactly. X holds the M = P D coordinates
particle-major: (x_1, y_1, x_2, y_2, ...). All arithmetic is in float64 (the parameters are
stored in float32, as every lvmkit model's are).

The Pade-Jastrow factor exp(sum_{i<j} c r_ij / (1 + beta r_ij)) has the cusp value
c = 1 / (D - 1) of two electrons of opposite spin (Kato's cusp condition in D >= 2 dimensions);
beta > 0 is learned (stored as log beta).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PadeJastrow(nn.Module):
    """log J(X) = sum_{i<j} c r_ij / (1 + beta r_ij) over the pairs of ``particles`` particles in
    ``dims`` dimensions; c = 1 / (dims - 1), beta = exp(log_beta) learned."""

    def __init__(self, particles: int, dims: int, beta: float = 1.0) -> None:
        super().__init__()
        self.particles, self.dims = particles, dims
        self.cusp = 1.0 / (dims - 1)
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta)))
        i, j = torch.triu_indices(particles, particles, 1)
        self.register_buffer("_pairs", torch.stack([i, j]), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """log J per configuration: x (n, P D) -> (n,)."""
        pos = x.view(x.shape[0], self.particles, self.dims)
        d = pos[:, self._pairs[0]] - pos[:, self._pairs[1]]  # (n, pairs, D)
        r = d.pow(2).sum(-1).sqrt()
        beta = self.log_beta.to(x.dtype).exp()
        return (self.cusp * r / (1.0 + beta * r)).sum(-1)


class GaussianBinaryWave(nn.Module):
    """psi(X) = F(X) or sqrt(F(X)) (module docstring), times an optional :class:`PadeJastrow`.

    Args:
        particles, dims: P particles in D dimensions (M = P D visible units).
        hidden: binary hidden units N.
        sigma: the Gaussian width (fixed; sigma^2 = 1 / omega makes the trap's ground state
            exact at a = 0, W = 0).
        square_root: psi = sqrt(F) instead of F.
        jastrow: multiply by a Pade-Jastrow factor.
        init_scale: standard deviation of the random initial a, b and W.
    """

    continuous = True

    def __init__(self, particles: int, dims: int, hidden: int, sigma: float, *, square_root: bool = False,
                 jastrow: bool = False, init_scale: float = 0.1) -> None:
        super().__init__()
        m = particles * dims
        self.particles, self.dims, self.hidden, self.sigma = particles, dims, hidden, float(sigma)
        self.square_root = square_root
        self.a = nn.Parameter(init_scale * torch.randn(m))
        self.b = nn.Parameter(init_scale * torch.randn(hidden))
        self.w = nn.Parameter(init_scale * torch.randn(m, hidden))
        self.jastrow = PadeJastrow(particles, dims) if jastrow else None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.particles * self.dims,)

    def _theta(self, x: Tensor) -> Tensor:
        return self.b.to(x.dtype) + x @ self.w.to(x.dtype) / self.sigma**2  # (n, N)

    def log_f(self, x: Tensor) -> Tensor:
        """log F(X), the Gaussian-binary RBM's unnormalised marginal: (n, M) -> (n,)."""
        gauss = -((x - self.a.to(x.dtype)) ** 2).sum(-1) / (2 * self.sigma**2)
        return gauss + F.softplus(self._theta(x)).sum(-1)

    def log_psi(self, x: Tensor) -> Tensor:
        """log psi(X) (psi > 0): (n, M) -> (n,)."""
        out = self.log_f(x)
        if self.square_root:
            out = 0.5 * out
        if self.jastrow is not None:
            out = out + self.jastrow(x)
        return out

    def forward(self, x: Tensor) -> Tensor:  # torch.func.functional_call calls forward
        return self.log_psi(x)

    # -- block Gibbs on |psi|^2 = F (square_root, no Jastrow): the RBM's conditionals ------------
    def sample_h(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = torch.sigmoid(self._theta(x))
        return (torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) < p).to(p.dtype)

    def sample_x(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.a.to(h.dtype) + h @ self.w.to(h.dtype).T
        return mean + self.sigma * torch.randn(mean.shape, generator=generator, dtype=h.dtype, device=h.device)


__all__ = ["GaussianBinaryWave", "PadeJastrow"]
