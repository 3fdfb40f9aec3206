"""The contract between model families and the one training loop, the capabilities a trained
model may offer, and the registry of families.

A family implements :class:`AbstractModel`: ``forward`` is its objective (pure: validation and
evaluation call it), ``training_step`` is one optimisation step (the only place where state
outside the gradient may change), ``optimizer_groups`` names the parameters each optimizer
owns. What a trained model can do beyond that is declared by inheriting capability interfaces
(:class:`Encoder`, :class:`Generator`, ...), and every consumer (``lvmkit sample``, probes,
the report, the sample-quality measure) checks ``isinstance(model, Generator)``, never a family.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

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


# -- capabilities ----------------------------------------------------------------------------
class Encoder(abc.ABC):
    """Maps examples to codes: probes, clustering, anomaly scores on codes, ``LatentEncoder``."""

    latent_dim: int

    @abc.abstractmethod
    def embed(self, x: Tensor) -> Tensor:
        """Deterministic codes (batch, latent_dim): posterior means where there is a posterior."""


class Reconstructor(abc.ABC):
    """Maps examples back to data space through the model: reconstructions, their errors."""

    @abc.abstractmethod
    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions of ``x`` in data space, same shape as ``x``."""


class Generator(abc.ABC):
    """Draws new examples: ``lvmkit sample``, sample grids, ``lvmkit quality``."""

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
    ancestral or DDIM; energy models: Gibbs, Metropolis-Hastings, Langevin)."""

    @abc.abstractmethod
    def make_sampler(self, name: str, steps: int | None = None, eta: float | None = None) -> Any:
        """The sampler ``name`` with its settings (None: the sampler's defaults), checked against
        this model; raises ConfigError naming the valid choices."""

    @abc.abstractmethod
    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               sampler: Any = None, keep: int = 0) -> Any:
        """As :meth:`Generator.sample`, with ``sampler`` from :meth:`make_sampler` (None: the
        model's default sampler). With ``keep`` > 0, returns (samples, chain): ``keep`` states
        (label, x) of the chain in the data's scale, from the first to the last, each labelled
        for a figure ("t=1000", "step 20")."""


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


class Forecaster(abc.ABC):
    """Predicts series at the rows of a packed batch (latent ODEs and their baselines)."""

    @abc.abstractmethod
    def predict(self, x: Tensor, samples: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """Predicted means at every row of ``x``: (S, B, T, D)."""


CAPABILITIES: dict[str, type] = {"encoder": Encoder, "reconstructor": Reconstructor, "generator": Generator,
                                 "iterative-sampler": IterativeGenerator, "density": DensityModel,
                                 "energy": EnergyModel, "forecaster": Forecaster}


_NAMES = {Encoder: "an encoder", Reconstructor: "a reconstructor", Generator: "a generator",
          IterativeGenerator: "a generator with a choice of samplers", DensityModel: "a density model",
          EnergyModel: "an energy model",
          Forecaster: "a forecaster"}


def capabilities(model: nn.Module) -> list[str]:
    """The names of the capabilities ``model`` declares."""
    return [name for name, cls in CAPABILITIES.items() if isinstance(model, cls)]


def require(model: nn.Module, capability: type, what: str, advice: str | None = None) -> None:
    """Raise a one-sentence :class:`~lvmkit.ConfigError` when ``model`` lacks ``capability``;
    ``advice`` replaces the default remedy (a run of a family that has it)."""
    from lvmkit.core.errors import ConfigError

    if not isinstance(model, capability):
        have = ", ".join(capabilities(model)) or "none"
        families = ", ".join(name for name in FAMILIES if isinstance_family(name, capability)) or "none"
        raise ConfigError(
            f"{what} needs a model that is {_NAMES.get(capability, capability.__name__)}, but this "
            f"{type(model).__name__} is not "
            f"(its capabilities: {have}); {advice or f'use a run of a family that is one ({families})'}."
        )


# -- the registry of families ----------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A model family: its typed config (a pydantic model) and the builder that composes it.

    ``build(cfg, input_shape)`` returns an :class:`AbstractModel`; ``model_class`` is the class
    it builds (read for its capabilities without building one); ``example`` is a tiny config
    and input shape the conformance suite trains, so a new family is tested by registering.
    """

    config: type
    build: Callable[..., AbstractModel]
    model_class: type
    examples: tuple[dict, ...] = field(default_factory=tuple)


FAMILIES: Registry[Family] = Registry("model family")


def isinstance_family(name: str, capability: type) -> bool:
    return issubclass(FAMILIES.get(name).model_class, capability)


__all__ = ["AbstractModel", "CAPABILITIES", "DensityModel", "Encoder", "FAMILIES", "Family", "Forecaster", "Generator",
           "LossOutput", "Reconstructor", "capabilities", "require"]
