"""The whole system running for real, for the integration modules that need all of it:
the profile worker and the experiment worker (subprocesses) on the session's broker, the
SQLite online store, and Ray Serve. Each module starts its own (``running_stack``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from feature_repo.store import open_store
from infra.broker import ensure_topics
from infra.processes import stop_process
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from streamrank.demo import start_worker
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.profile import UserProfile
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore

ADMIN_KEY, WRITE_KEY, READ_KEY = "it-admin-key", "it-site-key", "it-read-key"
SITE = {"Authorization": f"Bearer {WRITE_KEY}"}  # the site's backend posting events
READER = {"Authorization": f"Bearer {READ_KEY}"}  # the site's backend asking for rankings
KEYS = {  # every scope keyed, as in production; the failure limit off (fuzzing trips it)
    "admin_keys": [ADMIN_KEY],
    "collector_write_keys": [WRITE_KEY],
    "read_keys": [READ_KEY],
    "auth_failures_per_minute": 0,
}


@dataclass
class Stack:
    settings: Settings
    url: str
    catalog: Catalog
    store: FeastProfileStore
    worker: object
    experiment_worker: object = None

    def pseudonym(self, user: str) -> str:
        """What the stack knows ``user`` by (the SDK and serving pseudonymize raw ids)."""
        return Pseudonymizer.from_settings(self.settings)(user)

    def profile(self, user: str) -> UserProfile:
        return self.store.read_profiles([self.pseudonym(user)])[self.pseudonym(user)]


@contextmanager
def running_stack(settings: Settings, dataset: Dataset) -> Iterator[Stack]:
    """Everything up on ``settings`` (their own topics, ports and home); stopped after, and
    the workers' logs checked for tracebacks."""
    from serving import app as serve_app

    prepare(settings, dataset)
    ensure_topics(settings.bootstrap(), settings.topics(), compacted=settings.compacted_topics())
    home = settings.home_dir
    running = Stack(settings, "", Catalog.load(home), FeastProfileStore(open_store(settings)), None)
    running.worker = start_worker(settings)
    running.experiment_worker = start_worker(settings, "experiment-worker")
    try:
        running.url = serve_app.start(settings, num_cpus=2)
        try:
            yield running
        finally:
            serve_app.stop()
    finally:
        stop_process(running.worker, "faust worker")  # type: ignore[arg-type]
        stop_process(running.experiment_worker, "experiment worker")  # type: ignore[arg-type]
        for name in ("worker", "experiment-worker"):
            log = (home / "logs" / f"{name}.log").read_text(errors="replace")
            assert "Traceback" not in log, log[-3000:]
