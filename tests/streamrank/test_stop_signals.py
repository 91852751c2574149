"""Every long-running command stops everything it started on SIGINT and on SIGTERM.

Each runs as a user or a supervisor runs it: a subprocess started with SIGINT ignored (as
a shell starts a background job), stopped with one signal to its own pid only, never to
its group, so a child that outlives it is found (``tests/leftovers.py``). The demo's own
case is in ``test_demo.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from feature_repo.store import apply_repo
from infra.broker import EmbeddedBroker, ensure_topics
from infra.processes import free_port
from streamrank.datasets import Dataset
from streamrank.prepare import prepare
from tests.conftest import isolated_settings, make_home
from tests.leftovers import leftovers, no_leftovers_after

pytestmark = pytest.mark.integration
SIGNALS = pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)


@pytest.fixture
def home(tmp_path: Path, catalog_home: Path) -> Iterator[Path]:
    with no_leftovers_after(make_home(tmp_path / "home", catalog_home)) as path:
        yield path


def start(home: Path, env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    """``streamrank COMMAND`` logging to ``<home>/<command>.out``."""

    def background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "streamrank", *command],
        env={**os.environ, **env, "STREAMRANK_HOME": str(home), "PYTHONUNBUFFERED": "1"},
        stdout=(home / f"{command[0]}.out").open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=background_job,
    )


def output(home: Path, proc: subprocess.Popen[bytes]) -> str:
    name = Path(str(proc.args[3])).name  # type: ignore[index]
    return (home / f"{name}.out").read_text(errors="replace")[-3000:]


def wait_for(
    proc: subprocess.Popen[bytes], home: Path, ready: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never ready (exit {proc.wait()}):\n{output(home, proc)}")
        time.sleep(0.5)


def stop_and_check(proc: subprocess.Popen[bytes], stop: int, home: Path, children: int) -> None:
    """Signal ``proc`` alone; it must exit as interrupted (130) or cleanly (0), and leave
    nothing of what it started (at least ``children`` processes) behind."""
    started = psutil.Process(proc.pid).children(recursive=True)
    assert len(started) >= children, started  # the children whose fate is checked exist
    proc.send_signal(stop)
    proc.wait(timeout=120)
    assert proc.returncode in (0, 130), output(home, proc)
    deadline = time.monotonic() + 10
    while leftovers(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers(home) == [], output(home, proc)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@SIGNALS
def test_serve_stops_ray_and_its_replicas(home: Path, dataset: Dataset, stop: int) -> None:
    settings = isolated_settings(home)
    prepare(settings, dataset)  # the store and item view the application reads
    port = settings.serve_port
    proc = start(home, settings.as_env(), "serve")
    wait_for(proc, home, lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=180)
    stop_and_check(proc, stop, home, children=3)  # Ray's GCS, raylet, replica workers


@SIGNALS
def test_the_worker_stops_its_item_process(home: Path, broker: EmbeddedBroker, stop: int) -> None:
    settings = isolated_settings(home, broker.bootstrap)
    apply_repo(settings)
    ensure_topics(settings.bootstrap(), settings.topics(), compacted=settings.compacted_topics())
    proc = start(home, settings.as_env(), "worker")
    health = f"http://127.0.0.1:{settings.worker_web_port}/healthz"

    def ready() -> bool:  # the processor, and so its item process, is up
        try:
            return bool(httpx.get(health, timeout=2).json().get("ready"))
        except (httpx.HTTPError, ValueError):
            return False

    wait_for(proc, home, ready, timeout=120)
    stop_and_check(proc, stop, home, children=1)


@SIGNALS
def test_the_broker_command_stops_its_broker(home: Path, stop: int) -> None:
    port = free_port()
    proc = start(home, {}, "broker", "--port", str(port))
    wait_for(proc, home, lambda: "broker ready" in output(home, proc), timeout=60)
    stop_and_check(proc, stop, home, children=1)
