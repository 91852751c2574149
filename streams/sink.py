"""The online store as the stream's sink and as the durable copy of its state.

Writes go in batches, one store call per view per flush, never one per event. Two paths:
``direct`` hands rows to the online store itself: as Python values where the store takes
them (``RowOnlineStore``: our SQLite store, one row per entity), else as Feast value protos
built column by column for its ``online_write_batch`` (Redis); no DataFrame and no registry
lookup per call. ``push`` goes through ``FeatureStore.push`` with a DataFrame, Feast's
public ingestion API. Both write the same rows; ``bench/ingest.py`` measures one against
the other. At a live rate a batch holds few events per user, so it writes a profile for
every two events or so, and the cost of one profile row decides the worker's speed: on 2
cores ``push`` took 1.33 ms a profile, protos through ``online_write_batch`` 0.59 ms, and
Python values into one SQLite row per entity 0.11-0.16 ms (sessions 7 and 8). So ``direct``
is the default and ``push`` the option for stores we have not tuned.

Every row carries the offsets it has applied, so a row and the position in the topic that
produced it are written together, atomically per row.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import pandas as pd
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from feature_repo.definitions import (
    CHECKPOINT_VIEW,
    COVISIT_VIEW,
    POPULAR_VIEW,
    USER_PROFILE_VIEW,
    push_source_name,
)
from feature_repo.row_codec import FAST_PROTO, to_protos, values_from_protos
from streams.covisitation import CovisitRow
from streams.popularity import PartitionPopularity
from streams.profile import UserProfile

if TYPE_CHECKING:
    from streamrank.settings import Settings

log = logging.getLogger(__name__)

WritePath = Literal["direct", "push"]


@runtime_checkable
class RowOnlineStore(Protocol):
    """An online store that also takes and gives features as Python values, so no value
    proto is built either way, and gives them undecoded until asked (``read_lazy_rows``:
    ``feature_repo/sqlite_store.py``; Feast's Redis store is used through protos)."""

    def write_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        rows: Sequence[tuple[EntityKeyProto, Mapping[str, Any], datetime]],
    ) -> None: ...

    def read_lazy_rows(
        self, config: RepoConfig, table: FeatureView, entity_keys: Sequence[EntityKeyProto]
    ) -> list[tuple[float, Callable[[], dict[str, Any]]] | None]: ...


class StoredRow:
    """One entity's row as read: when it was written (epoch seconds), and the row itself,
    decoded when ``row()`` asks for it. The write time tells one write of a row from the next,
    so a reader that keeps what it derived from a row (serving's user states) compares it
    and decodes only a write it has not seen yet. A row whose store gave no write time has
    a NaN one, equal to no other: it is never taken for one seen before."""

    __slots__ = ("_decode", "_key", "written_at")

    def __init__(
        self, key: Mapping[str, Any], written_at: float, decode: Callable[[], dict[str, Any]]
    ):
        self._key = key
        self.written_at = written_at
        self._decode = decode

    def row(self) -> dict[str, Any]:
        """The entity's key columns and its features, decoded anew at each call (its
        readers ask once)."""
        row = dict(self._key)
        row.update(self._decode())
        return row


