"""The contract between model families and the one training loop, the capabilities a trained
model may offer, and the registry of families.

A family implements :class:`AbstractModel`: ``forward`` is its objective (pure: validation and
evaluation call it), ``training_step`` is one optimisation step (the only place where state
outside the gradient may change), ``optimizer_groups`` names the parameters each optimizer
owns. What a trained model can do beyond that is declared by inheriting capability interfaces
(:class:`Encoder`, :class:`Generator`, ...), which an instance may lack (:meth:`AbstractModel.lacks`),
and every consumer (``lvmkit sample``, probes, the report, the sample-quality measure) asks
``has(model, Generator)`` or ``require(...)``, never for a family.
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor, nn

from lvmkit.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.core.optim import Optimizers


@dataclass
class LossOutput:
    """A batch's scalar objective and its named terms (detached, for logging)."""

    loss: Tensor
    terms: dict[str, Tensor]


class AbstractModel(nn.Module, abc.ABC):
    """What the training loop, checkpoints and evaluation rely on.

    Class attributes a family may set:
        input_shape: the shape of one example (set per instance by the builder).
        data_support: the (low, high) range the data must lie in (e.g. (0, 1) for a Bernoulli
            likelihood), or None; checked once before training.
        selection_metric: the validation term that picks ``best.pt`` and drives early stopping
            (lower is better), or None when no validation number is worth selecting on (a
            GAN): then the last checkpoint is the model and early stopping is off.
        optimizer_defaults: per optimizer group, settings that replace the optimizer's own
            defaults (e.g. a GAN's Adam(2e-4, betas (0.5, 0.999))); the config still wins.
        divergence_advice: what to change when this model's loss runs off to NaN or infinity
            (replaces the loop's generic advice in the error), or None.
    """

    input_shape: tuple[int, ...]
    data_support: tuple[float, float] | None = None
    selection_metric: ClassVar[str | None] = "loss"
    optimizer_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    divergence_advice: str | None = None

    @abc.abstractmethod
    def forward(self, x: Tensor, step: int | None = None) -> LossOutput:
        """The objective on a batch ``x`` (batch, *input_shape).

        Pure: changes no parameter, buffer or chain (random draws are allowed). ``step`` is the
        optimisation step for step-dependent weights (KL warm-up); None means full weight, as
        validation and evaluation use it. ``terms`` holds "loss" and any other named scalars.
        """

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per named optimizer; one group "main" by default."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def training_step(self, x: Tensor, step: int, opt: "Optimizers") -> dict[str, Tensor]:
        """One optimisation step on the batch ``x``; returns the terms to log (detached).

        ``opt.minimize(group, loss)`` does zero_grad, backward, clipping, the learning-rate
        schedule, the finiteness guard and the optimizer step for one group. Default: minimise
        ``forward`` with the "main" group.
        """
        out = self(x, step)
        opt.minimize("main", out.loss)
        return out.terms

    def update(self, train_x: Tensor, step: int) -> str | None:
        """Before each training step, with the whole training set: refresh state that depends on
        all of it (DEC's cluster targets). Returns a reason to stop training, or None."""
        return None

    @abc.abstractmethod
    def evaluate_split(self, split, k: int, batch_size: int = 100) -> dict:
        """Family-specific test metrics on a split (what ``lvmkit evaluate`` adds to the test
        objective). ``k``: samples for Monte Carlo estimates; ``batch_size``: examples per
        estimator call. Returns a flat dict of numbers."""

    @property
    def objective_stage(self) -> int:
        """Changes when the training objective itself changes; best checkpoints restart then."""
        return 0

    @property
    def objective_final(self) -> bool:
        """False while a later stage of the objective is still to come (DEC's pretraining):
        early stopping waits for the final objective."""
        return True

    def lacks(self, capability: type) -> str | None:
        """Why this instance does not offer ``capability`` although its class declares it, or
        None when it does (scikit-learn's ``available_if``, per capability): a deterministic
        autoencoder is no density model, an autoencoder trained without DEC's objective has no
        clusters of its own. Consumers ask :func:`has` or :func:`require`, which consult this;
        a family whose capabilities depend on its configuration overrides it. The reason is a
        clause that completes "this model is not one: ..." (what it lacks, and what has it)."""
        return None


