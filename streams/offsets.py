"""Where a point in time falls in each partition of a topic, checked against the log itself.

Kafka answers "the first offset whose timestamp is at or after T" with ``offsets_for_times``.
Brokers get this wrong (the embedded Tansu answers 0 for times after the last message, and
its ListOffsets(latest) is below the log end), so every answer is checked by reading the
timestamps at it and just before it; a wrong answer falls back to a binary search by
seeking. The log end is taken from the fetch itself (the end-of-partition event carries the
true high watermark), never from ListOffsets.

Timestamps are the log's (Kafka message timestamps: when the producer sent the message),
which is what a topic's time index and every Kafka tool mean by "time".
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from infra.kafka_config import KafkaTarget, client_config

log = logging.getLogger(__name__)

Lookup = Callable[[int, float], int]
"""(partition, time in epoch seconds) -> the broker's offset for it (-1: none at or after)."""


@dataclass(frozen=True)
class Position:
    offset: int
    ts: float  # epoch seconds


@dataclass(frozen=True)
class OffsetAnswer:
    offset: int
    method: str  # "offsets_for_times" when the broker's answer checked out, else "binary search"
    probes: int  # messages read to find or check it


class TopicLog:
    """Random reads of one topic: the message at an offset, the bounds of a partition."""

    def __init__(self, kafka: KafkaTarget, topic: str, timeout_s: float = 10.0):
        self.topic = topic
        self.timeout_s = timeout_s
        self.consumer = Consumer(
            {
                **client_config(kafka),
                "group.id": f"streamrank-offsets-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "latest",
            }
        )
        self.probes = 0

    def partitions(self) -> list[int]:
        metadata = self.consumer.list_topics(self.topic, timeout=self.timeout_s)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(f"topic {self.topic!r} is not available")
        return sorted(topic.partitions)

    def bounds(self, partition: int) -> tuple[int, int]:
        """(first offset, log end). The end is the one the fetch reports on reaching it."""
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.timeout_s
        )
        return low, self._read(partition, high, until_end=True)[1]

    def at(self, partition: int, offset: int) -> Position | None:
        """The first message at or after ``offset``; None at the end of the log."""
        self.probes += 1
        return self._read(partition, offset, until_end=False)[0]

    def _read(self, partition: int, offset: int, until_end: bool) -> tuple[Position | None, int]:
        """Read from ``offset``: the first message there (unless ``until_end``), or the end."""
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.partition() != partition:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return None, msg.offset()
                raise KafkaException(error)
            if not until_end and msg.offset() >= offset:
                return Position(msg.offset(), message_time(msg)), -1
        raise TimeoutError(f"{self.topic}[{partition}] gave nothing from offset {offset}")

    def broker_lookup(self, partition: int, ts: float) -> int:
        """The broker's own answer (``offsets_for_times``)."""
        wanted = TopicPartition(self.topic, partition, int(ts * 1000))
        [answer] = self.consumer.offsets_for_times([wanted], timeout=self.timeout_s)
        return int(answer.offset)

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def message_time(msg: object) -> float:
    kind, ms = msg.timestamp()  # type: ignore[attr-defined]
    if ms is None or ms < 0:
        raise ValueError(f"message at offset {msg.offset()} has no timestamp (type {kind})")  # type: ignore[attr-defined]
    return ms / 1000.0


def find_offset(
    topic: TopicLog,
    partition: int,
    ts: float,
    bounds: tuple[int, int],
    lookup: Lookup | None = None,
) -> OffsetAnswer:
    """The first offset of ``partition`` whose message time is >= ``ts`` (the end when none).

    The broker's answer (``lookup``) is accepted only if the message at it is at or after
    ``ts`` and the one before it is earlier; otherwise a binary search over
    ``bounds = (first, end)`` finds it in about log2(end - first) reads.
    """
    first, end = bounds
    ts = math.floor(ts * 1000) / 1000  # the log keeps milliseconds
    before = topic.probes
    lookup = lookup or topic.broker_lookup
    claimed = lookup(partition, ts)
    claimed = end if claimed < 0 else claimed
    if _checks_out(topic, partition, ts, claimed, first, end):
        return OffsetAnswer(claimed, "offsets_for_times", topic.probes - before)
    log.info(
        "%s[%d]: broker answered offset %d for %.3f, which is wrong; searching",
        topic.topic,
        partition,
        claimed,
        ts,
    )
    lo, hi = first, end
    while lo < hi:
        mid = (lo + hi) // 2
        pos = topic.at(partition, mid)
        if pos is None or pos.ts >= ts:
            hi = mid
        else:
            lo = pos.offset + 1
    found = topic.at(partition, lo) if lo < end else None
    return OffsetAnswer(found.offset if found else end, "binary search", topic.probes - before)


def _checks_out(
    topic: TopicLog, partition: int, ts: float, claimed: int, first: int, end: int
) -> bool:
    if not first <= claimed <= end:
        return False
    if claimed < end:
        here = topic.at(partition, claimed)
        if here is None or here.offset != claimed or here.ts < ts:
            return False
    if claimed > first:
        previous = topic.at(partition, claimed - 1)
        if previous is None or previous.offset != claimed - 1 or previous.ts >= ts:
            return False
    return True
