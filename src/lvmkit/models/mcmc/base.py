"""The one interface of lvmkit's samplers: Markov chains on an energy (block Gibbs and
Metropolis-Hastings, :mod:`.chains`; Langevin, :mod:`.langevin`) and a diffusion's reverse
chain (ancestral, DDIM: :mod:`lvmkit.models.diffusion.samplers`).

A sampler is an immutable object that holds its configuration (Diffrax's solvers); the chain
is passed in and out, so one transition is testable alone::

    state = sampler.init(target, x)               # the chains at their starting states x
    state = sampler.step(target, state, gen)      # one transition of every chain
    x, strip = sampler.run(target, x, generator=gen, keep=8)   # init, then every step

``target`` is what the chain samples: a Boltzmann machine's free energy and conditionals, a
differentiable energy, or a trained reverse process. Each sampler declares the settings a
caller may change (``options``); a family lists the samplers it supports (its default first,
:attr:`lvmkit.core.contract.IterativeGenerator.samplers`), and :func:`choose_sampler` turns a
request (a name and options, e.g. from ``lvmkit sample --sampler --steps --eta``) into one of
them, or refuses it in one sentence naming the family's samplers and their options.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Mapping, TypeVar

import torch
from torch import Tensor

from lvmkit.core.errors import ConfigError

Target = TypeVar("Target")
S = TypeVar("S", bound="AbstractSampler")


@dataclass(frozen=True)
class ChainState:
    """The chains between two transitions.

    Attributes:
        x: the current states, (chains, *shape).
        i: transitions taken since :meth:`AbstractSampler.init`.
        stats: what the last transition measured, per sampler (Metropolis-Hastings:
            ``accept_rate``, a 0-d tensor); empty after ``init``.
    """

    x: Tensor
    i: int = 0
    stats: Mapping[str, Tensor] = field(default_factory=dict)


class AbstractSampler(abc.ABC, Generic[Target]):
    """A sampler: its configuration, and transitions of chains passed in and out.

    Concrete samplers are frozen dataclasses whose fields are their settings, validated when
    built (``__post_init__``). Class attributes:

        name: the name families, configs and ``--sampler`` use.
        title: how a message names it at the start of a sentence ("Gibbs sampling", "DDIM").
        options: the settings a caller may change through :meth:`replace` (and the CLI's
            ``--steps``, ``--eta``); settings that belong to the model (a data range) are fields
            but not options.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def describe(cls) -> str:
        """The name with the options it takes, for messages: "ddim (steps, eta)"."""
        return f"{cls.name} ({', '.join(cls.options) or 'no options'})"

    def replace(self: S, **options: Any) -> S:
        """This sampler with ``options`` changed (None: unchanged), validated.

        Raises:
            ConfigError: for an option it does not declare (naming those it takes), or a value
                its settings reject.
        """
        bad = [k for k in options if k not in self.options]
        if bad:
            takes = f"it takes {', '.join(self.options)}" if self.options else "it takes no options"
            raise ConfigError(f"{self.title} takes no {_words(bad)}; {takes}.")
        given = {k: v for k, v in options.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self  # type: ignore[type-var]

    def check(self, target: Target) -> None:
        """Raise ConfigError if this sampler cannot run on ``target`` (DDIM's steps beyond T)."""

    def init(self, target: Target, x: Tensor) -> ChainState:
        """The chains at their starting states ``x`` (chains, *shape), checked against ``target``.

        Raises:
            ConfigError: when this sampler cannot run on ``target`` (:meth:`check`).
        """
        self.check(target)
        return ChainState(x.detach())

    @abc.abstractmethod
    def step(self, target: Target, state: ChainState, generator: torch.Generator | None = None) -> ChainState:
        """One transition of every chain.

        Args:
            target: what the chains sample (the same object ``init`` was given).
            state: the chains before the transition.
            generator: the random stream of the transition's draws (None: torch's global one).

        Returns:
            The chains after it, with ``i`` one higher; the input state is not changed.
        """

    @abc.abstractmethod
    def n_steps(self, target: Target) -> int:
        """The transitions :meth:`run` takes on ``target``."""

    def label(self, target: Target, state: ChainState) -> str:
        """How a figure labels ``state``: "step 20" (a diffusion: "t=1000" ... "x_0")."""
        return f"step {state.i}"

    @torch.no_grad()
    def run(self, target: Target, x: Tensor, *, generator: torch.Generator | None = None,
            keep: int = 0) -> tuple[Tensor, list[tuple[str, Tensor]]]:
        """:meth:`init` at ``x``, then :meth:`n_steps` transitions.

        Returns:
            The last states and, with ``keep`` > 0, ``keep`` evenly spaced states (label, x)
            from the start to the end (``keep`` = 1: the end), for the report's chain strip.
        """
        n = self.n_steps(target)
        marks = {n} if keep == 1 else {round(i * n / (keep - 1)) for i in range(keep)} if keep > 1 else set()
        state = self.init(target, x)
        strip = [(self.label(target, state), state.x.clone())] if 0 in marks else []
        for _ in range(n):
            state = self.step(target, state, generator)
            if state.i in marks:
                strip.append((self.label(target, state), state.x.clone()))
        return state.x, strip


def _words(names: list[str], conj: str = "or") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conj} {names[-1]}"


def _menu(samplers: Mapping[str, AbstractSampler]) -> str:
    items = [s.describe() for s in samplers.values()]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def choose_sampler(samplers: Mapping[str, AbstractSampler], name: str | None, options: Mapping[str, Any],
                   owner: str) -> AbstractSampler:
    """The sampler a request names, with its options, from the samplers a family lists.

    Args:
        samplers: the family's samplers by name, its default first, each with the family's
            settings.
        name: the sampler asked for; None: the default if it takes every option given, else
            the first sampler that does (a diffusion's ``eta`` alone chooses DDIM).
        options: settings to change (None values: unchanged).
        owner: what the samplers belong to, for messages ("RBM").

    Raises:
        ConfigError: one sentence naming ``owner``'s samplers and the options each takes, for
            an unknown name or an option the sampler (or, without a name, every sampler) does
            not take; or the sampler's own message for a value it rejects.
    """
    given = {k: v for k, v in options.items() if v is not None}
    menu = _menu(samplers)
    if name is None:
        chosen = next((s for s in samplers.values() if set(given) <= set(s.options)), None)
        if chosen is None:
            taken = set().union(*(s.options for s in samplers.values()))
            bad = [k for k in given if k not in taken]
            if bad:
                raise ConfigError(f"No sampler of this {owner} takes {_words(bad)}: it samples with {menu}; "
                                  f"leave {_words(bad, 'and')} out.")
            raise ConfigError(f"No sampler of this {owner} takes {', '.join(given)} together: it samples with "
                              f"{menu}; choose a sampler by name and give only its options.")
        return chosen.replace(**given)
    if name not in samplers:
        raise ConfigError(f"Unknown sampler {name!r} for this {owner}; choose one of: {menu}.")
    sampler = samplers[name]
    bad = [k for k in given if k not in sampler.options]
    if bad:
        others = [s.name for s in samplers.values() if s is not sampler and set(bad) <= set(s.options)]
        alt = f" or choose {_words(others)}" if others else ""
        raise ConfigError(f"{sampler.title} takes no {_words(bad)}; this {owner} samples with {menu}: "
                          f"leave {_words(bad, 'and')} out{alt}.")
    return sampler.replace(**given)


__all__ = ["AbstractSampler", "ChainState", "choose_sampler"]