# -- capabilities ----------------------------------------------------------------------------
class Encoder(abc.ABC):
    """Maps examples to codes: probes, clustering, anomaly scores on codes, ``LatentEncoder``.

    Every family's ``embed`` also takes a NumPy array (or nested lists): the interface converts
    it to a tensor of the model's dtype on the model's device before the family's code runs.
    """

    latent_dim: int

    @abc.abstractmethod
    def embed(self, x: Tensor) -> Tensor:
        """Deterministic codes (batch, latent_dim): posterior means where there is a posterior.

        Args:
            x: examples (batch, *input_shape) in the model's units (after the run's data
                scaling), as a tensor or an array.
        """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        embed = cls.__dict__.get("embed")
        if callable(embed) and not getattr(embed, "__isabstractmethod__", False):
            cls.embed = _tensor_input(embed)


def _tensor_input(embed: Callable) -> Callable:
    """``embed`` that first turns an array argument into a tensor like the model's parameters."""
    if getattr(embed, "_takes_arrays", False):
        return embed

    @functools.wraps(embed)
    def wrapper(self, x, *args, **kwargs):
        if not isinstance(x, Tensor):
            x = as_model_tensor(self, x, "embed")
        return embed(self, x, *args, **kwargs)

    wrapper._takes_arrays = True
    return wrapper


def as_model_tensor(model: nn.Module, x: Any, what: str) -> Tensor:
    """``x`` (an array or nested lists of numbers) as a tensor of ``model``'s floating dtype on
    its device; raises TypeError naming ``what`` for anything else."""
    import numpy as np

    try:
        arr = np.asarray(x)
    except Exception:  # ragged lists and the like
        arr = np.asarray(None, dtype=object)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} takes examples as a torch.Tensor (or a NumPy array of numbers) of shape "
                        f"(batch, *input_shape); got {type(x).__name__}: pass torch.as_tensor(x, dtype=torch.float32).")
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, torch.device("cpu"))
    return torch.as_tensor(arr, dtype=dtype, device=device)


class Reconstructor(abc.ABC):
    """Maps examples back to data space through the model: reconstructions, their errors."""

    @abc.abstractmethod
    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions of ``x`` in data space, same shape as ``x``."""


class Generator(abc.ABC):
    """Draws new examples: ``lvmkit sample``, sample grids, ``lvmkit quality``.

    ``trained_prior`` is False for a generator whose draws start from a prior the model was
    never trained to match (a deterministic autoencoder decoding N(0, I) codes): figures say so.
    """

    trained_prior: bool = True

    @abc.abstractmethod
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` examples (n, *input_shape) in the data's scale.

        Args:
            n: number of examples.
            steps: sampler steps for iterative samplers (diffusion, MCMC); None = the model's
                default. One-shot generators ignore it.
            generator: the random stream, for reproducible draws.
        """


class IterativeGenerator(Generator):
    """A generator whose draws come from an iterative sampler chosen at call time (diffusion:
    ancestral or DDIM; energy models: Gibbs, Metropolis-Hastings, Langevin).

    Samplers share one interface (``lvmkit.models.mcmc.base.AbstractSampler``: an object holding
    its configuration, with ``init``/``step``/``run`` passing the chain in and out), and each
    declares the options a caller may change (``options``: DDIM's steps and eta, ...). A family
    lists the samplers it supports in :attr:`samplers`, its default first; options are
    validated by the sampler chosen, so a request no sampler of the family takes (``eta`` of an
    RBM) is refused in one sentence naming the family's samplers and their options.
    """

    @property
    @abc.abstractmethod
    def samplers(self) -> Mapping[str, Any]:
        """The samplers this model draws with, by name, its default first, each holding this
        model's settings (its config's step count, a data range)."""

    @property
    def default_sampler(self) -> Any:
        """The sampler :meth:`sample` uses when given none: the first of :attr:`samplers`."""
        return next(iter(self.samplers.values()))

    @abc.abstractmethod
    def make_sampler(self, name: str | None = None, **options: Any) -> Any:
        """One of :attr:`samplers` with ``options`` replacing its settings, checked against this
        model (DDIM's steps against T).

        Args:
            name: a key of :attr:`samplers`; None: the default sampler if it takes every option
                given, else the first that does (``eta`` alone chooses a diffusion's DDIM).
            options: settings the sampler declares, e.g. ``steps=50, eta=0.5``; None values
                leave a setting as it is.

        Raises:
            ConfigError: one sentence naming this model's samplers and the options each takes,
                for an unknown name or an option the sampler (without a name: every sampler)
                does not take; the sampler's own sentence for a value it rejects.
        """

    @abc.abstractmethod
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: Any = None, keep: int = 0) -> Any:
        """As :meth:`Generator.sample`, with ``sampler`` from :meth:`make_sampler` (None: the
        model's default sampler); ``steps`` replaces the sampler's step count. With ``keep`` > 0,
        returns (samples, chain): ``keep`` states (label, x) of the chain in the data's scale,
        from the first to the last, each labelled for a figure ("t=1000", "step 20")."""


