"""How a stream process manages memory: freed heap back to the system, and the pace of
Python's cyclic garbage collector.

Heap. A worker caches profiles and co-visitation rows and drops the least recently used ones:
with many users (101k in ``bench/ingest.py``) that is a steady churn of small objects.
glibc keeps the memory they leave in its heap instead of returning it, so the RSS grows
well past what the caches hold: 275 MB for 20k cached profiles in a measured run, 115 MB
with ``malloc_trim`` every few batches. Elsewhere (musl, macOS) this does nothing.

Collector. A batch allocates hundreds of thousands of objects (per event a pydantic model,
its dict and its field set) that all live until the batch is folded. At Python's default
pace, a young collection every 700 allocations, each is traversed in every generation and
then counted into the old one, whose full collections walk every cached profile and all
that Feast, pandas and torch keep alive: 28 % of a replay's time in a measured run
(``bench/replay.py``). The fold makes almost no reference cycles (146 unreachable objects
after 200k events folded with the collector off), so a slower pace costs no memory.

A replay process goes slower still (``replay_gc_thresholds``: a young collection per
million objects that outlive their batch): its batches are freed whole by reference counts,
it serves nothing whose latency a pause would hurt, and it lives for one replay. Paired
2-process replays ran ~10 % faster than at the worker's pace. The worker keeps its pace:
asyncio and the Kafka clients make cycles, and its memory has a budget (``bench/ingest``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Iterator

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


@contextlib.contextmanager
def gc_pace(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """Run the block with ``gc.set_threshold(*thresholds)``, then put back what was set
    (replay runs in the caller's process when it has one worker)."""
    before = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)
