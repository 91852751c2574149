"""Waiting in a test for something another process does, with a bound and a message."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(
    check: Callable[[], object], within_s: float, message: str, poll_s: float = 0.05
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, message
        time.sleep(poll_s)
    return time.monotonic() - started
