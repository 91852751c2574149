"""The item side of the stream's state: popularity and co-visitation rows, and the
partitions' checkpoints, fed with the item effects of messages whose profiles are written.

Split from the profiles (``streams/state.py``) so that it can run beside them in a process
of its own (``streams/item_process.py``): the two halves then use two cores, and the
profile half never waits for the item rows, which are the larger write. Both halves keep
the exactly-once rule of ``streams/state.py``:

* the profile half writes a batch's profiles first, each with the item effects the item
  rows may not hold yet (its outbox), and only then hands the effects over (``add``), with
  the offsets its written profiles now cover;
* this half applies them in order; a row skips the effects of messages it already holds
  (its applied offset), so the effects that a crash makes the profile half send again
  count once;
* every ``flush_s`` it writes the changed item rows and then the checkpoints of the
  offsets covered, so a checkpoint never runs ahead of a row or a profile it covers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from feature_repo.redis_store import ReplicationLost
from streams.cache import touch_or_load
from streams.covisitation import CovisitRow
from streams.outbox import ItemEffect
from streams.popularity import PartitionPopularity, add_popularity, trim
from streams.profile import TYPE_WEIGHTS
from streams.sink import FeastProfileStore, PartitionCounts
from streams.store_errors import retry_store

WRITE_CHUNK_ROWS = 500
"""Co-visitation rows per store call: on SQLite each call is one transaction, so the
profile writer of another process waits for at most one chunk, not a whole flush."""


class ItemSide(Protocol):
    """What the profile half needs from the item half, in the worker or beside it."""

    def load(self, counts: Mapping[int, PartitionCounts]) -> None:
        """Partitions newly owned, with their stored checkpoints."""

    def add(
        self,
        effects: Sequence[ItemEffect],
        covered: Mapping[int, int],
        counts: Mapping[int, PartitionCounts],
    ) -> None:
        """Effects of messages whose profiles are written, up to ``covered`` per partition
        (``counts``: valid events and dead letters up to there). Writes when due."""

    def flush(self, force: bool = False) -> None:
        """Write item rows and checkpoints if due (``force``: now, and wait)."""

    def written(self) -> Mapping[int, int]:
        """Per partition, the offset up to which item rows and checkpoint are written."""

    def forget(self, partitions: Iterable[int] | None) -> None:
        """Drop the partitions' cached rows, written or not (a rebalance); returns once no
        write for them can follow."""

    def close(self) -> None: ...


class ItemRows:
    """The item half in the calling process (replay, tests, or inside the item process)."""

    def __init__(
        self,
        store: FeastProfileStore,
        max_covisits: int = 50_000,
        flush_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.max_covisits = max_covisits
        self.flush_s = flush_s
        self.clock = clock
        self.popularity: dict[int, PartitionPopularity] = {}
        self.covisits: OrderedDict[tuple[int, str], CovisitRow] = OrderedDict()
        self._written: dict[int, int] = {}  # item rows and checkpoint hold every effect to here
        self._covered: dict[int, int] = {}  # profiles written to here, their effects received
        self._counts: dict[int, PartitionCounts] = {}
        self._dirty_partitions: set[int] = set()
        self._dirty_covisits: set[tuple[int, str]] = set()
        self._flushed_at = -float("inf")
        self._histories: frozenset[str] | None = None
        """The store's replication histories as of the last checkpoint (or the first
        partitions owned): one that changes since means a failover (``_checkpoint``)."""

    # --- the ItemSide interface -------------------------------------------------------------
    def load(self, counts: Mapping[int, PartitionCounts]) -> None:
        if self._histories is None:
            marks = retry_store(self.store.replication_marks, "reading the store's replication")
            self._histories = frozenset(marks)
        missing = sorted(p for p in counts if p not in self.popularity)
        if not missing:
            return
        popularity = retry_store(lambda: self.store.read_popularity(missing), "reading popularity")
        self.popularity.update(popularity)
        for p in missing:
            self._written[p] = self._covered[p] = counts[p].offset
            self._counts[p] = counts[p]

    def add(
        self,
        effects: Sequence[ItemEffect],
        covered: Mapping[int, int],
        counts: Mapping[int, PartitionCounts],
    ) -> None:
        self._apply(effects)
        for p, offset in covered.items():
            if offset > self._covered.get(p, -1):
                self._covered[p] = offset
                self._counts[p] = counts[p]
        crowded = len(self._dirty_covisits) > self.max_covisits // 2  # dirty rows stay cached
        if crowded or self.due():
            self._write()

    def flush(self, force: bool = False) -> None:
        if force or self.due():
            self._write()

    def written(self) -> Mapping[int, int]:
        return self._written

    def forget(self, partitions: Iterable[int] | None) -> None:
        """Unwritten rows of dropped partitions are dropped too: the next owner rewinds to
        the checkpoint and rebuilds them from the profiles' outboxes."""
        dropped = set(self.popularity) if partitions is None else set(partitions)
        for part in dropped:
            for table in (self.popularity, self._written, self._covered, self._counts):
                table.pop(part, None)  # type: ignore[attr-defined]
        self._dirty_partitions -= dropped
        self._dirty_covisits = {k for k in self._dirty_covisits if k[0] not in dropped}
        self.covisits = OrderedDict((k, v) for k, v in self.covisits.items() if k[0] not in dropped)

    def close(self) -> None:
        pass

    # --- inside -----------------------------------------------------------------------------
    def pending(self) -> bool:
        return bool(
            self._dirty_partitions
            or self._dirty_covisits
            or any(o > self._written.get(p, -1) for p, o in self._covered.items())
        )

    def due(self) -> bool:
        return self.pending() and self.clock() - self._flushed_at >= self.flush_s

    def _apply(self, effects: Sequence[ItemEffect]) -> None:
        """Popularity and co-visitation rows, in order; a row skips the effects of messages
        it already holds (its applied offset), except those this call has just added."""
        touch_or_load(
            self.covisits,
            ((e.partition, a) for e in effects for a in e.anchors),
            self.store.read_covisits,
            "reading co-visits",
        )
        moved_partitions: set[int] = set()
        moved_rows: set[tuple[int, str]] = set()
        for e in effects:
            pop = self.popularity[e.partition]
            if e.offset > pop.applied_offset or (
                e.offset == pop.applied_offset and e.partition in moved_partitions
            ):
                add_popularity(pop, e.event_type, e.item_id, e.ts)
                pop.applied_offset = e.offset
                moved_partitions.add(e.partition)
            weight = TYPE_WEIGHTS[e.event_type]
            for anchor in e.anchors:
                key = (e.partition, anchor)
                row = self.covisits[key]
                if e.offset > row.applied_offset or (
                    e.offset == row.applied_offset and key in moved_rows
                ):
                    row.add(e.item_id, weight, e.ts)
                    row.applied_offset = e.offset
                    moved_rows.add(key)
        self._dirty_partitions |= moved_partitions
        self._dirty_covisits |= moved_rows

    def _write(self) -> None:
        """Item rows, then the checkpoints they and the written profiles now cover."""
        parts = [self.popularity[p] for p in sorted(self._dirty_partitions)]
        for part in parts:
            trim(part)
        retry_store(lambda: self.store.write_popularity(parts), "writing popularity")
        dirty = sorted(self._dirty_covisits)
        for start in range(0, len(dirty), WRITE_CHUNK_ROWS):
            rows = [self.covisits[k] for k in dirty[start : start + WRITE_CHUNK_ROWS]]
            retry_store(lambda rows=rows: self.store.write_covisits(rows), "writing co-visits")
        self._dirty_partitions.clear()
        self._dirty_covisits.clear()
        checkpoints = {p: o for p, o in self._covered.items() if o > self._written.get(p, -1)}
        if checkpoints:
            self._checkpoint(checkpoints)
        self._flushed_at = self.clock()
        self._evict()

    def _checkpoint(self, checkpoints: Mapping[int, int]) -> None:
        """Checkpoints written once the store's replicas hold every row they cover.

        With replicas (Redis), a master's crash must not take rows with it that a
        surviving checkpoint covers: each master's replication offset, read now, includes
        every row written so far, and the replicas must reach it first. A failover since
        the last checkpoint, or during the wait, shows as a new history (the promoted
        replica's): rows may be gone, so ``ReplicationLost`` instead, and the worker
        rewinds to the checkpoints (exits to restart from them, ``streams/app.py``)."""
        counts = {p: self._counts[p] for p in checkpoints}
        marks = retry_store(self.store.replication_marks, "reading the store's replication")
        if self._histories is not None and frozenset(marks) != self._histories:
            raise ReplicationLost(
                f"the store's replication histories changed since the last checkpoint "
                f"({sorted(self._histories)} -> {sorted(marks)}): a failover or a restart "
                "may have lost rows"
            )
        retry_store(lambda: self.store.wait_replicated(marks), "waiting for the store's replicas")
        retry_store(
            lambda: self.store.write_checkpoints(checkpoints, counts), "writing checkpoints"
        )
        self._written.update(checkpoints)
        self._histories = frozenset(marks)

    def _evict(self) -> None:
        """Drop the least recently used clean rows beyond the cap."""
        excess = len(self.covisits) - self.max_covisits
        if excess > 0:
            clean = [k for k in self.covisits if k not in self._dirty_covisits][:excess]
            for key in clean:
                del self.covisits[key]
