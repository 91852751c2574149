"""The command line answers a mistake, or a dependency that is not running, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.processes import free_port

CASES = [
    # (arguments, exit code, what the line says)
    (
        ["replay", "--namespace", "x", "--from", "2026-12-02", "--to", "2020-01-01"],
        2,
        "starts after",
    ),
    (["namespaces", "--delete", "../x"], 2, "lower-case letters"),
    (["evaluate", "--model", "/nonexistent"], 2, "is not a model directory"),
    (["backtest", "--namespace", "nope", "--model", "x"], 2, "replay it first"),
    (["train", "--namespace", "nope"], 2, "missing or incomplete"),
    (["promote", "nosuch"], 2, "no trained model 'nosuch'"),
    (["replay", "--namespace", "ok1", "--dry-run"], 1, "did not answer"),
]


def run(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "STREAMRANK_HOME": str(home),
        # a port nothing listens on: the broker is down
        "STREAMRANK_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "streamrank", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # nothing it starts outlives the test's timeout
    )


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_mistake_or_a_missing_dependency_is_one_line_and_an_exit_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    says: str,
) -> None:
    """In process (``main`` as the console script calls it): the same answer, without a
    fresh interpreter's imports per case."""
    from streamrank.cli import main

    monkeypatch.setenv("STREAMRANK_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMRANK_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert main(args) == code
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert "Traceback" not in out.err
    assert len(lines) <= 2, lines[:20]  # the line, and at most one line of progress
    assert says in lines[-1], lines


def test_the_console_script_prints_only_the_line_with_the_broker_down(tmp_path: Path) -> None:
    """A real process: nothing else reaches the terminal (no traceback, none of
    librdkafka's connection retries)."""
    done = run(tmp_path, "privacy", "erase", "someone")
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "did not answer" in done.stderr, done.stderr[-2000:]


def test_a_missing_events_file_names_the_file(tmp_path: Path) -> None:
    done = run(
        tmp_path,
        "evaluate",
        env={"STREAMRANK_EVENTS_FILE": "/nope.csv", "STREAMRANK_CATALOG_FILE": "/nope2.csv"},
    )
    assert done.returncode == 1 and "/nope.csv: No such file or directory" in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run(tmp_path, "--debug", "namespaces", "--delete", "../x")
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError" in done.stderr
