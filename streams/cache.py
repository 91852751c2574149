"""Bounded caches of store rows: the worker's profiles and co-visitation rows."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from streams.store_errors import retry_store

K = TypeVar("K")
V = TypeVar("V")


def touch_or_load(
    cache: OrderedDict[K, V],
    keys: Iterable[K],
    read: Callable[[list[K]], Mapping[K, V]],
    what: str,
) -> None:
    """Mark cached ``keys`` as recently used; read the missing ones in one store call."""
    wanted = set(keys)
    for key in wanted & cache.keys():
        cache.move_to_end(key)
    missing = sorted(wanted - cache.keys())  # type: ignore[type-var]
    if missing:
        cache.update(retry_store(lambda: read(missing), what))
