"""Feast's SQLite online store, with one row per entity instead of one per feature.

Feast's own ``SqliteOnlineStore`` keeps a row per (entity, feature), each value a
serialized ``Value`` proto. A profile has about 50 features, so writing one cost 50
protos, 50 serializations and 50 upserts: 0.6-0.7 ms a profile on 2 cores, which at a live
rate (a profile written for every one or two events) capped the worker below 3k events/s.
This plug-in stores each entity's features of a view as one row (``row_codec.py``):

* ``write_rows`` / ``read_rows`` take and give the features as Python values, so the
  stream (``streams/sink.py``) builds no proto at all. A profile now costs a tenth;
  ``read_lazy_rows`` gives each row's write time and decodes its features only when
  asked (serving decodes a profile row only when it was written since its last look);
* Feast's interface works on the same rows: ``online_write_batch`` (materialization,
  ``push``), ``online_read`` (``get_online_features``), ``update`` (``feast apply``, which
  creates the tables) and ``teardown`` (deletes the file);
* ``online_delete`` removes entities' rows (an erased user), which Feast's interface lacks;
* rows of entities not written for longer than the view's TTL are deleted (hourly, with
  the writes): Feast only hides them on read, so a user who left would stay in the file;
* a table in Feast's own layout (written by an earlier version) is converted at apply;
* the database runs in WAL mode with ``synchronous=NORMAL``: readers (the serving
  replicas) no longer block the writer or wait for it, and a commit costs no fsync. A
  committed transaction survives a crash of any process; only an OS crash or power loss
  can take back the last commits, and the stream's checkpoints are rows of the same
  database, so they go back together with the rows they cover.

It implements Feast's public ``OnlineStore`` interface and owns its connection (no private
part of Feast's own SQLite store is used); its configuration is Feast's
``SqliteOnlineStoreConfig``. Vector search (``vector_enabled``) needs Feast's layout: such a
config is refused at apply.
``feature_store.yaml`` selects this store by class path (``type: feature_repo.sqlite_store.
EntityRowSqliteOnlineStore``), Feast's documented way to plug in an online store.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from feast import Entity, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import make_tzaware
from feast.value_type import ValueType

from feature_repo.row_codec import RowCodec, check_types, protos_from_values, values_from_protos

STORE_TYPE = "feature_repo.sqlite_store.EntityRowSqliteOnlineStore"


class EntityRowSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["feature_repo.sqlite_store.EntityRowSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


PURGE_EVERY_S = 3600.0
READ_CHUNK = 5000  # keys per SELECT, well under SQLite's limit on bound parameters
Values = Mapping[str, Any]


def db_path(config: RepoConfig) -> Path:
    """The database file: ``path`` of the config, relative to the repository if not absolute."""
    path = Path(config.online_store.path)
    return path if path.is_absolute() or not config.repo_path else config.repo_path / path


class EntityRowSqliteOnlineStore(OnlineStore):
    READS_INLINE = True
    """A read never waits for a writer (WAL) and reads a few rows of a local file by
    primary key, tens of microseconds: an event loop reads directly (``streams/sink.py``)
    rather than pay a thread hop that cost more than the read (py-spy of a serving replica)."""

    def __init__(self) -> None:
        super().__init__()
        self._conn: sqlite3.Connection | None = None
        self._purged_at: dict[str, float] = {}

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        if self._conn is None:
            path = db_path(config)
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False)  # one per process, locked
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")  # a second writer waits, not fails
            self._conn = conn
        return self._conn

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        """``feast teardown``: the database file goes, with its WAL."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{db_path(config)}{suffix}")

    # --- feast apply ---------------------------------------------------------------------------
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        store_config = config.online_store
        if store_config.vector_enabled or getattr(
            store_config, "enable_openai_compatible_store", False
        ):
            raise ValueError("vector search needs Feast's stock 'sqlite' online store")
        conn = self._get_conn(config)
        for table in tables_to_keep:
            check_types(table.name, _types(table))
            name = _table_id(config, table)
            with conn:
                conn.execute("BEGIN IMMEDIATE")  # DDL included: a crash leaves things as they were
                legacy = "feature_name" in _columns(conn, name)
                if legacy:
                    conn.execute(f'ALTER TABLE "{name}" RENAME TO "{name}__feast_layout"')
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" '
                    "(entity_key BLOB PRIMARY KEY, features BLOB NOT NULL, event_ts REAL NOT NULL)"
                )
                if legacy:
                    _convert_feast_layout(conn, f"{name}__feast_layout", name, table)
        for table in tables_to_delete:
            with conn:
                conn.execute(f'DROP TABLE IF EXISTS "{_table_id(config, table)}"')

    # --- writes ----------------------------------------------------------------------------------
    def write_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        rows: Sequence[tuple[EntityKeyProto, Values, datetime]],
    ) -> None:
        """Upsert entities' features given as Python values (the stream's write path)."""
        encode = _codec(table).encode
        encoded = [(_key(config, k), encode(v), ts.timestamp()) for k, v, ts in rows]
        self._upsert(config, table, encoded)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's write (materialization, ``push``): protos in, the same rows stored."""
        self.write_rows(
            config,
            table,
            [(key, values_from_protos(protos), make_tzaware(ts)) for key, protos, ts, _ in data],
        )
        if progress:
            progress(len(data))

    def _upsert(
        self, config: RepoConfig, table: FeatureView, rows: list[tuple[bytes, bytes, float]]
    ) -> None:
        conn = self._get_conn(config)
        name = _table_id(config, table)
        with conn:
            conn.executemany(
                f'INSERT INTO "{name}" (entity_key, features, event_ts) VALUES (?, ?, ?) '
                "ON CONFLICT(entity_key) DO UPDATE SET "
                "features = excluded.features, event_ts = excluded.event_ts",
                rows,
            )
        if time.monotonic() - self._purged_at.get(name, -PURGE_EVERY_S) >= PURGE_EVERY_S:
            self.purge_expired(config, table)
            self._purged_at[name] = time.monotonic()

    # --- reads -----------------------------------------------------------------------------------
    def read_rows(
        self, config: RepoConfig, table: FeatureView, entity_keys: Sequence[EntityKeyProto]
    ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        """Entities' features as Python values, with their write time; (None, None) where
        the store has no row (the stream's read path)."""
        return [
            (None, None) if row is None else (datetime.fromtimestamp(row[0], UTC), row[1]())
            for row in self.read_lazy_rows(config, table, entity_keys)
        ]

    def read_lazy_rows(
        self, config: RepoConfig, table: FeatureView, entity_keys: Sequence[EntityKeyProto]
    ) -> list[tuple[float, Callable[[], dict[str, Any]]] | None]:
        """Entities' rows as (write time in epoch seconds, what decodes the features),
        None where the store has no row. A reader that keeps what it derived from a row
        until the row is written again (serving's user states) then decodes only a write
        it has not seen: a profile's ~5 KB took three times as long to decode as to read."""
        conn = self._get_conn(config)
        name = _table_id(config, table)
        keys = [_key(config, k) for k in entity_keys]
        found: dict[bytes, tuple[bytes, float]] = {}
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (
                f'SELECT entity_key, features, event_ts FROM "{name}" WHERE entity_key IN ({marks})'
            )
            found.update((key, (blob, ts)) for key, blob, ts in conn.execute(query, chunk))
        decode = _codec(table).decode
        out: list[tuple[float, Callable[[], dict[str, Any]]] | None] = []
        for key in keys:
            hit = found.get(key)
            out.append(None if hit is None else (hit[1], functools.partial(decode, hit[0])))
        return out

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's read (``get_online_features``): the same rows, as protos."""
        types = _types(table)
        if requested_features:
            types = {n: t for n, t in types.items() if n in requested_features}
        return [
            (ts, None if values is None else protos_from_values(values, types))
            for ts, values in self.read_rows(config, table, entity_keys)
        ]

    # --- deletes -------------------------------------------------------------------------------
    def online_delete(
        self, config: RepoConfig, table: FeatureView, entity_keys: list[EntityKeyProto]
    ) -> int:
        """Delete the rows of ``entity_keys`` in ``table``'s view; returns rows deleted."""
        if not entity_keys:
            return 0
        name = _table_id(config, table)
        with self._get_conn(config) as conn:
            before = conn.total_changes
            conn.executemany(
                f'DELETE FROM "{name}" WHERE entity_key = ?',
                [(_key(config, k),) for k in entity_keys],
            )
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
        cutoff = ((now or datetime.now(UTC)) - table.ttl).timestamp()
        with self._get_conn(config) as conn:
            query = f'DELETE FROM "{_table_id(config, table)}" WHERE event_ts < ?'
            return conn.execute(query, (cutoff,)).rowcount


def _table_id(config: RepoConfig, table: FeatureView) -> str:
    return compute_table_id(
        config.project, table, config.registry.enable_online_feature_view_versioning
    )


def _types(table: FeatureView) -> dict[str, ValueType]:
    return {f.name: f.dtype.to_value_type() for f in table.features}


def _codec(table: FeatureView) -> RowCodec:
    """The view's row codec, made once per view object: making one (each feature's Feast
    type converted) costs more than a read, and the callers hold their view objects, so
    the object's identity is the cheapest key (a tuple of its schema, hashed, cost a tenth
    of a profile read)."""
    kept = _CODECS.get(id(table))
    if kept is not None and kept[0] is table:
        return kept[1]
    codec = RowCodec(_types(table))
    if len(_CODECS) > 64:
        _CODECS.clear()
    _CODECS[id(table)] = (table, codec)
    return codec


_CODECS: dict[int, tuple[FeatureView, RowCodec]] = {}
"""Codecs by the view object they were made for (kept alive here, so its id is not
reused while its entry stands)."""


def _key(config: RepoConfig, entity_key: EntityKeyProto) -> bytes:
    """Feast's own key bytes for the entity (what its materialization writes), kept for
    the entities read again and again: Feast builds them in Python, byte by byte."""
    return _key_of(
        entity_key.SerializeToString(deterministic=True), config.entity_key_serialization_version
    )


@functools.lru_cache(maxsize=50_000)
def _key_of(proto: bytes, version: int) -> bytes:
    return serialize_entity_key(
        EntityKeyProto.FromString(proto), entity_key_serialization_version=version
    )


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _convert_feast_layout(
    conn: sqlite3.Connection, legacy: str, name: str, table: FeatureView
) -> None:
    """Rewrite a table of Feast's layout (a row per feature) as rows per entity, each
    entity keeping its newest write time; then drop it (inside ``update``'s transaction)."""
    encode = RowCodec(_types(table)).encode
    rows = conn.execute(
        f'SELECT entity_key, feature_name, value, event_ts FROM "{legacy}" ORDER BY entity_key'
    )
    converted = []
    for key, group in itertools.groupby(rows, key=itemgetter(0)):
        protos: dict[str, ValueProto] = {}
        written = 0.0
        for _, feature, blob, ts in group:
            protos[feature] = ValueProto.FromString(blob)
            written = max(written, _epoch(ts))
        converted.append((key, encode(values_from_protos(protos)), written))
    conn.executemany(
        f'INSERT INTO "{name}" (entity_key, features, event_ts) VALUES (?, ?, ?)', converted
    )
    conn.execute(f'DROP TABLE "{legacy}"')


def _epoch(ts: Any) -> float:
    """Feast's SQLite store writes times as naive UTC datetimes (read back as such) or, in
    some versions, as epoch numbers."""
    if isinstance(ts, datetime):
        return make_tzaware(ts).timestamp()
    if isinstance(ts, str | bytes):
        text = ts.decode() if isinstance(ts, bytes) else ts
        return make_tzaware(datetime.fromisoformat(text)).timestamp()
    return float(ts or 0.0)
