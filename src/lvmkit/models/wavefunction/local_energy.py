"""The local energy E_L(X) = (H psi)(X) / psi(X) of a trial wave function, whose average over
|psi|^2 is the variational energy <psi|H|psi> / <psi|psi> >= E_0.

Coordinates: H = sum_k -1/2 d^2/dX_k^2 + V(X) gives

    E_L = -1/2 sum_k [ d^2 ln psi / dX_k^2 + (d ln psi / dX_k)^2 ] + V(X),

with the gradient and the exact Laplacian of ln psi by autograd (reverse over reverse, one
backward pass per coordinate: M = P D <= a few dozen here, so no Hutchinson estimate is needed).

Spins: H = diag(s) + sum_k h_k(s) |s^(k)><s| over the configurations s^(k) that H connects to s
(spin flips), so E_L(s) = diag(s) + sum_k h_k(s) psi(s^(k)) / psi(s).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

LogPsi = Callable[[Tensor], Tensor]  # (n, *shape) -> (n,)


def log_psi_derivatives(log_psi: LogPsi, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """ln psi (n,), its gradient (n, M) and its Laplacian (n,) at coordinates ``x`` (n, M).

    Exact: the Laplacian is the trace of the Hessian, one backward pass per coordinate through
    the gradient's graph. ``create_graph``: keep the graph to differentiate the results again
    (by the parameters); otherwise they are detached.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = log_psi(x)
        (grad,) = torch.autograd.grad(lp.sum(), x, create_graph=True)
        lap = torch.zeros_like(lp)
        for k in range(x.shape[1]):
            (second,) = torch.autograd.grad(grad[:, k].sum(), x, create_graph=create_graph, retain_graph=True)
            lap = lap + second[:, k]
    if not create_graph:
        return lp.detach(), grad.detach(), lap.detach()
    return lp, grad, lap


def kinetic_energy(log_psi: LogPsi, x: Tensor) -> Tensor:
    """-1/2 (nabla^2 psi) / psi = -1/2 sum_k [ d^2 ln psi + (d ln psi)^2 ] per configuration (n,)."""
    _, grad, lap = log_psi_derivatives(log_psi, x)
    return -0.5 * (lap + (grad**2).sum(-1))


LogRatios = Callable[[Tensor, Tensor], Tensor]  # spins (n, L), masks (K, L) -> (n, K)


def flip_ratios(log_psi: LogPsi, s: Tensor, masks: Tensor, log_ratios: LogRatios | None = None) -> Tensor:
    """psi(s^(k)) / psi(s) for the configurations s^(k) = s with the sites of ``masks[k]``
    flipped: spins (n, L), masks (K, L) of 0/1 -> (n, K). ``log_ratios``: the wave function's
    own log psi(s^(k)) - log psi(s) (a closed form, e.g. :meth:`SpinRBMWave.log_ratios`);
    None: ``log_psi`` of every flipped configuration."""
    if log_ratios is not None:
        return torch.exp(log_ratios(s, masks))
    n, length = s.shape
    flipped = s[:, None, :] * (1.0 - 2.0 * masks.to(s.dtype))[None]  # (n, K, L)
    lp = log_psi(flipped.reshape(-1, length)).view(n, -1)
    return torch.exp(lp - log_psi(s)[:, None])


__all__ = ["LogRatios", "flip_ratios", "kinetic_energy", "log_psi_derivatives"]
