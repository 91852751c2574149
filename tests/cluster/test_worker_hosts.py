"""The profile worker on several hosts: a broker host, a Redis Cluster over three hosts and
two worker hosts in one consumer group. Losing a whole host, or a Redis master, loses and
doubles nothing: the stored profiles and item rows equal an offline fold of the events."""

from __future__ import annotations

from pathlib import Path

from infra.redis import RedisClusterServers
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.events import Event
from tests.cluster.hosts import Network
from tests.cluster.system import WorkerHost, wait_until_applying
from tests.integration.streaming import PacedSender, check, make_events, send, wait


def mid_stream(
    network: Network, settings: Settings, catalog: Catalog, base: Path, seed: int
) -> tuple[list[Event], list[WorkerHost], PacedSender]:
    """Two worker hosts applying a stream of 20,000 events of 300 users that is still
    arriving (its last chunk held back until ``PacedSender.finish``)."""
    events = make_events(catalog, 20_000, users=300, seed=seed)
    workers = [WorkerHost(network.add(name), settings, base) for name in ("worker-a", "worker-b")]
    sender = PacedSender(lambda chunk: send(settings, chunk), events, chunk=1000, pause_s=0.3)
    wait_until_applying(workers)
    assert sender.sending
    return events, workers, sender


def test_losing_a_worker_host_mid_stream_loses_nothing(
    network: Network, cluster_settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    s = cluster_settings
    events, (lost, survivor), sender = mid_stream(network, s, catalog, tmp_path / "hosts", 11)
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
    events, workers, sender = mid_stream(network, s, catalog, tmp_path / "hosts", 12)
    redis_hosts.masters()[0].stop()  # its replica, on another host, takes its slots over
    redis_hosts.wait_healthy(timeout=30)
    delivered = sender.finish()
    wait(s, delivered)
    check(s, events, catalog)
    restarts = [worker.restarts() for worker in workers]
    print(f"\nRedis master stopped mid-stream: worker restarts {restarts}")
    # the promoted replica's new history: rows may be lost, so each worker rewound
    assert sum(restarts) >= 1
    for worker in workers:
        worker.assert_alive()
        worker.assert_clean_log()
