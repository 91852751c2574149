"""Freed heap memory goes back to the system (glibc), which bounds a worker's RSS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streams.memory import HeapTrimmer


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trimming_returns_the_memory_of_dropped_cache_entries() -> None:
    """In a fresh interpreter: build and drop ~300 MB of heap objects (as evicted
    profiles' lists, dicts and arrays are), then trim: the RSS must fall by over 100 MB
    (without the trim it stays)."""
    script = textwrap.dedent(
        """
        import gc, psutil
        from streams.memory import HeapTrimmer
        rss = lambda: psutil.Process().memory_info().rss / 2**20
        # each entry's list is over pymalloc's 512 bytes, so from malloc's heap
        cache = [[0.0] * (100 + i % 50) for i in range(300_000)]
        keep = cache[::1000]  # a few survivors pin some pages, as cached profiles do
        del cache
        gc.collect()
        before = rss()
        HeapTrimmer(every_s=0)()
        print(before, rss())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    before, after = map(float, out.split())
    assert before - after > 100, (before, after)  # MB


def test_it_trims_at_most_once_per_interval() -> None:
    calls: list[int] = []
    trimmer = HeapTrimmer(every_s=3600)
    trimmer._trim = calls.append  # count the calls, not the effect (tested above)
    trimmer._last = -float("inf")
    trimmer()
    trimmer()
    assert calls == [0]