class EnergyModel(abc.ABC):
    """Scores examples by an energy, lower = more probable (an RBM's free energy, an EBM's
    network): the ``energy`` anomaly score."""

    @abc.abstractmethod
    def energy(self, x: Tensor) -> Tensor:
        """The energy of each example of ``x``, shape (batch,)."""


class DensityModel(abc.ABC):
    """Estimates log p(x) per example."""

    @abc.abstractmethod
    def log_likelihood(self, x: Tensor, k: int) -> Tensor:
        """An estimate (or bound) of log p(x), one value per example, with ``k`` samples."""


class EvidenceBound(abc.ABC):
    """A per-example lower bound on log p(x) from one draw of the model's latent variables (a
    VAE's or DRAW's ELBO, a diffusion model's variational bound): the ``elbo`` anomaly score.

    ``elbo_draws``: the draws a per-example score averages (a diffusion bound already sums T
    terms, each from its own draw, at T network passes per draw: one is enough there).
    """

    elbo_draws: int = 10

    @abc.abstractmethod
    def elbo(self, x: Tensor) -> dict[str, Tensor]:
        """The bound on log p(x) of each example of ``x`` under ``"elbo"`` (batch,), from one draw,
        with any named terms beside it (same shape)."""


class ClusterModel(abc.ABC):
    """Learned clusters of its own codes (DEC): ``lvmkit cluster --method model``."""

    n_clusters: int

    @abc.abstractmethod
    def predict_clusters(self, codes: Tensor) -> Tensor:
        """The cluster index (batch,) of each code (batch, latent_dim) from :meth:`Encoder.embed`."""


class LatentDecoder(abc.ABC):
    """Maps codes back to data: the report's grid of decoded codes."""

    latent_dim: int

    @abc.abstractmethod
    def decode_mean(self, z: Tensor) -> Tensor:
        """The data-space mean (batch, *input_shape) of codes ``z`` (batch, latent_dim)."""


