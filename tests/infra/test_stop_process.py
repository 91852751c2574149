"""Stopping a child stops its whole process group, also what outlives the child itself."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from infra.processes import stop_process


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_that_ignores_sigterm_is_killed_after_its_leader_has_gone() -> None:
    """A supervisor shell dies at SIGTERM at once; the worker it started ignores it (as a
    worker stuck in its shutdown would): the group is still killed."""
    leader = subprocess.Popen(
        ["bash", "-c", "(trap '' TERM; exec sleep 60) & wait"], start_new_session=True
    )
    try:
        time.sleep(0.3)  # the child has set its trap
        started = time.monotonic()
        stop_process(leader, "supervisor", timeout=1.0)
        assert not group_alive(leader.pid)
        assert time.monotonic() - started < 6.5  # SIGTERM's wait, then SIGKILL's
    finally:
        if group_alive(leader.pid):
            os.killpg(leader.pid, 9)


def test_a_group_whose_leader_already_exited_is_still_stopped() -> None:
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & exit 0"], start_new_session=True)
    try:
        leader.wait(5)
        assert group_alive(leader.pid)  # the leader's child lives on in its group
        stop_process(leader, "supervisor", timeout=2.0)
        assert not group_alive(leader.pid)
    finally:
        if group_alive(leader.pid):
            os.killpg(leader.pid, 9)


@pytest.mark.parametrize("command", ["exit 0", "sleep 60"])
def test_stopping_is_quick_when_everything_obeys(command: str) -> None:
    leader = subprocess.Popen(["bash", "-c", command], start_new_session=True)
    started = time.monotonic()
    stop_process(leader, "child", timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert leader.poll() is not None and not group_alive(leader.pid)
