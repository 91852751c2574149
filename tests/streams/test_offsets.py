"""Finding the offset of a time on the real broker, whatever the broker answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker, ensure_topics
from streams.offsets import TopicLog, find_offset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def timed_log(broker: EmbeddedBroker) -> Iterator[tuple[TopicLog, list[float], int]]:
    """Two partitions, 3 bursts of 40 messages each, 0.2 s apart; the times between."""
    topic = f"offsets-{time.monotonic_ns()}"
    ensure_topics(broker.bootstrap, {topic: 2})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    marks = []
    for _ in range(3):
        time.sleep(0.05)
        marks.append(time.time())
        time.sleep(0.05)
        for i in range(80):
            producer.produce(topic, value=b"{}", partition=i % 2)
        producer.flush()
    with TopicLog(broker.bootstrap, topic) as log:
        yield log, marks, 40


def truth(log: TopicLog, partition: int, ts: float) -> int:
    """By reading every message: the first whose time is at or after ``ts``."""
    first, end = log.bounds(partition)
    offset = first
    while offset < end:
        pos = log.at(partition, offset)
        assert pos is not None
        if pos.ts >= int(ts * 1000) / 1000:
            return pos.offset
        offset = pos.offset + 1
    return end


def test_bounds_come_from_the_log_not_the_lagging_list_offsets(
    timed_log: tuple[TopicLog, list[float], int],
) -> None:
    log, _, per_burst = timed_log
    assert log.bounds(0) == (0, 3 * per_burst)


@pytest.fixture(scope="module")
def truths(timed_log: tuple[TopicLog, list[float], int]) -> dict[tuple[int, float], int]:
    """The right offset of each time the test looks up, read once for every answer below
    (a read of every message is most of what one lookup test costs)."""
    log, marks, per_burst = timed_log
    times = [marks[0] - 60, *marks, time.time() + 60]
    wanted = [0, 0, per_burst, 2 * per_burst, 3 * per_burst]
    found = {(p, ts): truth(log, p, ts) for p in (0, 1) for ts in times}
    assert list(found.values()) == wanted * 2  # the bursts are where the test put them
    return found


@pytest.mark.parametrize(
    "answer",
    ["broker", "correct", "always zero", "one too far", "one too early", "none"],
)
def test_every_time_lands_on_the_right_offset_whatever_the_broker_says(
    timed_log: tuple[TopicLog, list[float], int],
    truths: dict[tuple[int, float], int],
    answer: str,
) -> None:
    log = timed_log[0]
    for (partition, ts), right in truths.items():
        lookups = {
            "broker": None,
            "correct": lambda p, t, right=right: right,
            "always zero": lambda p, t: 0,
            "one too far": lambda p, t, right=right: right + 1,
            "one too early": lambda p, t, right=right: max(0, right - 1),
            "none": lambda p, t: -1,
        }
        found = find_offset(log, partition, ts, log.bounds(partition), lookups[answer])
        assert found.offset == right, (partition, ts, answer, found)
        if answer == "correct":
            assert found.method == "offsets_for_times"
            assert found.probes <= 2
