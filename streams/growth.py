"""Growing the user-partitioned topics (``events``, ``impressions``, ``privacy``) while the
producers, workers and serving run.

Kafka's default partitioner puts a user on ``murmur2(user) % N``; raising N moves some
users to another partition. What follows the new count, without a restart:

- producers: ``EventProducer`` re-reads the count every ``topic_metadata_refresh_s`` (its
  batches name their partition), key-partitioned producers (impressions, consent
  requests) through librdkafka's own metadata refresh at the same interval;
- serving: the item rows (popularity, co-visitation) are read over the events topic's
  count as ``PartitionCount`` last read it, every ``topic_metadata_refresh_s``;
- profile workers: Faust's consumer refreshes its metadata at that interval too, sees the
  new partitions and rebalances; the group then owns them all. The records of a fetch in
  flight during that rebalance can be dropped by Faust while the fetch position moves on,
  which left the new partitions' first messages unread: ``streams/stalls.py`` seeks back
  to them.

Nothing is lost (every partition is read from its checkpoint) and nothing is counted
twice (the checkpoints and the profiles' per-partition applied offsets skip what is
written). A count is only raised to a multiple of the current one, so that a user can
move only from partition ``p`` to some ``p + k·N``, never between old partitions.

Not yet kept across the change: per-user order. Until every producer has re-read the
count, a moved user's events can land on both the old and the new partition, and two
workers can fold them in either order. Growing under live traffic is therefore safe for
counts and loss, not yet for order-sensitive profile fields, at the moment of the change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient, NewPartitions

from streamrank.failures import UsageError
from streamrank.settings import Settings

log = logging.getLogger(__name__)


def partition_counts(settings: Settings, timeout_s: float = 20.0) -> dict[str, int]:
    """The user-partitioned topics' partition counts, as the broker has them."""
    admin = AdminClient(settings.kafka_client_config())
    metadata = admin.list_topics(timeout=timeout_s)
    names = (settings.events_topic, settings.impressions_topic, settings.privacy_topic)
    return {n: len(metadata.topics[n].partitions) for n in names if n in metadata.topics}


def grow_topics(settings: Settings, partitions: int, timeout_s: float = 30.0) -> dict[str, int]:
    """Raise ``events``, ``impressions`` and ``privacy`` to ``partitions`` (a multiple of
    each one's current count); returns the counts before."""
    before = partition_counts(settings, timeout_s)
    for topic, count in before.items():
        if partitions <= count or partitions % count:
            raise UsageError(
                f"{topic} has {count} partitions: grow it to a multiple of {count} "
                f"above it, not {partitions}"
            )
    admin = AdminClient(settings.kafka_client_config())
    futures = admin.create_partitions(
        [NewPartitions(topic, partitions) for topic in before], operation_timeout=timeout_s
    )
    for topic, future in futures.items():
        future.result(timeout_s)
        log.info("%s: %d -> %d partitions", topic, before[topic], partitions)
    return before


class PartitionCount:
    """The events topic's partition count for a reader of per-partition rows (serving):
    the last count read, re-read in a background thread once ``refresh_s`` has passed, so
    that a call never waits on the broker. Starts from ``settings.events_partitions``."""

    def __init__(self, settings: Settings, read: Callable[[], int] | None = None):
        self.count = settings.events_partitions
        self.refresh_s = settings.topic_metadata_refresh_s
        self._read = read or (lambda: partition_counts(settings)[settings.events_topic])
        self._read_at = time.monotonic()
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
