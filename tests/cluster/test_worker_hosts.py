"""The profile worker on several hosts: a broker host, a Redis Cluster over three hosts and
two worker hosts in one consumer group. Losing a whole host, or a Redis master, loses and
doubles nothing: the stored profiles and item rows equal an offline fold of the events."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feature_repo.store import apply_repo
from infra.broker import EmbeddedBroker, ensure_topics
from infra.probes import applied_events
from infra.redis import RedisClusterServers
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from tests.cluster.hosts import Host, Network
from tests.conftest import isolated_settings
from tests.integration.streaming import PacedSender, check, make_events, send, wait

PARTITIONS = 4


@pytest.fixture
def cluster_settings(
    home: Path, broker_host: EmbeddedBroker, redis_hosts: RedisClusterServers
) -> Settings:
    """Settings that name every host by address: the broker's, the Redis Cluster's seeds."""
    settings = isolated_settings(
        home, broker_host.bootstrap, online_store="redis_cluster", redis_url=redis_hosts.url
    )
    apply_repo(settings)
    ensure_topics(broker_host.bootstrap, {settings.events_topic: PARTITIONS, settings.dlq_topic: 1})
    return settings


class WorkerHost:
    """``streamrank worker`` on a host of its own, with its own copy of the home (the
    catalog and Feast's registry, as a deployment ships them to each machine)."""

    def __init__(self, host: Host, settings: Settings, base: Path):
        home = base / host.name
        shutil.copytree(settings.home_dir, home, ignore=shutil.ignore_patterns("logs"))
        self.host = host
        self.settings = settings.model_copy(update={"home": home, "worker_web_host": host.address})
        (home / "logs").mkdir(exist_ok=True)
        self.log = home / "logs" / "worker.log"
        env = {**os.environ, **self.settings.as_env(), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[bytes] = host.spawn(
            [sys.executable, "-m", "streamrank", "worker"], env, self.log
        )

    def applied(self) -> float:
        return applied_events(self.settings.worker_web_port, self.host.address)

    def assert_clean_log(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


def start_worker_hosts(
    network: Network,
    settings: Settings,
    base: Path,
    names: tuple[str, ...] = ("worker-a", "worker-b"),
) -> list[WorkerHost]:
    return [WorkerHost(network.add(name), settings, base) for name in names]


def wait_until_both_apply(
    workers: list[WorkerHost], sender: PacedSender, timeout: float = 180
) -> None:
    """Both workers hold partitions and have applied events of them, mid-stream."""
    deadline = time.monotonic() + timeout
    while not all(worker.applied() > 0 for worker in workers):
        assert time.monotonic() < deadline, [w.log.read_text()[-2000:] for w in workers]
        assert sender.sending
        for worker in workers:
            assert worker.process.poll() is None, worker.log.read_text()[-3000:]
        time.sleep(0.5)


def test_losing_a_worker_host_mid_stream_loses_nothing(
    network: Network, cluster_settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    s = cluster_settings
    events = make_events(catalog, 20_000, users=300, seed=11)
    workers = start_worker_hosts(network, s, tmp_path / "hosts")
    sender = PacedSender(lambda chunk: send(s, chunk), events, chunk=1000, pause_s=0.3)
    wait_until_both_apply(workers, sender)
    lost, survivor = workers
    lost.host.kill()  # every process on the host, at once
    assert lost.process.poll() is not None
    delivered = sender.finish()
    wait(s, delivered)  # the survivor took the lost host's partitions: all checkpointed
    check(s, events, catalog)
    survivor.assert_clean_log()


def test_a_redis_master_lost_mid_stream_fails_over_and_loses_nothing(
    network: Network,
    cluster_settings: Settings,
    redis_hosts: RedisClusterServers,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    s = cluster_settings
    events = make_events(catalog, 20_000, users=300, seed=12)
    workers = start_worker_hosts(network, s, tmp_path / "hosts")
    sender = PacedSender(lambda chunk: send(s, chunk), events, chunk=1000, pause_s=0.3)
    wait_until_both_apply(workers, sender)
    master = redis_hosts.masters()[0]
    master.stop()  # its replica, on another host, takes its slots over
    redis_hosts.wait_healthy(timeout=30)
    delivered = sender.finish()
    wait(s, delivered)
    check(s, events, catalog)
    for worker in workers:
        assert worker.process.poll() is None, worker.log.read_text()[-3000:]
