"""Giving freed heap memory back to the operating system.

A worker caches profiles and co-visitation rows and drops the least recently used ones:
with many users (101k in ``bench/ingest.py``) that is a steady churn of small objects.
glibc keeps the memory they leave in its heap instead of returning it, so the RSS grows
well past what the caches hold: 275 MB for 20k cached profiles in a measured run, 115 MB
with ``malloc_trim`` every few batches. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)

TRIM_EVERY_S = 10.0


class HeapTrimmer:
    """``malloc_trim(0)`` at most every ``every_s`` seconds (it walks the heap: ~ms)."""

    def __init__(self, every_s: float = TRIM_EVERY_S):
        self.every_s = every_s
        self._last = time.monotonic()
        self._trim = _malloc_trim()

    def __call__(self) -> None:
        if self._trim is None or time.monotonic() - self._last < self.every_s:
            return
        self._trim(0)
        self._last = time.monotonic()


def _malloc_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        log.debug("no malloc_trim in %s", name)
        return None
