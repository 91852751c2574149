"""Feast's SQLite online store, with batch writes that are one statement per batch.

Feast's own ``SqliteOnlineStore.online_write_batch`` runs one ``INSERT ... ON CONFLICT``
per feature per entity from a Python loop. A profile has about 50 features, so a flush of
a few thousand profiles was a few hundred thousand ``execute`` calls: the single largest
cost of the worker (``bench/ingest.py``). This plug-in keeps Feast's table layout and
everything else (reads, ``feast apply``, materialization, teardown) and changes two things:

* writes build every row first and hand them to one ``executemany`` in one transaction;
* ``online_delete`` removes entities' rows (an erased user), which Feast's interface lacks;
* rows of entities not written for longer than the view's TTL are deleted (hourly, with
  the writes): Feast only hides them on read, so a user who left would stay in the file;
* the database runs in WAL mode with ``synchronous=NORMAL``: readers (the serving
  replicas) no longer block the writer or wait for it, and a commit costs no fsync. A
  committed transaction survives a crash of any process; only an OS crash or power loss
  can take back the last commits, and the stream's checkpoints are rows of the same
  database, so they go back together with the rows they cover.

``feature_store.yaml`` selects it by its class path (``type: feature_repo.sqlite_store.
BatchedSqliteOnlineStore``), Feast's documented way to plug in an online store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id, extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

STORE_TYPE = "feature_repo.sqlite_store.BatchedSqliteOnlineStore"


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["feature_repo.sqlite_store.BatchedSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


PURGE_EVERY_S = 3600.0


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    _purged_at: dict[str, float]

    def __init__(self) -> None:
        super().__init__()
        self._purged_at = {}

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")  # a second writer waits, not fails
        return conn

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        store_config = config.online_store
        if store_config.vector_enabled or getattr(
            store_config, "enable_openai_compatible_store", False
        ):
            # extra columns (vectors, numbers for filters): Feast's own row-by-row path
            super().online_write_batch(config, table, data, progress)
            return
        conn = self._get_conn(config)
        name = compute_table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, event_ts, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            event_ts = to_naive_utc(event_ts)
            created = to_naive_utc(created_ts) if created_ts is not None else None
            for feature, value in values.items():
                text = extract_text_and_num(value, False)[0]
                rows.append((key, feature, value.SerializeToString(), text, event_ts, created))
        sql = (
            f'INSERT INTO "{name}" '
            "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        with conn:
            conn.executemany(sql, rows)
        if progress:
            progress(len(data))
        if time.monotonic() - self._purged_at.get(name, -PURGE_EVERY_S) >= PURGE_EVERY_S:
            self.purge_expired(config, table)
            self._purged_at[name] = time.monotonic()

    def online_delete(
        self, config: RepoConfig, table: FeatureView, entity_keys: list[EntityKeyProto]
    ) -> int:
        """Delete every row of ``entity_keys`` in ``table``'s view; returns rows deleted."""
        if not entity_keys:
            return 0
        name = compute_table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        version = config.entity_key_serialization_version
        keys = [
            (serialize_entity_key(k, entity_key_serialization_version=version),)
            for k in entity_keys
        ]
        with self._get_conn(config) as conn:
            before = conn.total_changes
            conn.executemany(f'DELETE FROM "{name}" WHERE entity_key = ?', keys)
            return conn.total_changes - before

    def purge_expired(
        self, config: RepoConfig, table: FeatureView, now: datetime | None = None
    ) -> int:
        """Delete the rows of entities not written for longer than the view's TTL.

        Feast only hides such rows on read; on SQLite they would stay on disk for ever, so
        a user who left would still be in the file. Redis expires its keys itself
        (``key_ttl_seconds``). Runs with the writes, at most every ``PURGE_EVERY_S``."""
        if not table.ttl:
            return 0
        name = compute_table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        cutoff = to_naive_utc((now or datetime.now(UTC)) - table.ttl)
        with self._get_conn(config) as conn:
            return conn.execute(f'DELETE FROM "{name}" WHERE event_ts < ?', (cutoff,)).rowcount
