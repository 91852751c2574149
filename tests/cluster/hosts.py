"""Hosts for the multi-host test bed: Linux network namespaces joined by one bridge.

Each ``Host`` is a network namespace with its own address on a private /24, its own
loopback and nothing else; processes started on it (``Host.spawn``) reach the other hosts
only through the bridge, by address, as separate machines would. The test process itself
stays in the root namespace, which holds the bridge's address (``Network.gateway``) and
so reaches every host. They share the file system and the CPUs: what is separate is the
network, which is what "several hosts" changes for this system (every address a setting,
nothing on 127.0.0.1 across hosts). Losing a host is ``Host.kill`` (every process in it,
SIGKILL, as a power cut) or ``Host.cut`` (its link down, as a network partition).

Needs root (``CAP_NET_ADMIN``) and iproute2. ``Network`` removes everything it made on
exit, passed or failed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_available() -> str | None:
    """Why hosts cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"srprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


class Host:
    def __init__(self, network: Network, name: str, address: str, index: int):
        self.network = network
        self.name = name  # what the test calls it
        self.netns = f"{network.tag}-{name}"
        self.address = address
        self._veth = f"{network.tag}v{index}"
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def launcher(self) -> list[str]:
        """Prefix that runs a command on this host."""
        return ["ip", "netns", "exec", self.netns]

    def _create(self) -> None:
        _ip("netns", "add", self.netns)
        inside = f"{self._veth}p"
        _ip("link", "add", self._veth, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", self.netns)
        _ip("link", "set", self._veth, "master", self.network.bridge)
        _ip("link", "set", self._veth, "up")
        self.run("ip", "addr", "add", f"{self.address}/24", "dev", inside)
        self.run("ip", "link", "set", inside, "up")
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.launcher, *argv], check=True, capture_output=True, text=True, timeout=60
        )

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host in a session of its own, output to ``log``."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child's
        process = subprocess.Popen(
            [*self.launcher, *argv],
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        found = _ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(pid) for pid in found]

    def kill(self) -> None:
        """Every process on the host dies at once (SIGKILL), as in a power cut."""
        for _ in range(10):  # a dying parent may still fork; look again
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=5)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def cut(self) -> None:
        """The host's link goes down: it keeps running but nobody reaches it."""
        _ip("link", "set", self._veth, "down")

    def heal(self) -> None:
        _ip("link", "set", self._veth, "up")

    def _remove(self) -> None:
        self.kill()
        _ip("link", "del", self._veth, check=False)
        _ip("netns", "del", self.netns, check=False)


class Network:
    """Hosts on one private /24 behind a bridge; a context manager that removes them all."""

    def __init__(self) -> None:
        self.tag = f"sr{os.getpid() % 10_000:04d}{random.randrange(100):02d}"[:8]
        self.bridge = f"{self.tag}br"
        self.subnet = f"10.213.{random.randrange(1, 250)}"
        self.gateway = f"{self.subnet}.1"
        self.hosts: dict[str, Host] = {}

    def __enter__(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 2
        host = Host(self, name, f"{self.subnet}.{index}", index)
        self.hosts[name] = host
        try:
            host._create()
        except BaseException:
            self.close()
            raise
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host._remove()
        _ip("link", "del", self.bridge, check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()
