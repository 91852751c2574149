"""Freed heap memory goes back to the system (glibc), which bounds a worker's RSS; the
collector's pace is set for a block and put back."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest

from streamrank.settings import Settings
from streams.memory import HeapTrimmer, gc_pace


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


def test_gc_pace_holds_inside_the_block_and_is_put_back_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), gc_pace((50_000, 20, 100)):
        assert gc.get_threshold() == (50_000, 20, 100)
        raise RuntimeError("the block failed")
    assert gc.get_threshold() == before


def test_the_pace_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRANK_GC_THRESHOLDS", "[700,10,10]")
    assert Settings().gc_thresholds == (700, 10, 10)
