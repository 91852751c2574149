"""Processes a test started, found by the home they carry, and killed whatever happened.

Every command of this project passes ``STREAMRANK_HOME`` on to what it starts (the broker,
workers, the item process, Ray's raylet, GCS and workers), so a process with a test's home
in its environment is one that test started, however it was spawned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil


def leftovers(home: Path) -> list[str]:
    """``"pid name"`` of every process still carrying ``home`` in its environment."""
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.environ().get("STREAMRANK_HOME") == str(home):
                found.append(f"{proc.pid} {proc.name()}")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def kill_leftovers(home: Path) -> None:
    for found in leftovers(home):
        with contextlib.suppress(psutil.Error):
            psutil.Process(int(found.split()[0])).kill()


@contextlib.contextmanager
def no_leftovers_after(home: Path) -> Iterator[Path]:
    """Kill whatever still carries ``home`` when the block ends, passed or failed."""
    try:
        yield home
    finally:
        kill_leftovers(home)
