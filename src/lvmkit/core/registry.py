"""One registry type maps names from config files and the CLI to components.

Names are resolved once, at the edge (config -> objects); model code receives objects.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from lvmkit.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories, e.g. ``REGULARIZERS.get("kl")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"Unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
