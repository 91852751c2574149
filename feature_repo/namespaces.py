"""Replay namespaces: a separate copy of the stream's state that live processing never sees.

A namespace is its own Feast project (``<project>_ns_<name>``) with its own registry and,
on SQLite, its own database file under ``<home>/namespaces/<name>/``. Nothing the live
worker or serving opens can reach it, and deleting it cannot touch live rows: Feast's SQLite
teardown removes the whole database file, which is why a namespace never shares the live
one. On Redis the project name is part of every key, and Feast's teardown deletes the keys
of that project only.

``manifest.json`` in the same folder records what the namespace holds (the replayed range
and offsets, the counts) and whether the replay that fills it has finished.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import UTC, datetime

from feast import FeatureStore
from pydantic import BaseModel, Field

from feature_repo.store import apply_repo, open_store
from streamrank.settings import Settings

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")
MANIFEST = "manifest.json"


class ReplayRange(BaseModel):
    """What a replay reads: per partition, offsets ``start`` (inclusive) to ``stop``;
    ``first`` is where the log began then (a range from there holds every user's history)."""

    topic: str
    start_time: float | None
    end_time: float
    first: dict[int, int]
    start: dict[int, int]
    stop: dict[int, int]
    methods: dict[int, str] = Field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(self.stop[p] - self.start[p] for p in self.start)

    @property
    def from_log_start(self) -> bool:
        return all(self.start[p] <= self.first[p] for p in self.start)


class Manifest(BaseModel):
    namespace: str
    range: ReplayRange
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    events: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    profiles_only: bool = False  # no item rows (popularity, co-visitation) were replayed

    @property
    def complete(self) -> bool:
        return self.finished_at is not None


class Namespace:
    def __init__(self, settings: Settings, name: str):
        if not NAME.match(name):
            raise ValueError(
                f"namespace {name!r}: use 1-40 lower-case letters, digits or '_', "
                "starting with a letter or digit"
            )
        self.settings = settings
        self.name = name
        self.root = settings.home_dir / "namespaces" / name
        self.project = f"{settings.feast_project}_ns_{name}"

    @property
    def exists(self) -> bool:
        return (self.root / MANIFEST).is_file()

    def create(self, manifest: Manifest) -> FeatureStore:
        self.root.mkdir(parents=True, exist_ok=True)
        store = apply_repo(self.settings, self.project, self.root)
        self.save(manifest)
        return store

    def open_store(self) -> FeatureStore:
        return open_store(self.settings, self.project, self.root)

    def manifest(self) -> Manifest:
        return Manifest.model_validate_json((self.root / MANIFEST).read_text())

    def finished(self) -> Manifest | None:
        """The manifest of a replay that has run to its end; None when there is none yet."""
        if not self.exists:
            return None
        manifest = self.manifest()
        return manifest if manifest.complete else None

    def save(self, manifest: Manifest) -> None:
        tmp = self.root / f"{MANIFEST}.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(self.root / MANIFEST)  # atomic: a crash leaves the old or the new one

    def delete(self) -> None:
        """Remove the namespace's online rows (Feast teardown) and its folder."""
        if (self.root / "registry.db").exists():
            self.open_store().teardown()
        shutil.rmtree(self.root, ignore_errors=True)
        log.info("namespace %s deleted", self.name)


def list_namespaces(settings: Settings) -> list[Manifest]:
    root = settings.home_dir / "namespaces"
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if NAME.match(folder.name) and (folder / MANIFEST).is_file():
            found.append(Namespace(settings, folder.name).manifest())
    return found
