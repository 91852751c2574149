"""The multi-host test bed's fixtures: a network of hosts (``hosts.py``), a broker host and
a Redis Cluster spread over three hosts. These tests are marked ``cluster``: the default
run leaves them out, ``make test-cluster`` (and so ``.ci/run``) runs them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_repo.store import apply_repo
from infra.broker import EmbeddedBroker, ensure_topics
from infra.redis import RedisClusterServers, RedisServer
from streamrank.settings import Settings
from tests.cluster.hosts import Network, netns_available
from tests.conftest import isolated_settings, missing_prerequisite


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in item.nodeid:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def network() -> Iterator[Network]:
    why = netns_available()
    if why is not None:
        missing_prerequisite(why)
    with Network() as net:
        yield net


@pytest.fixture
def broker_host(network: Network, tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """The embedded broker alone on a host of its own."""
    host = network.add("broker")
    with EmbeddedBroker(
        port=9092, host=host.address, launcher=host.launcher, log_path=tmp_path / "broker.log"
    ) as broker:
        yield broker


@pytest.fixture
def redis_hosts(network: Network, tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three masters and three replicas on three hosts, two nodes each:
    ``redis-cli --cluster create`` puts each master's replica on another host, so any one
    host can go and every slot still has a copy."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing_prerequisite("redis-server and redis-cli are not installed")
    hosts = [network.add(f"redis{i}") for i in range(3)]
    nodes = [
        RedisServer(
            tmp_path / f"redis{i}-{port}",
            port=port,
            host=host.address,
            cluster_node_timeout_ms=1000,
            launcher=host.launcher,
            password="cluster-secret",  # off loopback, Redis answers only with one
        )
        for port in (7000, 7001)
        for i, host in enumerate(hosts)
    ]
    with RedisClusterServers(nodes) as cluster:
        yield cluster


@pytest.fixture
def cluster_settings(
    home: Path, broker_host: EmbeddedBroker, redis_hosts: RedisClusterServers
) -> Settings:
    """Settings that name every host by address: the broker's, the Redis Cluster's seeds;
    the repository applied to the cluster, the topics made."""
    settings = isolated_settings(
        home, broker_host.bootstrap, online_store="redis_cluster", redis_url=redis_hosts.url
    )
    apply_repo(settings)
    ensure_topics(settings.bootstrap(), settings.topics(), compacted=settings.compacted_topics())
    return settings
