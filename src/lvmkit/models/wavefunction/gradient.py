"""The variational energy's gradient and the stochastic-reconfiguration direction from samples
of |psi|^2 (real, positive psi).

With O_k(x) = d ln psi(x) / d theta_k and E_L the local energy,

    dE/dtheta_k = 2 ( <E_L O_k> - <E_L> <O_k> )                      (the course's gradient)

and stochastic reconfiguration (Sorella 1998; the natural gradient in the Fubini-Study metric)
steps along S^-1 f, with S_kl = <O_k O_l> - <O_k><O_l> (the quantum geometric tensor, the
Fisher information of |psi|^2 up to a factor 4) and f_k = <E_L O_k> - <E_L><O_k>, after a
diagonal shift S + lambda I that keeps the solve stable with finitely many samples.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def per_sample_log_grads(wave: nn.Module, x: Tensor) -> Tensor:
    """O (n, P): d ln psi(x_i) / d theta for every sample (rows) and every trainable parameter
    of ``wave`` (columns, in ``wave.parameters()`` order), in float64, by ``torch.func``."""
    names = [n for n, p in wave.named_parameters() if p.requires_grad]
    params = {n: p.detach().to(torch.float64) for n, p in wave.named_parameters() if p.requires_grad}

    def one(ps, xi):
        return torch.func.functional_call(wave, ps, (xi[None],)).squeeze(0)

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(params, x.detach().to(torch.float64))
    return torch.cat([grads[n].reshape(x.shape[0], -1) for n in names], 1)


def energy_gradient(o: Tensor, e_loc: Tensor) -> Tensor:
    """2 (<E_L O> - <E_L><O>): the gradient of the variational energy (P,)."""
    return 2.0 * ((e_loc[:, None] * o).mean(0) - e_loc.mean() * o.mean(0))


def sr_direction(o: Tensor, e_loc: Tensor, shift: float) -> Tensor:
    """(S + shift I)^-1 f (P,): the stochastic-reconfiguration step (module docstring); with
    ``shift`` = 0, the least-squares solution (S may be singular)."""
    n = o.shape[0]
    oc = o - o.mean(0)
    f = oc.T @ (e_loc - e_loc.mean()) / n
    if shift <= 0:
        return torch.linalg.lstsq(oc.T @ oc / n, f[:, None]).solution[:, 0]
    # S + shift I is symmetric positive definite: Cholesky, which reads only the lower triangle,
    # so only the blocks of S on and below the diagonal are formed (~(k + 1) / 2k of the products)
    s = _lower_gram(oc).div_(n)
    s.diagonal().add_(shift)
    chol, info = torch.linalg.cholesky_ex(s)
    if int(info) == 0:
        y = torch.linalg.solve_triangular(chol, f[:, None], upper=False)  # L y = f, then L^T x = y
        return torch.linalg.solve_triangular(chol.T, y, upper=True)[:, 0]
    full = s.tril() + s.tril(-1).T  # positive definite only up to rounding: the general solve
    return torch.linalg.solve(full, f)


def _lower_gram(oc: Tensor, blocks: int = 8) -> Tensor:
    """The lower triangle, block by block, of oc^T oc (P, P); above the diagonal blocks: zeros."""
    p = oc.shape[1]
    edges = [round(p * k / blocks) for k in range(blocks + 1)]
    out = oc.new_zeros(p, p)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            torch.matmul(oc[:, lo:hi].T, oc[:, :hi], out=out[lo:hi, :hi])
    return out


def linear_surrogate(params: list[nn.Parameter], direction: Tensor) -> Tensor:
    """sum_k theta_k d_k: a scalar whose gradient by the parameters is ``direction`` (P,), so an
    optimizer steps along a direction computed outside autograd (SR)."""
    out = torch.zeros((), dtype=torch.float32, device=direction.device)
    start = 0
    for p in params:
        d = direction[start:start + p.numel()].view_as(p).to(p.dtype)
        out = out + (p * d).sum()
        start += p.numel()
    return out


__all__ = ["energy_gradient", "linear_surrogate", "per_sample_log_grads", "sr_direction"]
