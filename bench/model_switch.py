"""Model switch benchmark: promotions and rollbacks while clients send requests.

    python -m bench.model_switch [--cycles 3] [--clients 2] [--think-ms 10] [A B]

Two trained versions (the two newest under ``<home>/models`` unless named) take turns:
each cycle promotes the other one through the registry, waits until responses name it,
and keeps the clients going a few seconds more. Profiles come from folding the last real
events into the store, as in ``bench/serving.py``. The clients wait ``--think-ms`` between
an answer and their next request: a busy replica, not a saturated one. Reported beside the
steady state measured in the same run: errors, requests answered by the wrong version,
the time from promotion to the first response of the new version, p99 over each switch
(the load and the second after it) and the worst request during the load itself; the
target is a switch-window p99 within 2x the steady p99. Writes a table and
``bench/results/model_switch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 2.0
AFTER_S = 1.0  # after the first response of the new version, still part of the switch


@dataclass(frozen=True)
class Call:
    started: float
    seconds: float
    status: int
    version: str | None


class SwitchLoad:
    """Client threads asking for the recommendations of ``users``, each waiting
    ``think_s`` between an answer and its next request; every call is recorded with the
    model version that answered it."""

    def __init__(self, url: str, users: list[str], clients: int = 2, think_s: float = 0.01):
        self.url, self.users, self.think_s = url, users, think_s
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                body = {"user_id": rng.choice(self.users), "k": 10}
                reply = client.post("/v1/recommendations", json=body)
                ok = reply.status_code == 200
                version = reply.json().get("model_version") if ok else None
                seconds = time.monotonic() - started
                self.calls.append(Call(started, seconds, reply.status_code, version))
                time.sleep(self.think_s)

    def __enter__(self) -> SwitchLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for(self, version: str, since: float, timeout_s: float = 60.0) -> float:
        """When the first response from ``version`` to a request sent after ``since`` came
        back."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            calls = [c for c in list(self.calls) if c.started >= since]
            done = [c.started + c.seconds for c in calls if c.version == version]
            if done:
                return min(done)
            time.sleep(0.05)
        raise TimeoutError(f"no response from {version} within {timeout_s:.0f}s")

    def between(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.started < end]


@dataclass(frozen=True)
class Switch:
    to: str
    at: float  # when the registry changed
    served: float  # the first response of the new version came back


def p99_ms(calls: list[Call]) -> float:
    return 1000 * float(np.quantile([c.seconds for c in calls], 0.99)) if calls else float("nan")


def summary(load: SwitchLoad, switches: list[Switch], steady_s: float) -> dict[str, float]:
    """Steady state (the ``steady_s`` before the first switch) against the switch windows."""
    first = switches[0].at
    steady = load.between(first - steady_s, first)
    windows = [load.between(s.at, s.served + AFTER_S) for s in switches]
    loading = [c for s in switches for c in load.between(s.at, s.served)]
    during = [c for w in windows for c in w]
    wrong = sum(
        1
        for s, following in zip(switches, [*switches[1:], None], strict=True)
        for c in load.between(s.served, following.at if following else float("inf"))
        if c.version != s.to and c.status == 200
    )
    return {
        "requests": len(load.calls),
        "errors": sum(1 for c in load.calls if c.status != 200),
        "wrong_version": wrong,
        "switches": len(switches),
        "switch_s_max": max(s.served - s.at for s in switches),
        "steady_p99_ms": p99_ms(steady),
        "switch_p99_ms": p99_ms(during),
        "ratio": p99_ms(during) / p99_ms(steady),
        "loading_max_ms": 1000 * max((c.seconds for c in loading), default=float("nan")),
        "steady_calls": len(steady),
        "switch_calls": len(during),
    }


def main() -> None:
    from bench.serving import load_profiles
    from infra.processes import free_port
    from serving import app as serve_app
    from streamrank.prepare import prepare
    from streamrank.settings import Settings, get_settings
    from training.registry import ModelRegistry

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("versions", nargs="*", help="two trained versions (default: newest)")
    parser.add_argument("--cycles", type=int, default=3, help="promotions, then as many back")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--think-ms", type=float, default=10.0)
    parser.add_argument("--steady-s", type=float, default=8.0)
    parser.add_argument("--events", type=int, default=5000, help="folded into profiles")
    args = parser.parse_args()

    source = ModelRegistry(get_settings().home_dir)
    versions = args.versions or source.versions()[-2:]
    if len(versions) != 2:
        raise SystemExit("two trained versions are needed (streamrank train, twice)")
    root = Path(".streamrank") / "bench-model-switch"  # a scratch home: its own registry
    shutil.rmtree(root, ignore_errors=True)
    for version in versions:
        shutil.copytree(source.path(version), root / "models" / version)
    settings = Settings(home=root, serve_port=free_port(), model_poll_s=0.25)
    users = load_profiles(settings, prepare(settings), args.events)
    registry = ModelRegistry(root)
    registry.promote(versions[0], forced=True, evidence="bench/model_switch.py")
    url = serve_app.start(settings)
    switches: list[Switch] = []
    try:
        with SwitchLoad(url, users, args.clients, args.think_ms / 1000) as load:
            load.wait_for(versions[0], 0.0)
            time.sleep(args.steady_s)
            for cycle in range(2 * args.cycles):
                to = versions[(cycle + 1) % 2]
                at = time.monotonic()
                registry.promote(to, forced=True, evidence="bench/model_switch.py")
                switches.append(Switch(to, at, load.wait_for(to, at)))
                time.sleep(3.0)
    finally:
        serve_app.stop()
    result = summary(load, switches, args.steady_s - 1)
    for name, value in result.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{name:18}{shown:>10}")
    verdict = "met" if result["ratio"] <= TARGET_RATIO else "missed"
    print(f"switch p99 / steady p99 = {result['ratio']:.2f} (target <= {TARGET_RATIO}: {verdict})")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "model_switch.json"
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "versions": versions,
        "result": result,
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
