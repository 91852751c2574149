"""Questions to the broker that orchestration and tests ask: has a group read this far?

The targets are offsets the producer's delivery reports returned, not the partitions'
high watermarks: Tansu answers ListOffsets(latest) with the base offset of the last record
batch + 1, which is below the log end whenever a batch holds several records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from infra.kafka_config import KafkaTarget, client_config


def committed_offsets(
    kafka: KafkaTarget, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """The next offset ``group`` will read, per partition (-1 where nothing is committed)."""
    consumer = Consumer({**client_config(kafka), "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def wait_until_consumed(
    kafka: KafkaTarget,
    group: str,
    topic: str,
    delivered: Mapping[int, int],
    timeout: float = 300.0,
    poll_s: float = 0.25,
    check: Callable[[], None] | None = None,
) -> float:
    """Block until ``group`` has committed past every ``delivered`` offset (partition ->
    last offset produced); returns the seconds waited. ``check`` runs at every poll and may
    raise to stop waiting early (the consumer it waits for has died)."""
    started = time.monotonic()
    partitions = sorted(delivered)
    while True:
        if check is not None:
            check()
        committed = committed_offsets(kafka, group, topic, partitions)
        pending = [p for p in partitions if committed.get(p, -1) <= delivered[p]]
        waited = time.monotonic() - started
        if not pending:
            return waited
        if waited > timeout:
            raise TimeoutError(f"group {group} has not committed {topic} up to {dict(delivered)}")
        time.sleep(poll_s)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp: float | None = None  # the log's time (epoch s)


def read_topic(
    kafka: KafkaTarget,
    topic: str,
    max_messages: int | None = None,
    timeout: float = 10.0,
    idle_s: float | None = None,
) -> list[Record]:
    """Read a topic from the beginning without joining any group (for checks, the demo and
    reports). Stops at ``max_messages``, at ``timeout``, or after ``idle_s`` without a new
    message (the way to read "everything": the embedded broker's latest offsets are not
    exact, see above), then takes what is fetched already. Quiet time counts only once
    every partition has been read up to its latest offset as the broker told it at the
    start: a busy machine that stalls a fetch for longer than ``idle_s`` must not end the
    read before the messages that were there all along (a report that missed its last
    impressions)."""
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"streamrank-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=min(timeout, 10.0))
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        behind = _known_ends(consumer, topic, partitions, min(timeout, 10.0))
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        draining = False  # quiet, and every partition read to its known end
        while max_messages is None or len(records) < max_messages:
            now = time.monotonic()
            if now > deadline:
                break
            if idle_s is not None and now - last > idle_s:
                behind = _still_behind(consumer, topic, behind)
                draining = not behind  # what is fetched already still comes, unwaited
            msg = consumer.poll(0.0 if draining else 0.2)
            if msg is None and draining:
                break
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            headers = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or []}
            kind, millis = msg.timestamp()
            ts = millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None
            records.append(
                Record(msg.partition(), msg.offset(), msg.key(), msg.value(), headers, ts)
            )
        return records
    finally:
        consumer.close()


def _known_ends(
    consumer: Consumer, topic: str, partitions: list[int], timeout: float
) -> dict[int, int]:
    """Per partition that holds messages, the offset of the last one the broker reports
    (a lower bound on Tansu, whose latest offset is the last batch's first message + 1:
    that batch comes in the same fetch as its first message)."""
    ends = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
        if high > max(low, 0):
            ends[partition] = high - 1
    return ends


def _still_behind(consumer: Consumer, topic: str, ends: dict[int, int]) -> dict[int, int]:
    """Those of ``ends`` the consumer's position has not passed yet (a position moves past
    offsets that hold no message for it too: compacted away, or a control record)."""
    if not ends:
        return ends
    positions = consumer.position([TopicPartition(topic, p) for p in ends])
    return {tp.partition: ends[tp.partition] for tp in positions if tp.offset <= ends[tp.partition]}
