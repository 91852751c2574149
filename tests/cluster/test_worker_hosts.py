"""The profile worker on several hosts: a broker host, a Redis Cluster over three hosts and
two worker hosts in one consumer group. Losing a whole host, or a Redis master, loses and
doubles nothing: the stored profiles and item rows equal an offline fold of the events."""

from __future__ import annotations

from pathlib import Path

from infra.redis import RedisClusterServers
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from tests.cluster.hosts import Network
from tests.cluster.system import WorkerHost, wait_until_applying
from tests.integration.streaming import PacedSender, check, make_events, send, wait


def two_worker_hosts(network: Network, settings: Settings, base: Path) -> list[WorkerHost]:
    return [WorkerHost(network.add(name), settings, base) for name in ("worker-a", "worker-b")]


def test_losing_a_worker_host_mid_stream_loses_nothing(
    network: Network, cluster_settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    s = cluster_settings
    events = make_events(catalog, 20_000, users=300, seed=11)
    workers = two_worker_hosts(network, s, tmp_path / "hosts")
    sender = PacedSender(lambda chunk: send(s, chunk), events, chunk=1000, pause_s=0.3)
    wait_until_applying(workers)
    assert sender.sending
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
    workers = two_worker_hosts(network, s, tmp_path / "hosts")
    sender = PacedSender(lambda chunk: send(s, chunk), events, chunk=1000, pause_s=0.3)
    wait_until_applying(workers)
    assert sender.sending
    redis_hosts.masters()[0].stop()  # its replica, on another host, takes its slots over
    redis_hosts.wait_healthy(timeout=30)
    delivered = sender.finish()
    wait(s, delivered)
    check(s, events, catalog)
    for worker in workers:
        worker.assert_alive()
