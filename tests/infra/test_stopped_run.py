"""A test run stopped with SIGTERM leaves none of its fixtures' servers behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

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


def test_sigterm_to_pytest_tears_the_fixtures_down(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        # the suite's own conftest as a plugin: its hooks, nothing else of this repository
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
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
