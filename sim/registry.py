"""A registry per extension point, filled by a decorator next to the class; a duplicate key raises."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a key (an enum member) to an implementation.

    >>> r: Registry[type] = Registry("demo")
    >>> @r.register("x")
    ... class X: ...
    >>> r.get("x") is X
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[Hashable, T] = {}

    def register(self, key: Hashable) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"duplicate {self.kind} key {key!r}: already {self._items[key]!r}")
            self._items[key] = obj
            return obj
        return deco

    def get(self, key: Hashable) -> T:
        try:
            return self._items[key]
        except KeyError:
            raise KeyError(f"no {self.kind} registered for {key!r}; known: {sorted(map(str, self._items))}") \
                from None

    def keys(self) -> list[Hashable]:
        return list(self._items)