class ViewIO:
    """Batched reads and writes of one feature view's rows (dicts keyed by column)."""

    def __init__(self, store: FeatureStore, view_name: str, path: WritePath = "direct"):
        self.store = store
        self.path = path
        self.view: FeatureView = store.get_feature_view(view_name)
        self.provider = store.provider  # the online store's own batch API
        online = self.provider.online_store
        self.rows: RowOnlineStore | None = online if isinstance(online, RowOnlineStore) else None
        self.join_keys = {col.name: col.dtype.to_value_type() for col in self.view.entity_columns}
        self.features = {f.name: f.dtype.to_value_type() for f in self.view.features}
        self.ttl_s = self.view.ttl.total_seconds() if self.view.ttl else None

    def _entity_key(self, key: Mapping[str, Any]) -> EntityKeyProto:
        names = list(self.join_keys)
        values = [FAST_PROTO[self.join_keys[name]](key[name]) for name in names]
        return EntityKeyProto(join_keys=names, entity_values=values)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        now = datetime.now(UTC)
        if self.path == "push":
            frame = pd.DataFrame(list(rows))
            frame["updated_at"] = now
            self.store.push(push_source_name(self.view.name), frame, to=PushMode.ONLINE)
            return len(rows)
        if self.rows is not None:
            data = [(self._entity_key(r), r, now) for r in rows]
            self.rows.write_rows(self.store.config, self.view, data)
            return len(rows)
        columns: dict[str, list[ValueProto]] = {
            name: to_protos([r[name] for r in rows], value_type)
            for name, value_type in self.features.items()
        }
        data = [
            (
                self._entity_key(row),
                {name: protos[i] for name, protos in columns.items()},
                now,
                None,
            )
            for i, row in enumerate(rows)
        ]
        self.provider.online_write_batch(self.store.config, self.view, data, progress=None)
        return len(rows)

    def delete(self, keys: Sequence[Mapping[str, Any]]) -> int:
        """Remove the rows of ``keys`` (an erasure): our SQLite and Redis plug-ins add
        ``online_delete`` to Feast's store interface, which has no way to do it."""
        if not keys:
            return 0
        online = self.provider.online_store
        if not hasattr(online, "online_delete"):
            raise NotImplementedError(f"{type(online).__name__} cannot delete entities")
        entity_keys = [self._entity_key(k) for k in keys]
        return int(online.online_delete(self.store.config, self.view, entity_keys))

    @property
    def reads_async(self) -> bool:
        """Whether the online store has its own async read (Feast: Redis yes, SQLite no)."""
        return bool(self.provider.online_store.async_supported.read)

    def read(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
        """Rows for ``keys`` (None where absent or older than the view's TTL)."""
        return _decoded(self.read_stored(keys))

    def read_stored(self, keys: Sequence[Mapping[str, Any]]) -> list[StoredRow | None]:
        """``read``, each row decoded only when asked (``StoredRow``): lazily where the
        store gives rows undecoded (``RowOnlineStore``), else from the protos it gave."""
        if not keys:
            return []
        entity_keys = [self._entity_key(k) for k in keys]
        if self.rows is not None:
            return self._stored(
                keys, self.rows.read_lazy_rows(self.store.config, self.view, entity_keys)
            )
        results = self.provider.online_read(self.store.config, self.view, entity_keys, None)
        return self._stored(keys, _from_protos(results))

    @property
    def reads_inline(self) -> bool:
        """Whether a read by key never waits on anything but the local disk, so that an
        event loop does it itself (``EntityRowSqliteOnlineStore.READS_INLINE``)."""
        return bool(getattr(self.provider.online_store, "READS_INLINE", False))

    async def read_async(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
        return _decoded(await self.read_stored_async(keys))

    async def read_stored_async(self, keys: Sequence[Mapping[str, Any]]) -> list[StoredRow | None]:
        """``read_stored`` for an event loop: the store's async client where Feast has one;
        the read itself where it cannot block (the thread hop cost more than the read);
        else the blocking read on a thread."""
        if not keys:
            return []
        if self.reads_inline:
            return self.read_stored(keys)
        if not self.reads_async:
            return await asyncio.to_thread(self.read_stored, keys)
        entity_keys = [self._entity_key(k) for k in keys]
        results = await self.provider.online_read_async(
            self.store.config, self.view, entity_keys, None
        )
        return self._stored(keys, _from_protos(results))

    def _stored(
        self,
        keys: Sequence[Mapping[str, Any]],
        results: Sequence[tuple[float, Callable[[], dict[str, Any]]] | None],
    ) -> list[StoredRow | None]:
        """The rows found, none older than the view's TTL."""
        now, ttl = time.time(), self.ttl_s
        return [
            None
            if found is None or (ttl is not None and now - found[0] > ttl)
            else StoredRow(key, found[0], found[1])
            for key, found in zip(keys, results, strict=True)
        ]


def _decoded(rows: Sequence[StoredRow | None]) -> list[dict[str, Any] | None]:
    return [None if row is None else row.row() for row in rows]


def _from_protos(
    results: Sequence[tuple[datetime | None, dict[str, ValueProto] | None]],
) -> list[tuple[float, Callable[[], dict[str, Any]]] | None]:
    """Feast's read results as ``read_lazy_rows`` gives them (a row without a write time
    gets NaN: ``StoredRow``)."""
    return [
        None
        if protos is None
        else (
            math.nan if ts is None else ts.replace(tzinfo=ts.tzinfo or UTC).timestamp(),
            functools.partial(values_from_protos, protos),
        )
        for ts, protos in results
    ]


class FeastProfileStore:
    """The stream's state in the online store: profiles, item-side rows, checkpoints."""

    def __init__(self, store: FeatureStore, path: WritePath = "direct"):
        self.store = store
        self.profiles = ViewIO(store, USER_PROFILE_VIEW, path)
        self.popular = ViewIO(store, POPULAR_VIEW, path)
        self.covisits = ViewIO(store, COVISIT_VIEW, path)
        self.checkpoints = ViewIO(store, CHECKPOINT_VIEW, path)

    @property
    def reads_inline(self) -> bool:
        """Whether the online store's reads run to the end without waiting on anything but
        the local disk (``ViewIO.reads_inline``): no timeout can cut one short."""
        return self.profiles.reads_inline

    # --- profiles ---------------------------------------------------------------------------
    def read_profiles(self, user_ids: Sequence[str]) -> dict[str, UserProfile]:
        return _profiles(user_ids, self.profiles.read([{"user_id": u} for u in user_ids]))

    async def read_profiles_async(
        self, user_ids: Sequence[str], worker_state: bool = True
    ) -> dict[str, UserProfile]:
        """``worker_state=False``: as serving reads them (``UserProfile.from_row``)."""
        rows = _decoded(await self.read_stored_profiles_async(user_ids))
        return _profiles(user_ids, rows, worker_state)

    async def read_stored_profiles_async(self, user_ids: Sequence[str]) -> list[StoredRow | None]:
        """The stored rows themselves (None: no row), decoded only when asked: serving
        keeps what it derived from a row until the row is written again (``StoredRow``)."""
        return await self.profiles.read_stored_async([{"user_id": u} for u in user_ids])

    def write_profiles(self, profiles: Iterable[UserProfile]) -> int:
        return self.profiles.write([p.to_row() for p in profiles])

    def delete_profiles(self, user_ids: Sequence[str]) -> int:
        return self.profiles.delete([{"user_id": u} for u in user_ids])

    def replication_marks(self) -> dict[str, int]:
        """Where each replicated history of the store stands now, every write acknowledged
        so far included; empty where the store has no replicas that may lag (Redis:
        ``feature_repo/redis_store.py``)."""
        online = self.store.provider.online_store
        if hasattr(online, "replication_marks"):
            return dict(online.replication_marks(self.store.config))
        return {}

    def wait_replicated(self, marks: Mapping[str, int], timeout_s: float = 5.0) -> None:
        """Until the store's replicas hold everything up to ``marks``
        (``replication_marks``); ``ReplicationLost`` if a failover replaced a history."""
        online = self.store.provider.online_store
        if marks and hasattr(online, "wait_replicated"):
            online.wait_replicated(self.store.config, marks, timeout_s)

    # --- item side ------------------------------------------------------------------------
    def read_popularity(self, partitions: Sequence[int]) -> dict[int, PartitionPopularity]:
        return _popularity(partitions, self.popular.read([{"partition_id": p} for p in partitions]))

    async def read_popularity_async(
        self, partitions: Sequence[int]
    ) -> dict[int, PartitionPopularity]:
        rows = await self.popular.read_async([{"partition_id": p} for p in partitions])
        return _popularity(partitions, rows)

    def write_popularity(self, rows: Iterable[PartitionPopularity]) -> int:
        return self.popular.write([r.to_row() for r in rows])

    def read_covisits(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], CovisitRow]:
        return _covisits(
            keys, self.covisits.read([{"partition_id": p, "item_id": i} for p, i in keys])
        )

    async def read_covisits_async(
        self, keys: Sequence[tuple[int, str]]
    ) -> dict[tuple[int, str], CovisitRow]:
        rows = await self.covisits.read_async([{"partition_id": p, "item_id": i} for p, i in keys])
        return _covisits(keys, rows)

    def write_covisits(self, rows: Iterable[CovisitRow]) -> int:
        return self.covisits.write([r.to_row() for r in rows])

    # --- checkpoints: the last offset per partition whose effects are all written -----------
    def read_checkpoints(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: c.offset for p, c in self.read_partition_counts(partitions).items()}

    def read_partition_counts(self, partitions: Sequence[int]) -> dict[int, PartitionCounts]:
        rows = self.checkpoints.read([{"partition_id": p} for p in partitions])
        return {
            p: PartitionCounts(
                int(row["applied_offset"]),
                int(row.get("events") or 0),
                int(row.get("dead_letters") or 0),
                int(row.get("partitions") or 0),
                int(-1 if row.get("grown_from") is None else row["grown_from"]),
                int(row.get("grown_at") or 0),
            )
            if row
            else PartitionCounts()
            for p, row in zip(partitions, rows, strict=True)
        }

    def write_checkpoints(
        self, offsets: Mapping[int, int], counts: Mapping[int, PartitionCounts] | None = None
    ) -> int:
        counts = counts or {}
        rows = []
        for p, o in offsets.items():
            c = counts.get(p, PartitionCounts())
            rows.append(
                {
                    "partition_id": p,
                    "applied_offset": o,
                    "events": c.events,
                    "dead_letters": c.dead_letters,
                    "partitions": c.partitions,
                    "grown_from": c.grown_from,
                    "grown_at": c.grown_at,
                }
            )
        return self.checkpoints.write(rows)


def open_profile_store(settings: Settings) -> FeastProfileStore:
    """The live online store as the stream's sink (by name, so a child process can open it)."""
    from feature_repo.store import open_store

    return FeastProfileStore(open_store(settings), settings.write_path)


Row = dict[str, Any] | None


def _profiles(
    user_ids: Sequence[str], rows: Sequence[Row], worker_state: bool = True
) -> dict[str, UserProfile]:
    return {
        u: UserProfile.from_row(row, worker_state) if row else UserProfile(u)
        for u, row in zip(user_ids, rows, strict=True)
    }


def _popularity(partitions: Sequence[int], rows: Sequence[Row]) -> dict[int, PartitionPopularity]:
    return {
        p: PartitionPopularity.from_row(p, row) for p, row in zip(partitions, rows, strict=True)
    }


def _covisits(
    keys: Sequence[tuple[int, str]], rows: Sequence[Row]
) -> dict[tuple[int, str], CovisitRow]:
    return {(p, i): CovisitRow.from_row(p, i, row) for (p, i), row in zip(keys, rows, strict=True)}


@dataclass(frozen=True)
class PartitionCounts:
    """A partition's checkpoint and the valid events / dead letters of messages up to it,
    with where the partition stands in the topic's growth (``streams/growth.py``)."""

    offset: int = -1
    events: int = 0
    dead_letters: int = 0
    partitions: int = 0
    """The topic's partition count as of the checkpoint: the last fence folded (0: none)."""
    grown_from: int = -1
    """For a partition added by growth, the partition its users came from (-1: none)."""
    grown_at: int = 0
    """The count that added it: it is read once ``grown_from``'s ``partitions`` reach it."""

    def plus(self, events: int, dead_letters: int) -> PartitionCounts:
        return replace(
            self, events=self.events + events, dead_letters=self.dead_letters + dead_letters
        )

    def fenced(self, partitions: int) -> PartitionCounts:
        """After a fence: from here on, the partition holds the users of ``partitions``."""
        return replace(self, partitions=partitions)
