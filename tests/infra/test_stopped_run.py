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

INNER = """
import subprocess
import time
from pathlib import Path

import pytest

from infra.processes import stop_process


@pytest.fixture(scope="session")
def server():
    # as the suite's servers run: a session of its own, stopped as a group at teardown
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    Path("server.pid").write_text(str(process.pid))
    yield process
    stop_process(process, "server")


def test_runs_until_stopped(server):
    time.sleep(600)
"""


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


def test_sigterm_to_pytest_tears_the_fixtures_down(tmp_path: Path) -> None:
    run = inner_pytest(tmp_path, INNER)
    server = None
    try:
        pid_file = tmp_path / "server.pid"

        def server_started() -> bool:
            assert run.poll() is None, run.stdout.read().decode()  # type: ignore[union-attr]
            return pid_file.exists() and bool(pid_file.read_text())

        until(server_started, 120, "the inner run never started its server", poll_s=0.2)
        server = psutil.Process(int(pid_file.read_text()))
        run.send_signal(signal.SIGTERM)  # pytest alone, as a CI runner's stop does
        output = run.communicate(timeout=60)[0].decode()
        assert run.returncode == 2, output  # interrupted
        server.wait(timeout=10)  # gone: torn down by the fixture, not by this test
        assert not server.is_running()
    finally:
        stop_process(run, "inner pytest")
        if server is not None and server.is_running():
            server.kill()


TWO_SERVERS = """
import os
import subprocess
import time
from pathlib import Path

import pytest

from infra.processes import stop_process


def started(name):
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    Path(f"{name}.pid").write_text(str(process.pid))
    return process


@pytest.fixture
def network():  # set up first, torn down last, as a test bed's network is
    process = started("network")
    yield process
    stop_process(process, "network")


@pytest.fixture
def server(network):
    process = started("server")
    yield process
    Path("tearing-down").write_text("")
    time.sleep(3)  # a server that takes its time to stop
    stop_process(process, "server")


def test_uses_the_bed(server):
    time.sleep(float(os.environ["TEST_SECONDS"]))


def test_never_reached(server):
    pass
"""


@pytest.mark.parametrize(
    ("test_seconds", "stops"),
    [(600, ("during the test", "during its teardown")), (0, ("during its teardown",))],
)
def test_a_stop_during_teardown_waits_until_every_fixture_is_down(
    tmp_path: Path, test_seconds: int, stops: tuple[str, ...]
) -> None:
    """A stop that lands inside one fixture's teardown must not skip the fixtures after
    it: a test bed's servers stop first, its network last."""
    run = inner_pytest(tmp_path, TWO_SERVERS, TEST_SECONDS=str(test_seconds))
    started: list[psutil.Process] = []
    try:

        def appeared(name: str) -> bool:
            assert run.poll() is None, run.stdout.read().decode()  # type: ignore[union-attr]
            file = tmp_path / name
            return file.exists() and bool(file.read_text() or name == "tearing-down")

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
