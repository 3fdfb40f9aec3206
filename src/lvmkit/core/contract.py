"""The contract between models and the one training loop, and the registry of model families.

Every model family (autoencoders, latent ODEs, ...) implements :class:`AbstractModel`; the
training loop, checkpoints, evaluation and the report rely on nothing else.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from lvmkit.core.registry import Registry

#: family name -> ``build(model_config, input_shape) -> AbstractModel``
FAMILIES: Registry[Callable[..., "AbstractModel"]] = Registry("model family")


@dataclass
class LossOutput:
    """A batch's scalar training loss and its named terms (detached, for logging)."""

    loss: Tensor
    terms: dict[str, Tensor]


class AbstractModel(nn.Module, abc.ABC):
    """What the training loop calls. ``input_shape`` is the shape of one example."""

    # Set by every family: the shape of one example. A submodule named ``likelihood`` with a
    # ``support`` attribute, where a family has one, lets the loop check the data's range.
    input_shape: tuple[int, ...]

    @abc.abstractmethod
    def loss(self, x: Tensor, step: int = 0) -> LossOutput:
        """The training objective on a batch ``x`` (batch, *input_shape) at optimisation ``step``;
        ``terms`` must hold "loss" and may hold any other named scalars to log."""

    def update(self, x: Tensor, step: int) -> str | None:
        """Called before every training step with the whole training set; returns a reason to
        stop training or None. Default: nothing."""
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
