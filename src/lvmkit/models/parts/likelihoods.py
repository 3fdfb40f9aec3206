"""Observation models p(x | z): the decoder emits their parameters, these score the data."""
from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvmkit.core.registry import Registry

LIKELIHOODS: Registry = Registry("likelihood")


class Likelihood(nn.Module, abc.ABC):
    """Interface of an observation model over decoder outputs ``params`` (batch, *shape)."""

    #: The interval data must lie in, or None when any real value is allowed.
    support: tuple[float, float] | None = None

    @abc.abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params) summed over every data dimension; returns shape (batch,)."""

    @abc.abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The mean of p(x | params), in data space (what reconstructions and samples show)."""

    def mean_nll(self, params: Tensor, x: Tensor) -> Tensor:
        """-log p(x | params) averaged over the batch: the training loss's reconstruction term.
        Subclasses may override it with a cheaper fused computation of the same value."""
        return -self.log_prob(params, x).mean()

    def log_prob_many(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x_b | params_bj) for m parameter sets per example (importance sampling):
        ``params`` (b, m, *shape), ``x`` (b, *shape); returns (b, m). Subclasses may avoid
        repeating ``x`` m times."""
        b, m = params.shape[:2]
        xr = x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b * m, *x.shape[1:])
        return self.log_prob(params.reshape(b * m, *params.shape[2:]), xr).view(b, m)


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Bernoulli over logits; log p is minus binary cross-entropy computed in logit space,
    which is both stable and cheaper than sigmoid followed by BCE."""

    support = (0.0, 1.0)

    @classmethod
    def from_config(cls, cfg) -> "Bernoulli":
        return cls()

    # Targets are clamped to the support: validation, test or new data scaled with the training
    # split's range may leave [0, 1] (load_data counts them; the trainer logs the count).
    # log p = sum(x l - softplus(l)): three passes over the logits, where binary cross-entropy
    # with logits takes about six.
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.log_prob_many(params.unsqueeze(1), x)[:, 0]

    def log_prob_many(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params.flatten(2)  # (b, m, D); x . l for each sample is one batched product
        dot = torch.bmm(logits, x.clamp(0.0, 1.0).flatten(1).to(logits.dtype).unsqueeze(2)).squeeze(2)
        return dot - F.softplus(logits).sum(2)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def mean_nll(self, params: Tensor, x: Tensor) -> Tensor:
        # summed in float32 at least, whatever the decoder's precision (train.precision = bf16 / fp16)
        dtype = torch.promote_types(torch.promote_types(params.dtype, x.dtype), torch.float32)
        return _BernoulliNLL.apply(params.to(dtype), x.clamp(0.0, 1.0).to(dtype)) / params.shape[0]


class _BernoulliNLL(torch.autograd.Function):
    """sum(softplus(l) - x l) = -sum log Bernoulli(x; sigmoid(l)), with the closed-form gradient
    sigmoid(l) - x: two passes forward and two backward instead of autograd's half dozen."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        return F.softplus(logits).sum() - torch.vdot(x.reshape(-1), logits.reshape(-1))

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, x = ctx.saved_tensors
        g = torch.sigmoid(logits).sub_(x).mul_(grad)
        return g, None


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """Gaussian with mean = decoder output and one scale sigma, fixed or learned.

    With fixed sigma, -log p is the squared error / (2 sigma^2) plus a constant (MSE loss).
    """

    def __init__(self, sigma: float = 0.1, learn_sigma: bool = False) -> None:
        super().__init__()
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @classmethod
    def from_config(cls, cfg) -> "Gaussian":
        return cls(cfg.sigma, cfg.learn_sigma)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        err = ((x - params) ** 2).flatten(1)
        d = err.shape[1]
        inv_var = torch.exp(-2.0 * self.log_sigma)
        return -0.5 * inv_var * err.sum(1) - d * (self.log_sigma + 0.5 * math.log(2.0 * math.pi))

    def mean(self, params: Tensor) -> Tensor:
        return params
