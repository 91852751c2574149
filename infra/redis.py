"""Redis servers of our own (tests, local runs, the multi-host test bed): a single server or
a Redis Cluster of several, each on its own port and directory, AOF on, so that a restart
keeps what was written, as a production Redis holding profiles must.

``launcher`` runs a server somewhere else than here: ``("ip", "netns", "exec", "host-a")``
starts it inside a network namespace (``tests/cluster/hosts.py``), on that host's address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from infra.processes import free_port, stop_process


class RedisServer:
    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        cluster_node_timeout_ms: int | None = None,
        launcher: Sequence[str] = (),
        password: str | None = None,
    ):
        """``cluster_node_timeout_ms``: run as a Redis Cluster node, which its peers deem
        failed (and replace by its replica) after that long without an answer.
        ``password``: required of clients and replicas; without one Redis answers only on
        loopback (its protected mode)."""
        self.directory = directory.resolve()  # redis-server moves into it before the log opens
        self.host = host
        here = host if not launcher else "127.0.0.1"  # elsewhere, any free port is free
        self.port = port or free_port(here)
        # the cluster bus: by default port + 10,000, past 65,535 for most free ports
        self.bus_port = free_port(here) if cluster_node_timeout_ms is not None else None
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.launcher = list(launcher)
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.address}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=2)

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        cluster = []
        if self.cluster_node_timeout_ms is not None:
            cluster = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
                "--cluster-port", str(self.bus_port),
                "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            ]  # fmt: skip
        auth = (
            ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        )
        self.process = subprocess.Popen(
            [
                *self.launcher,
                binary,
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
                *cluster,
                *auth,
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        log_path = self.directory / "redis.log"
        log = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        raise TimeoutError(f"redis-server did not answer on {self.address}:\n{log}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, "redis-server")
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serving_master(info: dict[str, Any]) -> bool:
    return "master" in info["flags"] and "fail" not in info["flags"]


def _slots_served(table: dict[str, Any]) -> int:
    """Slots that ``table`` (a node's ``CLUSTER NODES``) has a live master serve."""
    return sum(
        int(end) - int(start) + 1
        for info in table.values()
        if _serving_master(info)
        for start, end in (r if len(r) == 2 else (r[0], r[0]) for r in info["slots"])
    )


def _in_sync(replica: RedisServer) -> bool:
    return replica.client().info("replication").get("master_link_status") == "up"


class RedisClusterServers:
    """A Redis Cluster: ``nodes`` servers, every ``replicas + 1``-th a master and the others
    its replicas (``redis-cli --cluster create``, which puts a master's replicas on other
    hosts where it can). ``url`` is the seed list that ``STREAMRANK_REDIS_URL`` takes."""

    def __init__(self, nodes: Sequence[RedisServer], replicas: int = 1):
        if any(node.cluster_node_timeout_ms is None for node in nodes):
            raise ValueError("every node of a cluster needs cluster_node_timeout_ms")
        if len(nodes) < 3 * (replicas + 1):
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.nodes = list(nodes)
        self.replicas = replicas

    @property
    def url(self) -> str:
        return ",".join(node.url.removesuffix("/0") for node in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            password = self.nodes[0].password
            auth = {"REDISCLI_AUTH": password} if password else {}
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(node.address for node in self.nodes),
                    "--cluster-replicas", str(self.replicas),
                    "--cluster-yes",
                ],
                env={**os.environ, **auth},
                check=True,
                capture_output=True,
                timeout=timeout,
            )  # fmt: skip
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok, every slot is served by a
        running master (after a stop: until its replica has taken over), and every other
        running node replicates one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [node for node in self.nodes if node.process is not None]
            try:
                infos = [node.client().cluster("info") for node in live]
                table = live[0].client().cluster("nodes")  # one node's view of them all
                masters = self._serving(table)
                replicas = sum(
                    "slave" in info["flags"] and "fail" not in info["flags"]
                    for info in table.values()
                )
                if (
                    all(info["cluster_state"] == "ok" for info in infos)
                    and all(node.process is not None for node in masters)
                    and _slots_served(table) == 16_384
                    and len(masters) + replicas == len(live)
                    and all(_in_sync(node) for node in live if node not in masters)
                ):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the Redis Cluster was not healthy within {timeout}s")

    def _serving(self, table: dict[str, Any]) -> list[RedisServer]:
        """The nodes that serve slots in ``table`` (a node's ``CLUSTER NODES``)."""
        by_address = {node.address: node for node in self.nodes}
        return [
            by_address[address.split("@")[0]]
            for address, info in table.items()
            if _serving_master(info) and info["slots"]
        ]

    def masters(self) -> list[RedisServer]:
        """The nodes that serve slots now (a replica that took over is one)."""
        for node in self.nodes:
            if node.process is not None:
                try:
                    return self._serving(node.client().cluster("nodes"))
                except redis.RedisError:
                    continue
        raise RuntimeError("no node of the cluster answers")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
