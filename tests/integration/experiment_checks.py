"""The experiment join's two answers, read by tests: the offline report recomputed from
the topics (``streamrank experiments --json``) and the live join's ``/v1/experiments``."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from streamrank.settings import Settings


def offline_report(settings: Settings, capsys: pytest.CaptureFixture[str]) -> dict:
    """``streamrank experiments --json``: the join recomputed from the topics."""
    from streamrank.cli import main

    capsys.readouterr()
    os.environ.update(settings.as_env())
    try:
        assert main(["experiments", "--json", "--idle-s", "1"]) == 0
    finally:
        for name in settings.as_env():
            os.environ.pop(name, None)
    return json.loads(capsys.readouterr().out)


def live_url(settings: Settings) -> str:
    return f"http://{settings.worker_web_host}:{settings.experiments_web_port}"


def live_arms(settings: Settings, timeout_s: float = 10.0) -> dict:
    """The live join's per-arm table."""
    return httpx.get(f"{live_url(settings)}/v1/experiments", timeout=timeout_s).json()["arms"]


def live_join_reaches(settings: Settings, expected: dict, within_s: float) -> None:
    """Until the live join's table equals ``expected`` (the offline report's arms)."""
    deadline = time.monotonic() + within_s
    live: dict = {}
    while time.monotonic() < deadline:
        try:
            live = live_arms(settings, timeout_s=5.0)
        except (httpx.HTTPError, ValueError):
            live = {}
        if live == expected:
            return
        time.sleep(1)
    assert live == expected
