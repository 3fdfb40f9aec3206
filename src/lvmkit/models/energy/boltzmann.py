"""Restricted Boltzmann machines: energies, free energies, conditionals and partition functions.

The energies of the lecture notes (seed 001, "Defining different types of RBMs"), with visible
x (M units), hidden h in {0, 1}^N, weights W (M, N), biases a (M), b (N):

- binary-binary:   E(x, h) = -a.x - b.h - x.W.h
- Gaussian-binary: E(x, h) = sum_i (x_i - a_i)^2 / (2 s_i^2) - b.h - sum_ij x_i W_ij h_j / s_i^2

Free energies F(x) = -log sum_h exp(-E(x, h)) (closed form, hidden units summed out):

- binary:   F(x) = -a.x - sum_j softplus(b_j + (x W)_j)
- Gaussian: F(x) = sum_i (x_i - a_i)^2 / (2 s_i^2) - sum_j softplus(b_j + (x/s^2 W)_j)

Conditionals: p(h_j = 1 | x) = sigmoid(b_j + (x W)_j) (x / s^2 for Gaussian units);
p(x_i = 1 | h) = sigmoid(a_i + (W h)_i), or x_i | h ~ N(a_i + (W h)_i, s_i^2).

log Z exactly by enumerating the hidden layer (or, for binary units, whichever layer is
smaller) and by annealed importance sampling (Salakhutdinov & Murray 2008).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvmkit.core.errors import ConfigError

#: the most units :func:`exact_log_z` enumerates (2^20 states, in chunks)
EXACT_LIMIT = 20


class RBMEnergy(nn.Module):
    """The parameters of an RBM and the closed forms built on them. ``visible`` is "binary" or
    "gaussian"; Gaussian units have standard deviations exp(log_sigma), fixed at 1 unless learned."""

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "binary", learn_sigma: bool = False,
                 init_scale: float = 0.01) -> None:
        super().__init__()
        if visible not in ("binary", "gaussian"):
            raise ConfigError(f"Unknown visible unit type {visible!r}; choose 'binary' or 'gaussian'.")
        self.visible, self.n_visible, self.n_hidden = visible, n_visible, n_hidden
        self.W = nn.Parameter(init_scale * torch.randn(n_visible, n_hidden))
        self.a = nn.Parameter(torch.zeros(n_visible))
        self.b = nn.Parameter(torch.zeros(n_hidden))
        self.log_sigma = nn.Parameter(torch.zeros(n_visible), requires_grad=learn_sigma and visible == "gaussian")

    @property
    def gaussian(self) -> bool:
        return self.visible == "gaussian"

    def _var(self) -> Tensor:
        return torch.exp(2 * self.log_sigma)

    def hidden_input(self, x: Tensor) -> Tensor:
        """b + (x W) (binary) or b + (x / s^2) W (Gaussian): the hidden units' total input."""
        return self.b + (x / self._var() if self.gaussian else x) @ self.W

    def energy(self, x: Tensor, h: Tensor) -> Tensor:
        """E(x, h) per row."""
        if self.gaussian:
            return ((x - self.a) ** 2 / (2 * self._var())).sum(-1) - h @ self.b - ((x / self._var()) @ self.W * h).sum(-1)
        return -(x @ self.a) - h @ self.b - ((x @ self.W) * h).sum(-1)

    def free_energy(self, x: Tensor, hidden_input: Tensor | None = None) -> Tensor:
        """F(x) = -log sum_h exp(-E(x, h)) per row (closed form). ``hidden_input``: the rows'
        :meth:`hidden_input` when the caller has already formed it (saves the product x W)."""
        visible = ((x - self.a) ** 2 / (2 * self._var())).sum(-1) if self.gaussian else -(x @ self.a)
        return visible - F.softplus(self.hidden_input(x) if hidden_input is None else hidden_input).sum(-1)

    def p_h(self, x: Tensor) -> Tensor:
        """p(h = 1 | x), (batch, N)."""
        return torch.sigmoid(self.hidden_input(x))

    def visible_mean(self, h: Tensor) -> Tensor:
        """E[x | h]: sigmoid(a + W h) (binary) or a + W h (Gaussian)."""
        pre = self.a + h @ self.W.t()
        return pre if self.gaussian else torch.sigmoid(pre)

    def sample_h(self, x: Tensor, generator: torch.Generator | None = None, hidden_input: Tensor | None = None) -> Tensor:
        """h ~ p(h | x); ``hidden_input`` as in :meth:`free_energy`."""
        p = self.p_h(x) if hidden_input is None else torch.sigmoid(hidden_input)
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)

    def sample_x(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.visible_mean(h)
        if self.gaussian:
            return mean + torch.exp(self.log_sigma) * torch.randn(mean.shape, generator=generator, device=mean.device)
        return (torch.rand(mean.shape, generator=generator, device=mean.device) < mean).to(mean.dtype)


def _states(n: int, start: int, stop: int, device, dtype) -> Tensor:
    """Rows start..stop-1 of all 2^n binary vectors (bit i of the row index is unit i)."""
    idx = torch.arange(start, stop, device=device)
    return ((idx[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


@torch.no_grad()
def exact_log_z(rbm: RBMEnergy, chunk: int = 1 << 16) -> float:
    """log Z by enumeration of the smaller layer (the hidden one for Gaussian visible units),
    summed in chunks in float64. Raises ConfigError beyond :data:`EXACT_LIMIT` units."""
    W, a, b = rbm.W.double(), rbm.a.double(), rbm.b.double()
    use_hidden = rbm.gaussian or rbm.n_hidden <= rbm.n_visible
    n = rbm.n_hidden if use_hidden else rbm.n_visible
    if n > EXACT_LIMIT:
        raise ConfigError(f"Exact log Z enumerates 2^{n} states of the smaller layer, beyond the limit of 2^{EXACT_LIMIT}; "
                          "use annealed importance sampling (eval.log_z = 'ais').")
    parts = []
    for start in range(0, 1 << n, chunk):
        s = _states(n, start, min(start + chunk, 1 << n), W.device, W.dtype)
        if not use_hidden:  # binary: -F(x) for every x
            parts.append(torch.logsumexp(s @ a + F.softplus(b + s @ W).sum(-1), 0))
        elif rbm.gaussian:  # sum_h exp(b.h + sum_i ((a_i + (W h)_i)^2 - a_i^2) / (2 s_i^2)) x prod sqrt(2 pi s_i^2)
            var = torch.exp(2 * rbm.log_sigma.double())
            mu = a + s @ W.t()
            parts.append(torch.logsumexp(s @ b + ((mu**2 - a**2) / (2 * var)).sum(-1), 0))
        else:  # binary, hidden enumerated: sum_h exp(b.h) prod_i (1 + exp(a_i + (W h)_i))
            parts.append(torch.logsumexp(s @ b + F.softplus(a + s @ W.t()).sum(-1), 0))
    log_z = float(torch.logsumexp(torch.stack(parts), 0))
    if rbm.gaussian:
        log_z += float(0.5 * torch.log(2 * math.pi * torch.exp(2 * rbm.log_sigma.double())).sum())
    return log_z


@dataclass
class AISResult:
    """log Z estimate and the Salakhutdinov & Murray bounds log(mean w +- 3 std(w) / sqrt(M))."""

    log_z: float
    lower: float
    upper: float
    runs: int
    temperatures: int
    seconds: float


@torch.no_grad()
def ais_log_z(rbm: RBMEnergy, base_visible: Tensor, runs: int = 100, temperatures: int = 14500,
              generator: torch.Generator | None = None) -> AISResult:
    """Annealed importance sampling from a base RBM with no weights and visible biases
    ``base_visible`` (log-odds of the data's base rates for binary units, the data's means for
    Gaussian units, same sigma) to ``rbm`` along p_beta*(x) = exp(-(1 - beta) F_A(x) - beta F_B(x)),
    beta = 0 .. 1 on ``temperatures`` evenly spaced points, with one Gibbs transition per
    temperature (Salakhutdinov & Murray 2008, sec. 4.1)."""
    import time

    if temperatures < 2:
        raise ConfigError(f"AIS needs at least 2 temperatures, got {temperatures}; the default is 14500.")
    if runs < 2:
        raise ConfigError(f"AIS needs at least 2 runs for its bounds, got {runs}; the default is 100.")
    t0 = time.perf_counter()
    W, b, aB = rbm.W.double(), rbm.b.double(), rbm.a.double()
    aA = base_visible.double().to(W.device)
    var = torch.exp(2 * rbm.log_sigma.double())
    dev = W.device

    def log_p(x: Tensor, pre: Tensor, beta: float) -> Tensor:  # log p_beta*(x), hidden units summed out
        if rbm.gaussian:
            vis = -((1 - beta) * (x - aA) ** 2 + beta * (x - aB) ** 2) / (2 * var)
            return vis.sum(-1) + F.softplus(beta * pre).sum(-1)
        return (1 - beta) * (x @ aA) + beta * (x @ aB) + F.softplus(beta * pre).sum(-1)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=dev, dtype=torch.float64)

    if rbm.gaussian:
        sd = torch.exp(rbm.log_sigma.double())
        x = aA + sd * torch.randn(runs, rbm.n_visible, generator=generator, device=dev, dtype=torch.float64)
        log_za = float(0.5 * torch.log(2 * math.pi * var).sum()) + rbm.n_hidden * math.log(2)
    else:
        x = (rand(runs, rbm.n_visible) < torch.sigmoid(aA)).double()
        log_za = float(F.softplus(aA).sum()) + rbm.n_hidden * math.log(2)
    betas = torch.linspace(0.0, 1.0, temperatures).tolist()
    log_w = torch.zeros(runs, dtype=torch.float64, device=dev)
    for prev, beta in zip(betas[:-1], betas[1:]):
        pre = b + (x / var if rbm.gaussian else x) @ W  # the hidden units' input, shared by all three uses
        log_w += log_p(x, pre, beta) - log_p(x, pre, prev)
        # one Gibbs transition that leaves p_beta invariant
        h = (rand(runs, rbm.n_hidden) < torch.sigmoid(beta * pre)).double()
        mean = (1 - beta) * aA + beta * (aB + h @ W.t())
        if rbm.gaussian:
            x = mean + torch.exp(rbm.log_sigma.double()) * torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float64)
        else:
            x = (rand(*x.shape) < torch.sigmoid(mean)).double()
    m = float(log_w.max())
    w = torch.exp(log_w - m)
    mean_w, std_w = float(w.mean()), float(w.std())
    spread = 3 * std_w / math.sqrt(runs)
    log_z = log_za + m + math.log(mean_w)
    lower = log_za + m + math.log(mean_w - spread) if mean_w > spread else -math.inf
    return AISResult(log_z, lower, log_za + m + math.log(mean_w + spread), runs, temperatures, time.perf_counter() - t0)
