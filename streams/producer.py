"""The producer SDK the site's backends use to send events (confluent-kafka).

Idempotent, ``acks=all``. Events are grouped per partition and sent as one message per
group (a JSON array, in order), because the profile worker's cost is per message, not per
event. The partition is the one Kafka's default partitioner (murmur2, as in the Java client
and aiokafka) gives the user id, so a user's events land in one partition whether they come
from this SDK, in batches, or from any other producer, one per message keyed by user id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException, Producer

from infra.kafka_config import KafkaTarget, client_config
from streams.events import Record, encode_event, encode_events, parse_record
from streams.pseudonyms import Pseudonymizer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 900_000
"""A batch message's JSON at most: below the Kafka clients' default ``message.max.bytes``
(1,000,000), with room for the record's own framing."""


def partition_for(user_id: str, partitions: int) -> int:
    """Kafka's default key partitioner: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


class EventProducer:
    """Send events to the ``events`` topic; call ``flush`` (or use ``with``) before exit."""

    def __init__(
        self,
        kafka: KafkaTarget,
        topic: str = "events",
        *,
        user_ids: Pseudonymizer,
        batch_events: int = 200,
        linger_ms: int = 20,
        config: Mapping[str, Any] | None = None,
        partition_refresh_s: float = 10.0,
    ):
        """``partition_refresh_s``: how often the topic's partition count is re-read, so
        that a grown topic is followed (``streams/growth.py``)."""
        self.topic = topic
        self.user_ids = user_ids
        self.batch_events = max(1, batch_events)
        self.linger_s = linger_ms / 1000
        self._producer = Producer(
            {
                **client_config(kafka),
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "compression.type": "lz4",
                "topic.metadata.refresh.interval.ms": int(partition_refresh_s * 1000),
                **(config or {}),
            }
        )
        self._partitions = self._partition_count()
        self.partition_refresh_s = partition_refresh_s
        self._partitions_read_at = time.monotonic()
        self._buffers: dict[int, list[dict[str, Any]]] = {}
        self._first_buffered: dict[int, float] = {}
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self.sent_events = 0
        self.sent_messages = 0
        self._unacked_events = 0  # handed to librdkafka, not yet acknowledged (or failed)
        self._count_lock = threading.Lock()  # delivery callbacks run in whichever thread polls
        self.delivered_offsets: dict[int, int] = {}
        """Highest offset the broker acknowledged, per partition (for "has it all been read?")."""
        self._stop = threading.Event()
        self._linger_thread: threading.Thread | None = None
        if self.batch_events > 1:
            self._linger_thread = threading.Thread(
                target=self._linger_loop, name="streamrank-producer-linger", daemon=True
            )
            self._linger_thread.start()

    @property
    def partitions(self) -> int:
        """The topic's partition count as this producer last read it."""
        return self._partitions

    def _refresh_partitions(self) -> None:
        """Re-read the partition count once ``partition_refresh_s`` has passed (in the
        linger thread: a broker that does not answer must not hold ``send``)."""
        if time.monotonic() - self._partitions_read_at < self.partition_refresh_s:
            return
        self._partitions_read_at = time.monotonic()
        try:
            count = self._partition_count()
        except KafkaException as exc:
            log.warning("partition count of %s not re-read: %s", self.topic, exc)
            return
        if count != self._partitions:
            log.info("topic %s now has %d partitions (was %d)", self.topic, count, self._partitions)
            self._partitions = count

    def _partition_count(self) -> int:
        metadata = self._producer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(f"topic {self.topic!r} is not available: {topic and topic.error}")
        return len(topic.partitions)

    # --- sending ---------------------------------------------------------------------------
    def send(self, event: Record | Mapping[str, Any]) -> None:
        """Queue one event (or privacy request, ``streams/privacy.py``: it keeps its place
        among the user's events). Anything but a record is validated first: a bad event
        raises pydantic's ``ValidationError`` here, at the edge, whatever its shape. The
        user id is replaced by its pseudonym (``user_ids``) before anything is sent."""
        if not isinstance(event, Record):
            event = parse_record(event)
        pseudonym = self.user_ids(event.user_id)
        if pseudonym != event.user_id:
            event = event.model_copy(update={"user_id": pseudonym})
        if self.batch_events == 1:
            self._produce(event.user_id.encode(), encode_event(event), None)
            return
        partition = partition_for(event.user_id, self._partitions)
        with self._lock:
            buffer = self._buffers.setdefault(partition, [])
            if not buffer:
                self._first_buffered[partition] = time.monotonic()
            buffer.append(event.to_wire())
            if len(buffer) >= self.batch_events:
                self._send_partition(partition)
        self._producer.poll(0)

    def send_many(self, events: Iterable[Record | Mapping[str, Any]]) -> None:
        for event in events:
            self.send(event)

    def _send_partition(self, partition: int) -> None:
        """Caller holds the lock."""
        batch = self._buffers.pop(partition, None)
        self._first_buffered.pop(partition, None)
        if batch:
            self._produce_batch(batch, partition)

    def _produce_batch(self, batch: list[dict[str, Any]], partition: int) -> None:
        """One message, or, when the batch's JSON is over ``MAX_MESSAGE_BYTES``, its halves
        in order (a message the client would refuse must never reach ``produce``)."""
        value = encode_events(batch)
        if len(value) > MAX_MESSAGE_BYTES and len(batch) > 1:
            half = len(batch) // 2
            self._produce_batch(batch[:half], partition)
            self._produce_batch(batch[half:], partition)
            return
        self._produce(None, value, partition, count=len(batch))

    def _produce(self, key: bytes | None, value: bytes, partition: int | None, count: int = 1):  # type: ignore[no-untyped-def]
        def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
            with self._count_lock:
                self._unacked_events -= count
            self._on_delivery(err, msg)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(self.topic, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self.sent_events += count
        self.sent_messages += 1
        with self._count_lock:
            self._unacked_events += count

    def pending(self) -> int:
        """Events not yet acknowledged by the broker: buffered here, in librdkafka's queue
        or in flight. What a broker outage leaves waiting."""
        with self._lock:
            buffered = sum(len(b) for b in self._buffers.values())
        return self._unacked_events + buffered

    def _on_delivery(self, err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            log.error("delivery to %s failed: %s", msg.topic(), err)
            self._errors.append(str(err))
            return
        partition, offset = msg.partition(), msg.offset()
        if offset > self.delivered_offsets.get(partition, -1):
            self.delivered_offsets[partition] = offset

    def _linger_loop(self) -> None:
        while not self._stop.wait(self.linger_s / 2 or 0.005):
            deadline = time.monotonic() - self.linger_s
            with self._lock:
                for partition, since in list(self._first_buffered.items()):
                    if since <= deadline:
                        self._send_partition(partition)
            self._producer.poll(0)
            self._refresh_partitions()

    # --- lifecycle -------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Send everything buffered and wait until the broker has acknowledged it all."""
        with self._lock:
            for partition in list(self._buffers):
                self._send_partition(partition)
        remaining = self._producer.flush(timeout)
        if remaining:
            raise KafkaException(f"{remaining} messages not delivered within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{len(errors)} deliveries failed, first: {errors[0]}")

    def close(self) -> None:
        self._stop.set()
        if self._linger_thread is not None:
            self._linger_thread.join(timeout=1)
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
