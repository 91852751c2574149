"""streamrank's own processes placed on test-bed hosts: profile workers, and the Serve
application on a Ray cluster of a head and a worker node. Each process gets the settings
as ``STREAMRANK_*`` variables, with every address a host's, never loopback."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from infra.probes import applied_events
from streamrank.settings import Settings
from streams.supervision import EXIT_UNFINISHED
from tests.cluster.hosts import Host

RAY = str(Path(sys.executable).with_name("ray"))
GCS_PORT = 6379


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}


RESTARTED = "supervisor: the worker exited with 70, starting it again"
# What a deployment's supervisor does (Kubernetes' restartPolicy, compose's `restart:`,
# systemd's Restart=on-failure): a worker that exits with 70 asks to resume from its
# checkpoints (streams/supervision.py), after a crash or a store failover.
SUPERVISOR = f"""
while true; do
    "$@"
    code=$?
    [ "$code" -eq {EXIT_UNFINISHED} ] || exit "$code"
    echo "{RESTARTED}"
done
"""


class WorkerHost:
    """``streamrank worker`` on a host of its own, under a supervisor that restarts it when
    it asks to (exit 70), with its own copy of the home (the catalog and Feast's registry,
    as a deployment ships them to each machine)."""

    def __init__(self, host: Host, settings: Settings, base: Path):
        home = base / host.name
        shutil.copytree(settings.home_dir, home, ignore=shutil.ignore_patterns("logs"))
        self.host = host
        self.settings = settings.model_copy(update={"home": home, "worker_web_host": host.address})
        (home / "logs").mkdir(exist_ok=True)
        self.log = home / "logs" / "worker.log"
        worker = [sys.executable, "-m", "streamrank", "worker"]
        self.process = host.spawn(
            ["bash", "-c", SUPERVISOR, "supervisor", *worker], child_env(self.settings), self.log
        )

    def restarts(self) -> int:
        return self.log.read_text(errors="replace").count(RESTARTED)

    def applied(self) -> float:
        return applied_events(self.settings.worker_web_port, self.host.address)

    def assert_alive(self) -> None:
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]

    def assert_clean_log(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


def wait_until_applying(workers: list[WorkerHost], timeout: float = 180) -> None:
    """Every worker holds partitions and has applied events of them."""
    deadline = time.monotonic() + timeout
    while not all(worker.applied() > 0 for worker in workers):
        assert time.monotonic() < deadline, "not every worker applied events in time"
        for worker in workers:
            worker.assert_alive()
        time.sleep(0.5)


def ray_start(host: Host, auth: dict[str, str], *args: str) -> None:
    """``ray start`` on ``host``, advertising the host's address to the cluster."""
    done = subprocess.run(
        [
            *host.launcher, RAY, "start",
            f"--node-ip-address={host.address}", "--disable-usage-stats", *args,
        ],
        env={**os.environ, **auth},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"ray start on {host.name}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    )


def replicas_on(host: Host) -> int:
    """Serve replicas of the application running on ``host``."""
    count = 0
    for pid in host.pids():
        try:
            if "ServeReplica:streamrank" in " ".join(psutil.Process(pid).cmdline()):
                count += 1
        except psutil.Error:
            continue
    return count


class ServingHosts:
    """A Ray cluster (a head and a worker node, two CPUs each) and ``streamrank serve``
    deploying the application onto it from the head, its HTTP port on the head."""

    def __init__(self, head: Host, node: Host, settings: Settings, log: Path):
        self.head, self.node, self.log = head, node, log
        # each node's own temp dir (short: Ray's socket paths must fit 107 bytes), so that
        # nothing is left in /tmp/ray, where any later ray.init() would find this cluster
        self.temp = Path(tempfile.mkdtemp(prefix="sr-ray-"))
        # Ray's token authentication, one token for every node and the deploying driver (a
        # local ray.init() leaves a token in ~/.ray that `ray start --head` would pick up
        # and the other nodes would not)
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.settings = settings.model_copy(
            update={"ray_address": f"{head.address}:{GCS_PORT}", "serve_host": "0.0.0.0"}
        )
        self.url = f"http://{head.address}:{settings.serve_port}"

    def start(self, timeout: float = 240) -> ServingHosts:
        ray_start(
            self.head,
            self.auth,
            "--head",
            f"--port={GCS_PORT}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={self.temp}/h",
        )
        ray_start(
            self.node,
            self.auth,
            f"--address={self.head.address}:{GCS_PORT}",
            "--num-cpus=2",
            f"--temp-dir={self.temp}/n",
        )
        serve = self.head.spawn(
            [sys.executable, "-m", "streamrank", "serve"],
            {**child_env(self.settings), **self.auth},
            self.log,
        )
        deadline = time.monotonic() + timeout
        while not (self.answers() and replicas_on(self.node)):
            ended = serve.poll() is not None
            assert not ended and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(1)
        return self

    def remove(self) -> None:
        """The nodes' temp dirs (call once their hosts are gone)."""
        shutil.rmtree(self.temp, ignore_errors=True)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
