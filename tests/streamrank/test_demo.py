"""The README's demo, as a user runs it: a subprocess, start to finish, and stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_home
from tests.leftovers import leftovers, no_leftovers_after

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, catalog_home: Path) -> Iterator[Path]:
    """The demo's home; whatever still carries it when the test ends (a failed or timed-out
    test: broker, workers, Ray, HAProxy) is killed, so no test leaves a stack behind."""
    with no_leftovers_after(make_home(tmp_path / "home", catalog_home)) as path:
        yield path


def demo(home: Path, *args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``sigint_ignored``: start it the way a shell starts a background job."""
    env = {**os.environ, "STREAMRANK_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("STREAMRANK_KAFKA_BOOTSTRAP", None)

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "streamrank", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )


def shown_lists(out: str) -> dict[str, list[str]]:
    """The demo's top-10 list (item titles) of each user it shows, in order."""
    lists: dict[str, list[str]] = {}
    for block in out.split("=== user ")[1:]:
        user = block.split()[0]
        lists[user] = re.findall(r"^ +\d+\. (.{44})", block, re.MULTILINE)
    return lists


def test_the_demo_serves_its_model_stays_up_with_its_pages_and_stops_on_sigterm(
    home: Path,
) -> None:
    """``streamrank demo --ui``, trained on 120 users: the README's demo (the same steps,
    then it stays up) in one stack start instead of two.

    Stopped with SIGTERM (a supervisor, ``docker stop``) after ``ray.init`` has installed
    Ray's own SIGTERM handler, and started as a shell starts a background job (SIGINT
    ignored): everything the demo started stops with it. Ctrl-C takes the same path (both
    signals raise ``KeyboardInterrupt``); it is run against each command the demo composes
    in ``test_stop_signals.py``."""
    import httpx

    proc = demo(
        home,
        *("--events", "3000", "--users", "2", "--train-users", "120", "--ui"),
        sigint_ignored=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    else:
        pytest.fail("".join(lines)[-8000:])  # the worker log's tail too, when it failed
    out = "".join(lines)
    assert "trained model " in out and "stream-default" in out  # and the baselines beside it
    version = out.split("trained model ", 1)[1].split()[0]
    assert out.count("=== user") == 3  # two active users and a new visitor
    assert f"(personalized, model {version})" in out  # served from the model just trained
    first, second, _ = shown_lists(out).values()
    assert len(first) == len(second) == 10
    assert len(set(first) & set(second)) <= 3  # personal lists, not one list for everyone
    assert "(cold_start" in out
    assert "events.dlq: json:" in out
    assert "[6/6] up in" in out

    urls = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[-4:-1]}
    page = httpx.get(urls["storefront"], timeout=30)
    assert page.status_code == 200 and "collectorUrl" in page.text
    assert httpx.get(urls["platform page"], timeout=30).status_code == 200
    assert httpx.get(urls["storefront"] + "static/storefront.js", timeout=30).status_code == 200
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest[-3000:]
    time.sleep(2)
    assert leftovers(home) == []


def test_the_demo_reports_a_worker_that_exited_with_its_log(tmp_path: Path) -> None:
    from streamrank.demo import WorkerStopped, check_running, worker_log
    from streamrank.settings import Settings

    settings = Settings(home=tmp_path)
    worker_log(settings).parent.mkdir()
    worker_log(settings).write_text("starting\nthe item process died; stopping the worker\n")
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(70)"])
    child.wait(30)
    with pytest.raises(WorkerStopped, match=r"code 70(.|\n)*the item process died"):
        check_running(settings, child)  # type: ignore[arg-type]
