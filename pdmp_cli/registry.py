"""Name -> builder registries (timm-style): adding a component is adding one file.

Each family (encoders, fusions, methods, datasets) owns one :class:`Registry`. A module
registers with a decorator; importing the family's package imports every module in it.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from pdmp_cli.errors import PdmpError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise PdmpError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}",
                exit_code=2,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
