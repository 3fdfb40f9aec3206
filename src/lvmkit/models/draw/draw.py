"""DRAW (Gregor et al. 2015, "DRAW: A Recurrent Neural Network For Image Generation"): a
recurrent VAE that builds its output on a canvas over T steps, reading the image (optionally
through attention) with an encoder LSTM and writing with a decoder LSTM. Its typed config and
kind live here; the read/write operators are in :mod:`lvmkit.models.draw.attention` (none,
attention) and :mod:`lvmkit.models.draw.conv` (conv).

Unlike the thesis code this family was ported from, the read sees the error image x - sigma(c)
(not x twice), the sampled z_t reaches the decoder, the per-step KL is the analytic Gaussian KL
(2 log sigma, through :class:`~lvmkit.models.parts.regularizers.KLRegularizer`), and the posterior
scale is not clipped to >= 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from lvmkit.core.config import ModelConfig
from lvmkit.core.contract import (FAMILIES, AbstractModel, DensityModel, Encoder, EvidenceBound, Family, Generator,
                                  LossOutput, Reconstructor, Stepwise)
from lvmkit.core.errors import ConfigError
from lvmkit.models.parts.distributions import kl_std_normal, log_normal, log_std_normal, reparameterize
from lvmkit.models.draw import conv as _conv  # noqa: F401  (registers the conv read and write)
from lvmkit.models.draw.attention import READERS, WRITERS
from lvmkit.core.kinds import MODEL_KINDS
from lvmkit.models.parts.likelihoods import LIKELIHOODS, Likelihood
from lvmkit.models.parts.regularizers import REGULARIZERS, Regularizer
from lvmkit.models.parts.evaluation import importance_weighted, reconstruction_and_likelihood

# Per-step latent penalties DRAW accepts from REGULARIZERS ("dec" needs a clustering model).
_LATENTS = ("kl", "mmd", "none")


class DrawConfig(ModelConfig):
    """``[model]`` of the DRAW family. ``latent_dim`` is the size of one step's z_t; the codes
    of :meth:`Draw.embed` hold ``time_steps * latent_dim`` numbers with ``codes = "all"``."""

    kind: str = "draw"
    time_steps: int = Field(10, ge=1)  # T, the number of glimpses
    latent_dim: int = Field(10, gt=0)
    hidden: int = Field(256, gt=0)  # size of the encoder and the decoder LSTM
    read: str = "attention"  # a name in READERS: none (eq. 17), attention (eq. 27), conv (draw_conv)
    write: str = "attention"  # a name in WRITERS: none (eq. 18), attention (eq. 29), conv (draw_conv)
    read_size: int = Field(2, ge=1)  # N of the read grid (attention)
    write_size: int = Field(5, ge=1)  # N of the write grid (attention)
    conv_channels: list[int] = Field(default_factory=lambda: [16, 32])  # conv read's layers; the conv write mirrors them
    glimpse_delta: Optional[float] = Field(None, gt=0.0)  # fixed grid stride in pixels; None: learned
    codes: Literal["all", "last"] = "all"  # embed: every step's posterior mean, or the last
    likelihood: str = "bernoulli"
    sigma: float = Field(0.1, gt=0.0)
    learn_sigma: bool = False
    regularizer: str = "kl"  # per-step latent penalty: kl (the ELBO), mmd, none (deterministic)
    beta: float = Field(1.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    mmd_weight: float = Field(10.0, ge=0.0)
    mmd_kernel: Literal["imq", "rbf"] = "imq"
    mmd_scale: float = Field(1.0, gt=0.0)

    @field_validator("read", "write")
    @classmethod
    def _known_operator(cls, name: str, info) -> str:
        (READERS if info.field_name == "read" else WRITERS).get(name)  # raises, listing the valid names
        return name

    @field_validator("conv_channels")
    @classmethod
    def _positive_channels(cls, channels: list[int]) -> list[int]:
        if not channels or any(c <= 0 for c in channels):
            raise ConfigError(f"model.conv_channels must list at least one positive channel count; got {channels}. "
                              "Use e.g. [16, 32].")
        return channels

    @field_validator("regularizer")
    @classmethod
    def _known_latent(cls, name: str) -> str:
        if name not in _LATENTS:
            raise ConfigError(f"model.regularizer of a DRAW model must be one of {', '.join(_LATENTS)}; got {name!r}.")
        return name


MODEL_KINDS.register("draw")({"family": "draw"})


@dataclass
class _Trace:
    """One pass of the recurrence: the final canvas (batch, *input_shape, pre-sigmoid) and per
    step t the read r_t, the posterior (mean_t, logvar_t) and the code z_t, each (batch, ...)."""

    canvas: Tensor
    reads: list[Tensor]
    means: list[Tensor]
    logvars: list[Optional[Tensor]]
    zs: list[Tensor]
    canvases: list[Tensor]  # c_1 .. c_T (pre-likelihood), for the report's strip
    h_decs: list[Tensor]  # h_1^dec .. h_T^dec; step t reads with h_{t-1}^dec and writes with h_t^dec


@dataclass
class DrawTrace:
    """What :meth:`Draw.trace` returns, stacked over the steps t = 1 .. T."""

    canvases: Tensor  # (T, batch, *input_shape): the likelihood's mean of c_t
    kl: Optional[Tensor]  # (T, batch): KL(q(z_t | x, z_<t) || N(0, I)) in nats; None when deterministic
    read_windows: Optional[Tensor]  # (T, batch, 4): g_x, g_y, delta, N of the read grid; None without attention
    write_windows: Optional[Tensor]  # the same for the write grid


class Draw(AbstractModel, Encoder, Reconstructor, Generator, DensityModel, EvidenceBound, Stepwise):
    """DRAW, eq. 3-8 of Gregor et al. 2015, with canvas c_0 = 0 and zero initial LSTM states.

    Per step: x^ = x - mean(c_{t-1}); r_t = read(x, x^, h_dec); h_enc = LSTM_enc([r_t, h_dec]);
    z_t ~ q(z_t | h_enc) = N(mean, diag exp(logvar)); h_dec = LSTM_dec(z_t); c_t = c_{t-1} +
    write(h_dec). The likelihood scores c_T (Bernoulli logits or Gaussian means). The loss is
    -log p(x | c_T) + sum_t penalty(z_t), the negative ELBO (eq. 12) with the KL penalty.
    """

    def __init__(self, read: nn.Module, write: nn.Module, likelihood: Likelihood, regularizer: Regularizer,
                 input_shape: tuple[int, ...], time_steps: int, latent_dim: int, hidden: int, stochastic: bool,
                 codes: str = "all") -> None:
        super().__init__()
        self.read, self.write, self.likelihood, self.regularizer = read, write, likelihood, regularizer
        self.input_shape = tuple(input_shape)
        self.time_steps, self.z_dim, self.hidden, self.stochastic, self.codes = time_steps, latent_dim, hidden, stochastic, codes
        self.enc = nn.LSTMCell(read.out_features + hidden, hidden)
        self.dec = nn.LSTMCell(latent_dim, hidden)
        self.posterior = nn.Linear(hidden, 2 * latent_dim if stochastic else latent_dim)  # eq. 1
        self.latent_dim = latent_dim * (time_steps if codes == "all" else 1)

    @property
    def data_support(self) -> tuple[float, float] | None:
        return getattr(self.likelihood, "support", None)

    def lacks(self, capability: type) -> str | None:
        if issubclass(capability, (DensityModel, EvidenceBound)) and not self.stochastic:
            return "it is deterministic (model.regularizer = 'none'), so it has no posterior to bound log p(x) with"
        return None

    # -- the recurrence ----------------------------------------------------------------------
    def _initial(self, x: Tensor) -> tuple[Tensor, ...]:
        zeros = x.new_zeros(x.shape[0], self.hidden)
        return x.new_zeros(x.shape), zeros, zeros, zeros, zeros  # c, h_enc, cell_enc, h_dec, cell_dec

    def _step(self, x: Tensor, state: tuple[Tensor, ...], eps: Optional[Tensor]):
        """One step of eq. 3-8; ``eps`` (batch, latent_dim) or None for z_t = posterior mean.
        Returns (state, r_t, mean_t, logvar_t, z_t)."""
        c, h_enc, cell_enc, h_dec, cell_dec = state
        x_hat = x - self.likelihood.mean(c)  # the error image, eq. 3
        r = self.read(x, x_hat, h_dec)  # eq. 4
        h_enc, cell_enc = self.enc(torch.cat([r, h_dec], 1), (h_enc, cell_enc))  # eq. 5
        out = self.posterior(h_enc)
        mean, logvar = out.chunk(2, dim=1) if self.stochastic else (out, None)
        z = reparameterize(mean, logvar, eps) if logvar is not None and eps is not None else mean  # eq. 6
        h_dec, cell_dec = self.dec(z, (h_dec, cell_dec))  # eq. 7
        c = c + self.write(h_dec)  # eq. 8
        return (c, h_enc, cell_enc, h_dec, cell_dec), r, mean, logvar, z

    def _trace(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> _Trace:
        """Run all T steps on x (batch, *input_shape); ``sample`` False uses posterior means."""
        state = self._initial(x)
        tr = _Trace(state[0], [], [], [], [], [], [])
        for _ in range(self.time_steps):
            eps = (torch.randn(x.shape[0], self.z_dim, generator=generator, device=x.device, dtype=x.dtype)
                   if sample and self.stochastic else None)
            state, r, mean, logvar, z = self._step(x, state, eps)
            for seq, v in ((tr.reads, r), (tr.means, mean), (tr.logvars, logvar), (tr.zs, z), (tr.canvases, state[0]),
                           (tr.h_decs, state[3])):
                seq.append(v)
        tr.canvas = state[0]
        return tr

    # -- training ----------------------------------------------------------------------------
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        """-log p(x | c_T) + sum_t penalty(z_t) (batch means); terms hold each step's penalty."""
        tr = self._trace(x)
        recon = self.likelihood.mean_nll(tr.canvas, x)
        loss, out = recon, {"recon": recon.detach()}
        totals: dict[str, Tensor] = {}
        for t, (z, mean, logvar) in enumerate(zip(tr.zs, tr.means, tr.logvars), start=1):
            penalty, terms = self.regularizer(z, mean, logvar, step, x)
            loss = loss + penalty
            for name, v in terms.items():
                out[f"{name}_{t}"] = v.detach()
                totals[name] = totals.get(name, 0) + v.detach()
        out.update(totals)
        out["loss"] = loss.detach()
        if self.regularizer.is_kl:
            out["elbo"] = -(recon.detach() + totals["kl"])  # eq. 12, at KL weight 1
        return LossOutput(loss, out)

    # -- using a trained model ---------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The posterior means of every step concatenated (batch, T * latent) ("longform"), or
        the last step's (batch, latent) with ``codes = "last"``; z_t = mean_t throughout."""
        means = self._trace(x, sample=False).means
        return torch.cat(means, 1) if self.codes == "all" else means[-1]

    @torch.no_grad()
    def trace(self, x: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> DrawTrace:
        """Per-step quantities of one pass on x (batch, *input_shape), for figures.

        Args:
            x: the inputs.
            sample: draw z_t from the posterior (with ``generator``), as the loss does; False
                (the default) sets every z_t to its posterior mean.
            generator: the random numbers of ``sample``; None uses the global generator.

        Returns:
            A :class:`DrawTrace`: each step's canvas as data, KL_t per example (the terms of the
            ELBO, eq. 12), and the read and write windows of attention operators (operators
            without a ``window`` give None).
        """
        tr = self._trace(x, sample=sample, generator=generator)
        kl = torch.stack([kl_std_normal(m, lv) for m, lv in zip(tr.means, tr.logvars)]) if self.stochastic else None
        h_read = [torch.zeros_like(tr.h_decs[0]), *tr.h_decs[:-1]]  # read at step t sees h_{t-1}^dec, h_0 = 0

        def windows(op: nn.Module, states: list[Tensor]) -> Optional[Tensor]:
            window = getattr(op, "window", None)
            return None if window is None else torch.stack([window.placement(h) for h in states])

        return DrawTrace(canvases=torch.stack([self.likelihood.mean(c) for c in tr.canvases]), kl=kl,
                         read_windows=windows(self.read, h_read), write_windows=windows(self.write, tr.h_decs))

    @torch.no_grad()
    def canvases(self, x: Tensor) -> list[tuple[str, Tensor]]:
        """The canvas after each step as data (the likelihood's mean), z_t at posterior means:
        [("t=1", ...), ..., ("t=T", ...)], each shaped like ``x``."""
        return [(f"t={t}", c) for t, c in enumerate(self.trace(x).canvases, start=1)]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x | c_T) with every z_t at its posterior mean."""
        return self.likelihood.mean(self._trace(x, sample=False).canvas)

    @torch.no_grad()
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x | c_T) with z_t ~ N(0, I) through the decoder alone (section 2.3);
        ``steps`` is not used (T is fixed by training)."""
        device = next(self.parameters()).device
        c = torch.zeros(n, *self.input_shape, device=device)
        h = cell = torch.zeros(n, self.hidden, device=device)
        for _ in range(self.time_steps):
            z = torch.randn(n, self.z_dim, generator=generator, device=device)
            h, cell = self.dec(z, (h, cell))
            c = c + self.write(h)
        return self.likelihood.mean(c)

    def _require_posterior(self, what: str) -> None:
        if not self.stochastic:
            raise ConfigError(f"{what} needs a stochastic DRAW model, but this one is deterministic "
                              "(model.regularizer = 'none'); train one with regularizer 'kl'.")

    @torch.no_grad()
    def elbo(self, x: Tensor) -> dict[str, Tensor]:
        """Per-example single-sample ELBO = log p(x | c_T) - sum_t KL_t, with its terms."""
        self._require_posterior("The ELBO")
        tr = self._trace(x)
        rec = self.likelihood.log_prob(tr.canvas, x)
        kl = sum(kl_std_normal(m, lv) for m, lv in zip(tr.means, tr.logvars))
        return {"elbo": rec - kl, "log_px_given_z": rec, "kl": kl}

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
        """Importance-weighted log p(x) over all T latents (Burda et al. 2015, eq. 8):
        logmeanexp_k [log p(x | z_1:T) + sum_t log p(z_t) - sum_t log q(z_t | x, z_<t)];
        a lower bound rising with k. ``chunk`` samples of every example run as one batch."""
        self._require_posterior("The importance-weighted likelihood")
        b = x.shape[0]

        def log_weights(m: int) -> Tensor:
            xr = x.unsqueeze(0).expand(m, *x.shape).reshape(m * b, *x.shape[1:])  # (m * b, *input_shape)
            tr = self._trace(xr)
            log_w = self.likelihood.log_prob(tr.canvas, xr)
            for z, mean, logvar in zip(tr.zs, tr.means, tr.logvars):
                log_w = log_w + log_std_normal(z) - log_normal(z, mean, logvar)
            return log_w.view(m, b).T  # (b, m)

        return importance_weighted(log_weights, b, k, chunk, x.device, x.dtype)

    @torch.no_grad()
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Reconstruction error; when stochastic also the single-sample ELBO and its terms and
        the importance-weighted log p(x) with ``k`` samples and its standard error."""
        return reconstruction_and_likelihood(self, split, k, batch_size, self.stochastic)


def build_draw(cfg: DrawConfig, input_shape: tuple[int, ...]) -> Draw:
    """Compose a DRAW model from its config; each operator checks itself against the data's shape."""
    shape = tuple(input_shape)
    return Draw(read=READERS.get(cfg.read).from_config(cfg, shape), write=WRITERS.get(cfg.write).from_config(cfg, shape),
                likelihood=LIKELIHOODS.get(cfg.likelihood).from_config(cfg),
                regularizer=REGULARIZERS.get(cfg.regularizer).from_config(cfg), input_shape=shape,
                time_steps=cfg.time_steps, latent_dim=cfg.latent_dim, hidden=cfg.hidden,
                stochastic=cfg.regularizer != "none", codes=cfg.codes)


_TINY = {"kind": "draw", "time_steps": 3, "latent_dim": 2, "hidden": 8, "read_size": 2, "write_size": 3}
FAMILIES.register("draw")(Family(
    config=DrawConfig, build=build_draw, model_class=Draw,
    examples=(
        {"model": dict(_TINY), "input_shape": (1, 8, 8)},
        {"model": {**_TINY, "read": "none", "write": "none", "regularizer": "mmd", "codes": "last"}, "input_shape": (1, 8, 8)},
        {"model": {**_TINY, "glimpse_delta": 2.0, "likelihood": "gaussian", "learn_sigma": True}, "input_shape": (1, 8, 8)},
        # Codes wider than the input (3 steps x 2 = 6 numbers for 5 values), as on digits (16 x 5 for 64).
        {"model": {**_TINY, "read": "none", "write": "none", "regularizer": "none"}, "input_shape": (5,)},
        {"model": {**_TINY, "read": "conv", "write": "conv", "conv_channels": [3, 4]}, "input_shape": (1, 7, 10)},
    ),
))

__all__ = ["Draw", "DrawConfig", "DrawTrace", "build_draw"]
