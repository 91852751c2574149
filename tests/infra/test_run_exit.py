"""A test run ends with its own exit status, whatever the interpreter's teardown would do."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from infra.processes import stop_process
from tests.infra.test_stopped_run import inner_pytest

CRASHING_TEARDOWN = """
import atexit
import ctypes


def test_leaves_a_crash_for_the_teardown():
    # as a native library's teardown can: a read of address 0 once the run is over
    atexit.register(ctypes.string_at, 0)


def test_outcome():
    assert OUTCOME
"""


@pytest.mark.parametrize(("outcome", "status"), [("True", 0), ("False", 1)])
def test_a_crash_after_the_run_does_not_change_its_status(
    tmp_path: Path, outcome: str, status: int
) -> None:
    run = inner_pytest(tmp_path, CRASHING_TEARDOWN.replace("OUTCOME", outcome))
    try:
        output = run.communicate(timeout=120)[0].decode()
    finally:
        stop_process(run, "inner pytest")
    assert run.returncode == status, output
    assert ("1 failed" in output) == (status == 1), output  # the report is written in full


def test_finalizing_as_python_does_shows_the_crash(tmp_path: Path) -> None:
    """``STREAMRANK_TESTS_FINALIZE=1``: the teardown runs, and its crash is the status."""
    run = inner_pytest(
        tmp_path, CRASHING_TEARDOWN.replace("OUTCOME", "True"), STREAMRANK_TESTS_FINALIZE="1"
    )
    try:
        output = run.communicate(timeout=120)[0].decode()
    finally:
        stop_process(run, "inner pytest")
    assert run.returncode == -signal.SIGSEGV, output
    assert "2 passed" in output and "threads alive at exit" in output, output