class Stepwise(abc.ABC):
    """Builds its output over steps (DRAW's canvas): the report's canvas figures and per-step KL."""

    @abc.abstractmethod
    def trace(self, x: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Any:
        """Per-step quantities of one pass on ``x``: an object with ``canvases`` (T, batch,
        *input_shape) in data space, ``kl`` (T, batch) or None, and ``read_windows`` /
        ``write_windows`` (attention placements) or None. ``sample``: z_t drawn from the
        posterior with ``generator``, as the loss does; False: z_t at posterior means."""

    def canvases(self, x: Tensor) -> list[tuple[str, Tensor]]:
        """The output after each step, labelled for a figure: [("t=1", ...), ..., ("t=T", ...)]."""
        return [(f"t={t}", c) for t, c in enumerate(self.trace(x).canvases, start=1)]


class LatentTrajectory(abc.ABC):
    """Codes that move in time (a latent ODE's z(t)): the report's latent-trajectory figure."""

    @abc.abstractmethod
    def latent_path(self, z0: Tensor, origin: Tensor, times: Tensor) -> Tensor:
        """z at ``times`` (batch, n) from z0 (batch, latent_dim) at ``origin`` (batch,): (batch, n, latent_dim)."""


class ImageFilters(abc.ABC):
    """Weights that read as images (an RBM's hidden units): the report's filter figure."""

    @abc.abstractmethod
    def filters(self) -> Tensor:
        """Each unit's weights to the inputs, shaped as the data: (units, *input_shape)."""


class Forecaster(abc.ABC):
    """Predicts series at the rows of a packed batch (latent ODEs and their baselines)."""

    @abc.abstractmethod
    def predict(self, x: Tensor, samples: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """Predicted means at every row of ``x``: (S, B, T, D)."""


CAPABILITIES: dict[str, type] = {"encoder": Encoder, "reconstructor": Reconstructor, "generator": Generator,
                                 "iterative-sampler": IterativeGenerator, "density": DensityModel,
                                 "evidence-bound": EvidenceBound, "energy": EnergyModel, "clusters": ClusterModel,
                                 "latent-decoder": LatentDecoder, "stepwise": Stepwise, "filters": ImageFilters,
                                 "forecaster": Forecaster}


_NAMES = {Encoder: "an encoder", Reconstructor: "a reconstructor", Generator: "a generator",
          IterativeGenerator: "a generator with a choice of samplers", DensityModel: "a density model",
          EvidenceBound: "a variational model (an evidence lower bound on log p(x))", EnergyModel: "an energy model",
          ClusterModel: "a clustering model (clusters of its own, as DEC learns)", LatentDecoder: "a decoder of codes",
          Stepwise: "a stepwise model (its output built over steps)", ImageFilters: "a filter model (weights that read as images)",
          Forecaster: "a forecaster"}


def _lacks(model: nn.Module, capability: type) -> str | None:
    if not isinstance(model, capability):
        return ""
    return model.lacks(capability) if isinstance(model, AbstractModel) else None


def has(model: nn.Module, capability: type) -> bool:
    """Whether ``model`` offers ``capability``: its class declares it and the instance does not
    lack it (:meth:`AbstractModel.lacks`). Consumers ask this, never for a family."""
    return _lacks(model, capability) is None


def capabilities(model: nn.Module) -> list[str]:
    """The names of the capabilities ``model`` offers (declared by its class, not lacked by the instance)."""
    return [name for name, cls in CAPABILITIES.items() if has(model, cls)]


def require(model: nn.Module, capability: type, what: str, advice: str | None = None) -> None:
    """Raise a one-sentence :class:`~lvmkit.ConfigError` when ``model`` lacks ``capability``
    (by its class, or as this instance: the reason :meth:`AbstractModel.lacks` gives is quoted);
    ``advice`` replaces the default remedy (a run of a family that has it)."""
    from lvmkit.core.errors import ConfigError

    reason = _lacks(model, capability)
    if reason is not None:
        have = ", ".join(capabilities(model)) or "none"
        families = ", ".join(name for name in FAMILIES if isinstance_family(name, capability)) or "none"
        why = f"{reason}; " if reason else ""
        raise ConfigError(
            f"{what} needs a model that is {_NAMES.get(capability, capability.__name__)}, but this "
            f"{type(model).__name__} is not ({why}its capabilities: {have}); "
            f"{advice or f'use a run of a family that is one ({families})'}."
        )


# -- the registry of families ----------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A model family: its typed config (a pydantic model) and the builder that composes it.

    ``build(cfg, input_shape)`` returns an :class:`AbstractModel`; ``model_class`` is the class
    it builds (read for its capabilities without building one); ``examples`` are tiny configs
    and input shapes the conformance suite trains, so a new family is tested by registering.

    ``refuses`` declares the commands this family answers with a one-line refusal for a reason
    its capabilities do not show (a sampler option its samplers do not take), as scikit-learn's
    estimator checks declare expected failures: command as typed ("sample --eta", "anomaly
    --score elbo") -> a regular expression the refusal matches. An example may add its own
    under the key ``"refuses"``. Refusals for a missing capability (``probe`` of a GAN,
    ``--score elbo`` of a deterministic autoencoder) follow from :func:`has` and need no entry;
    ``tests/test_consumers.py`` holds every family to both.
    """

    config: type
    build: Callable[..., AbstractModel]
    model_class: type
    examples: tuple[dict, ...] = field(default_factory=tuple)
    refuses: Mapping[str, str] = field(default_factory=dict)


FAMILIES: Registry[Family] = Registry("model family")


def isinstance_family(name: str, capability: type) -> bool:
    return issubclass(FAMILIES.get(name).model_class, capability)


__all__ = ["AbstractModel", "CAPABILITIES", "ClusterModel", "LatentTrajectory", "DensityModel", "Encoder", "EnergyModel", "EvidenceBound",
           "FAMILIES", "Family", "Forecaster", "Generator", "ImageFilters", "IterativeGenerator", "LatentDecoder",
           "LossOutput", "Reconstructor", "Stepwise", "as_model_tensor", "capabilities", "has", "require"]
