"""The one way a vocabulary table is filled: `register = registrar(TABLE)`, then
`@register("op", ...)` on each entry. Kernels, quantize handlers, bound rules, importers and
emitters all use it, keyed by the same op names."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def registrar(table: dict[str, F]) -> Callable[..., Callable[[F], F]]:
    """A decorator factory that files a function in `table` under each of its keys."""

    def register(*keys: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            for key in keys:
                table[key] = fn
            return fn

        return deco

    return register
