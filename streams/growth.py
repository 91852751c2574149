"""Growing the user-partitioned topics (``events``, ``impressions``, ``privacy``) while the
producers, workers and serving run, with nothing lost, nothing counted twice, and each
user's events folded in order across the change.

Kafka's default partitioner puts a user on ``murmur2(user) % N``. A count is only raised to
a multiple of the current one, so a user can only move from partition ``p`` to some
``q = p + k·N`` (its *parent* is ``q mod N``), never between old partitions.

What follows the new count, without a restart, within ``topic_metadata_refresh_s``:
producers (``EventProducer`` re-reads the count; key-partitioned producers, impressions and
consent requests, through librdkafka's metadata refresh), the profile workers (Faust's
consumer sees the new partitions and the group rebalances onto them; records Faust drops
during that rebalance are sought back to by ``streams/stalls.py``) and serving
(``PartitionCount``: item rows are summed over the current partitions).

Order, by a fence per old partition (``grow_topics``):
1. each new partition's checkpoint row names its parent and the count that added it;
2. the partitions are added; producers move the users who change partition to it;
3. once every producer has re-read the count (``topic_metadata_refresh_s`` and a margin),
   a *fence* message (no events; header ``streamrank-fence``: the new count) goes to every
   old partition. Every event of a moved user sent before the move is before its
   partition's fence, every later one is on the new partition;
4. a worker holds a new partition's messages (``PartitionGates``) until its parent's
   checkpoint has passed the fence (read from the parent's row, or from this worker's
   own state when it folds the parent too). The moved users' profiles are then complete
   up to the move, and the new partition's owner reads them from the store;
5. an event of a moved user that still reaches the old partition after its fence (a
   producer that was cut off longer than the margin) is forwarded to the user's partition
   instead of folded there: folded late, never lost, never folded by two owners at once.
A replay (``streams/replay.py``) holds nothing and forwards nothing: it folds such events in
place, and folds a new partition in the same process as the partitions it was split from,
after them, so that no user's events are folded by two processes at once.

Privacy: a moved user's last privacy state stays on the old partition of the ``privacy``
topic until their next request, which is published on the new one. Whoever restores a new
partition's states (the profile worker, a replay, the experiment join) also reads its
ancestors' and keeps the moved users' (``Lineage``, ``streams/privacy.py``), so an opt-out
made before the growth holds after it, however long ago it was made.

The experiment join's Faust table is partitioned like the topics and cannot change its
count: the join exits (70) when it sees the topics grow, and started again by its supervisor
joins under the new count's group, building its table from what the topics hold
(``streams/experiment_app.py``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from infra.kafka_config import client_config
from streamrank.failures import UsageError
from streamrank.settings import Settings
from streams.messages import RawMessage
from streams.producer import partition_for
from streams.sink import FeastProfileStore, PartitionCounts
from streams.store_errors import retry_store

log = logging.getLogger(__name__)

FENCE_HEADER = "streamrank-fence"
"""The header that marks a fence message; its value is the count the topic grew to."""


def fence_of(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> int | None:
    """The count a fence message announces, from its headers (a mapping or Kafka's
    (key, value) pairs); None for every other message."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        if key == FENCE_HEADER and value:
            return int(value.decode() if isinstance(value, bytes) else value)
    return None


def partition_counts(settings: Settings, timeout_s: float = 20.0) -> dict[str, int]:
    """The user-partitioned topics' partition counts, as the broker has them."""
    admin = AdminClient(client_config(settings.kafka_client_config()))
    metadata = admin.list_topics(timeout=timeout_s)
    names = (settings.events_topic, settings.impressions_topic, settings.privacy_topic)
    return {n: len(metadata.topics[n].partitions) for n in names if n in metadata.topics}


def grow_topics(
    settings: Settings,
    partitions: int,
    store: FeastProfileStore | None = None,
    timeout_s: float = 30.0,
    settle_s: float | None = None,
) -> dict[str, int]:
    """Raise ``events``, ``impressions`` and ``privacy`` to ``partitions`` (a multiple of
    each one's current count) and fence the old events partitions, steps 1-3 above;
    ``settle_s``: how long producers get to re-read the count (default: their refresh
    interval and 2 s). Returns the counts before."""
    from feature_repo.store import open_store

    before = partition_counts(settings, timeout_s)
    for topic, count in before.items():
        if partitions <= count or partitions % count:
            raise UsageError(
                f"{topic} has {count} partitions: grow it to a multiple of {count} "
                f"above it, not {partitions}"
            )
    old = before[settings.events_topic]
    store = store or FeastProfileStore(open_store(settings))
    added = {
        q: PartitionCounts(partitions=partitions, grown_from=q % old, grown_at=partitions)
        for q in range(old, partitions)
    }
    retry_store(lambda: store.write_checkpoints({q: -1 for q in added}, added), "growth rows")
    admin = AdminClient(client_config(settings.kafka_client_config()))
    futures = admin.create_partitions(
        [NewPartitions(topic, partitions) for topic in before], operation_timeout=timeout_s
    )
    for topic, future in futures.items():
        future.result(timeout_s)
        log.info("%s: %d -> %d partitions", topic, before[topic], partitions)
    time.sleep(settings.topic_metadata_refresh_s + 2.0 if settle_s is None else settle_s)
    write_fences(settings, range(old), partitions, timeout_s)
    return before


def write_fences(
    settings: Settings, old: Iterable[int], partitions: int, timeout_s: float = 30.0
) -> None:
    """A fence on each of the ``old`` events partitions, acknowledged by the broker."""
    producer = Producer({**client_config(settings.kafka_client_config()), "acks": "all"})
    for p in old:
        producer.produce(
            settings.events_topic,
            value=b"",
            partition=p,
            headers={FENCE_HEADER: str(partitions).encode()},
        )
    if producer.flush(timeout_s):
        raise TimeoutError(f"fences of {settings.events_topic} not delivered in {timeout_s}s")
    log.info("fenced %s at %d partitions", settings.events_topic, partitions)


