"""Reading a running worker from outside (benchmarks, tests, orchestration)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def worker_metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the worker's Prometheus metrics (0 while the worker is starting)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return 0.0


def applied_events(port: int) -> float:
    return worker_metric(port, "streamrank_events_total", {"outcome": "applied"})
