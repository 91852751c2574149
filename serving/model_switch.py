"""Serving follows the model registry: a promoted version replaces the one in memory, in
place, with no restart and no failed request.

Each replica polls the registry (``training/registry.py``: one small file read every
``model_poll_s``). When the serving version changed, it loads the new model on its own
thread, at a low CPU priority, while requests go on with the old one, then swaps one
reference; a request keeps the model it started with to its end. A version that fails to
load is logged and counted once, and the old one keeps serving.

Why polling and not a Serve ``user_config`` update: a lightweight update needs the whole
application graph redeployed from the promoting machine with arguments equal to the
running ones, or Serve restarts every replica. Polling is how TF Serving and Triton follow
a model repository: every replica of every deployment, on any host that sees the models
directory, converges within one interval, and a replica started later reads the same
answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serving import metrics
from streamrank.settings import Settings
from training.registry import ModelRegistry

log = logging.getLogger(__name__)

LOAD_NICENESS = 10  # the load must not take the CPU from requests on a small machine


class RegistryFollower:
    """Calls ``switch(directory)`` (None: no model) whenever the serving version changes."""

    def __init__(
        self,
        settings: Settings,
        current: Path | None,
        switch: Callable[[Path | None], None],
    ):
        self.registry = ModelRegistry(settings.home_dir)
        self.poll_s = settings.model_poll_s
        self.current = None if current is None else current.name
        self.switch = switch
        self.failed: set[str | None] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RegistryFollower:
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
        while not self._stop.wait(self.poll_s):
            self.check()

    def check(self) -> bool:
        """One poll: switch if the registry names another version. True when it switched."""
        try:
            wanted = self.registry.serving()
        except (OSError, ValueError) as exc:  # a registry being written or unreadable
            log.warning("model registry unreadable (%r): serving %s", exc, self.current)
            return False
        if wanted == self.current or wanted in self.failed:
            return False
        started = time.monotonic()
        try:
            self.switch(None if wanted is None else self.registry.root / wanted)
        except Exception:
            log.exception("model %s failed to load: still serving %s", wanted, self.current)
            self.failed.add(wanted)
            metrics.MODEL_SWITCHES.labels("failed").inc()
            return False
        seconds = time.monotonic() - started
        log.info("now serving %s, was %s (loaded in %.1fs)", wanted, self.current, seconds)
        metrics.MODEL_SWITCHES.labels("switched").inc()
        metrics.MODEL_LOAD_SECONDS.observe(seconds)
        self.current = wanted
        return True