@dataclass(frozen=True)
class Lineage:
    """Where a partition added by growth took its users from."""

    ancestors: tuple[int, ...]
    """The partition it was split from, then that one's parent, and so on."""
    count: int
    """The topic's partition count that added it."""

    def moved_here(self, user_id: str, partition: int) -> bool:
        """Whether ``user_id`` moved to ``partition`` (this lineage's) when it was added:
        their earlier requests are on an ancestor."""
        return partition_for(user_id, self.count) == partition


def read_lineage(store: FeastProfileStore, partitions: Iterable[int]) -> dict[int, Lineage]:
    """The lineage of each of ``partitions`` that growth added (the others are left out),
    from the checkpoint rows ``grow_topics`` wrote in ``store`` (the live one)."""
    wanted = sorted(set(partitions))
    rows: dict[int, PartitionCounts] = {}
    ask = wanted

    def read(partitions: list[int]) -> dict[int, PartitionCounts]:
        return retry_store(lambda: store.read_partition_counts(partitions), "growth rows")

    while ask:  # parents, then their parents: one read per generation
        rows.update(read(ask))
        ask = sorted({r.grown_from for r in rows.values() if r.grown_from >= 0} - rows.keys())
    lineage = {}
    for q in wanted:
        chain: list[int] = []
        parent = rows[q].grown_from
        while parent >= 0 and parent not in chain:
            chain.append(parent)
            parent = rows[parent].grown_from
        if chain:
            lineage[q] = Lineage(tuple(chain), rows[q].grown_at)
    return lineage


def lineage_reader(settings: Settings) -> Callable[[list[int]], dict[int, Lineage]]:
    """``read_lineage`` over the settings' live store, opened at the first call (a replay
    process reads the live store's growth rows, not its namespace's). A live store that was
    never set up (a topic replayed where no worker ever ran) has seen no growth."""
    from feast.errors import FeatureViewNotFoundException

    opened: list[FeastProfileStore] = []

    def read(partitions: list[int]) -> dict[int, Lineage]:
        try:
            if not opened:
                from feature_repo.store import open_store

                opened.append(FeastProfileStore(open_store(settings)))
            return read_lineage(opened[0], partitions)
        except FeatureViewNotFoundException:
            return {}

    return read


class PartitionGates:
    """Step 4: the messages of a partition added by growth wait, in order, until the
    partition it was split from has folded its fence. ``counts``: the partitions' rows as
    the worker loaded them (its own in-memory view, updated as it folds fences)."""

    def __init__(self, store: FeastProfileStore, counts: Mapping[int, PartitionCounts]):
        self.store = store
        self.counts = counts
        self._open: set[int] = set()
        self._held: dict[int, list[RawMessage]] = {}

    def admit(self, messages: Sequence[RawMessage]) -> list[RawMessage]:
        """The messages to fold now: those of open partitions, held ones first. The rest
        are kept (each offset once: a seek back may deliver one again)."""
        for msg in messages:
            if msg.partition not in self._open and not self.is_open(msg.partition):
                held = self._held.setdefault(msg.partition, [])
                if not held or msg.offset > held[-1].offset:
                    held.append(msg)
        released = [m for q in list(self._held) if self.is_open(q) for m in self._held.pop(q)]
        return released + [m for m in messages if m.partition in self._open]

    def is_open(self, partition: int) -> bool:
        if partition in self._open:
            return True
        row = self.counts.get(partition)
        opened = row is None or row.grown_from < 0 or row.offset >= 0
        if not opened and row is not None:
            parent = self.counts.get(row.grown_from)
            if parent is None or parent.partitions < row.grown_at:  # not folded here
                parent = retry_store(
                    lambda: self.store.read_partition_counts([row.grown_from]), "growth rows"
                )[row.grown_from]
            opened = parent.partitions >= row.grown_at
        if opened and row is not None:  # unknown partitions are asked again once loaded
            self._open.add(partition)
        return opened

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def held_through(self, partition: int) -> int | None:
        """The last offset held for ``partition`` (None: none held)."""
        held = self._held.get(partition)
        return held[-1].offset if held else None

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        dropped = set(self._held) | self._open if partitions is None else set(partitions)
        for q in dropped:
            self._held.pop(q, None)
            self._open.discard(q)


class PartitionCount:
    """The events topic's partition count for a reader of per-partition rows (serving):
    the last count read, read in a background thread at the first call and again once
    ``refresh_s`` has passed, so that a call never waits on the broker. Until the first
    read ends it answers ``settings.events_partitions``."""

    def __init__(self, settings: Settings, read: Callable[[], int] | None = None):
        self.count = settings.events_partitions
        self.refresh_s = settings.topic_metadata_refresh_s
        self._read = read or (lambda: partition_counts(settings)[settings.events_topic])
        self._read_at = -math.inf  # a replica started after a growth reads it at once
        self._reading = threading.Lock()

    def __call__(self) -> int:
        if time.monotonic() - self._read_at >= self.refresh_s and self._reading.acquire(False):
            self._read_at = time.monotonic()
            threading.Thread(target=self._reread, name="partition-count", daemon=True).start()
        return self.count

    def _reread(self) -> None:
        try:
            count = self._read()
            if count != self.count:
                log.info("events topic now has %d partitions (was %d)", count, self.count)
                self.count = count
        except Exception as exc:  # keep the last count; the next call tries again
            log.warning("partition count not re-read: %r", exc)
        finally:
            self._reading.release()
