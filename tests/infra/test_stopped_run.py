"""A test run stopped with SIGTERM leaves none of its fixtures' servers behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from infra.processes import stop_process
from tests.polling import until

REPO = Path(__file__).resolve().parents[2]


def inner_pytest(tmp_path: Path, source: str, **env: str) -> subprocess.Popen[bytes]:
    """pytest on ``source`` alone in a session of its own, with the suite's conftest as a
    plugin: its hooks, nothing else of this repository."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


TWO_SERVERS = """
import os
import subprocess
import time
from pathlib import Path

import pytest

from infra.processes import stop_process


def started(name):
    # as the suite's servers run: a session of its own, stopped as a group at teardown
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    Path(f"{name}.pid").write_text(str(process.pid))
    return process


@pytest.fixture(scope="session")
def network():  # set up first, torn down last, as the session's broker or a test bed is
    process = started("network")
    yield process
    stop_process(process, "network")


@pytest.fixture
def server(network):
    process = started("server")
    yield process
    Path("tearing-down").write_text("server")
    time.sleep(3)  # a server that takes its time to stop
    stop_process(process, "server")


def test_uses_the_bed(server):
    time.sleep(float(os.environ["TEST_SECONDS"]))


def test_never_reached(server):
    pass
"""


@pytest.mark.parametrize(
    ("test_seconds", "stops"),
    [
        (600, ("during the test",)),
        (600, ("during the test", "during its teardown")),
        (0, ("during its teardown",)),
    ],
)
def test_sigterm_to_pytest_tears_every_fixture_down(
    tmp_path: Path, test_seconds: int, stops: tuple[str, ...]
) -> None:
    """SIGTERM to pytest alone, as a CI runner's stop does: the run ends interrupted and
    every fixture's server is stopped by its fixture. A stop that lands inside one
    fixture's teardown must not skip the fixtures after it (a test bed's servers stop
    first, its network last)."""
    run = inner_pytest(tmp_path, TWO_SERVERS, TEST_SECONDS=str(test_seconds))
    started: list[psutil.Process] = []
    try:

        def appeared(name: str) -> bool:
            assert run.poll() is None, run.stdout.read().decode()  # type: ignore[union-attr]
            file = tmp_path / name
            return file.exists() and bool(file.read_text())

        for name in ("network.pid", "server.pid"):
            until(lambda name=name: appeared(name), 120, f"no {name}", poll_s=0.05)
            started.append(psutil.Process(int((tmp_path / name).read_text())))
        for stop in stops:
            if stop == "during its teardown":
                until(lambda: appeared("tearing-down"), 60, "no teardown", poll_s=0.05)
            run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0].decode()
        assert run.returncode == 2, output  # interrupted
        for process in started:
            process.wait(timeout=10)  # gone: torn down by its fixture, not by this test
    finally:
        stop_process(run, "inner pytest")
        for process in started:
            if process.is_running():
                process.kill()
