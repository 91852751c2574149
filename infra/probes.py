"""Reading a running worker from outside (benchmarks, tests, orchestration)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from streams.sink import FeastProfileStore


def worker_metric(
    port: int, name: str, labels: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> float:
    """One sample of the metrics of the worker on ``host:port`` (0 while it is starting)."""
    try:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return 0.0


def applied_events(port: int, host: str = "127.0.0.1") -> float:
    return worker_metric(port, "streamrank_events_total", {"outcome": "applied"}, host)


def wait_until_checkpointed(
    store: FeastProfileStore, offsets: Mapping[int, int], timeout: float, poll_s: float = 0.2
) -> float:
    """Wait until every partition's checkpoint reaches ``offsets`` (e.g. the producer's
    delivered offsets): then every effect of those messages, item rows included, is in
    the store. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        done = store.read_checkpoints(sorted(offsets))
        if all(done[p] >= o for p, o in offsets.items()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"checkpoints {done} short of {dict(offsets)}")
        time.sleep(poll_s)
