"""The platform team's page: how the stream and serving are doing now, and the latest backtest.

Numbers come from the same Prometheus metrics an operator scrapes: the profile workers'
``/metrics`` pages and this replica's own registry. Rates and the recent p99 are computed
here over a sliding window of samples (the page polls every couple of seconds), so the
page needs no Prometheus server; in production point ``platform_worker_urls`` at the
workers (or read the same series from Prometheus).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrank.settings import Settings

WINDOW_S = 30.0


@dataclass(frozen=True)
class Sample:
    at: float
    applied: float  # events folded into profiles, summed over workers
    dead: float
    withheld: float
    requests: float  # recommendation requests answered by this replica
    latency_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(
    series: Mapping[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        value
        for got, value in series.get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: the q-quantile of cumulative buckets, linear within one."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the overflow bucket: the highest finite bound
            width = count - lower_count
            share = (rank - lower_count) / width if width else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_buckets(
    series: Mapping[str, list[tuple[dict[str, str], float]]], endpoint: str
) -> tuple[tuple[float, float], ...]:
    return tuple(
        sorted(
            (float(labels["le"]), value)
            for labels, value in series.get("streamrank_serve_latency_seconds_bucket", [])
            if labels.get("endpoint") == endpoint
        )
    )


def latest_backtest(home: Path) -> dict[str, Any] | None:
    """The newest ``backtest.json`` of any replay namespace, with where its plot is."""
    from training.registry import backtest_reports

    reports = backtest_reports(home)
    if not reports:
        return None
    path = reports[-1]
    report = json.loads(path.read_text())
    return {
        "namespace": path.parent.parent.name,
        "written_at": path.stat().st_mtime,
        "cut": report.get("cut"),
        "k": report.get("k"),
        "targets": report.get("targets"),
        "users": report.get("users"),
        "overall": {
            name: {m: _finite(v) for m, v in r["overall"].items()}
            for name, r in report.get("results", {}).items()
        },
        "plot": str(path.with_suffix(".png")),
    }


class PlatformMonitor:
    """Samples the workers and this replica; keeps ``WINDOW_S`` of history for rates."""

    def __init__(self, worker_urls: Iterable[str], home: Path, experiments_url: str | None):
        self.worker_urls = list(worker_urls)
        self.home = home
        self.experiments_url = experiments_url
        self.samples: deque[Sample] = deque()

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformMonitor:
        host = (
            "127.0.0.1" if settings.worker_web_host in ("0.0.0.0", "") else settings.worker_web_host
        )
        workers = settings.platform_worker_urls or [f"http://{host}:{settings.worker_web_port}"]
        experiments = (
            settings.platform_experiments_url or f"http://{host}:{settings.experiments_web_port}"
        )
        return cls(workers, settings.home_dir, experiments)

    async def summary(self, client: httpx.AsyncClient) -> dict[str, Any]:
        workers_up, worker_series = 0, []
        for url in self.worker_urls:
            try:
                reply = await client.get(f"{url.rstrip('/')}/metrics", timeout=2)
                reply.raise_for_status()
            except httpx.HTTPError:
                continue
            workers_up += 1
            worker_series.append(parse(reply.text))
        own = parse(generate_latest(REGISTRY).decode())

        def summed(name: str, **labels: str) -> float:
            return sum(total(s, name, **labels) for s in worker_series)

        now = Sample(
            at=time.time(),
            applied=summed("streamrank_events_total", outcome="applied"),
            dead=summed("streamrank_events_total", outcome="dead"),
            withheld=summed("streamrank_events_total", outcome="withheld"),
            requests=total(
                own, "streamrank_serve_latency_seconds_count", endpoint="recommendations"
            ),
            latency_buckets=latency_buckets(own, "recommendations"),
        )
        self.samples.append(now)
        while len(self.samples) > 2 and now.at - self.samples[1].at >= WINDOW_S:
            self.samples.popleft()
        then = self.samples[0]
        span = now.at - then.at
        window = tuple(
            (bound, count - dict(then.latency_buckets).get(bound, 0.0))
            for bound, count in now.latency_buckets
        )
        p99_now = quantile(0.99, window) if span > 0 else None
        return {
            "at": now.at,
            "window_s": span,
            "stream": {
                "workers_up": workers_up,
                "workers": len(self.worker_urls),
                "events_applied": now.applied,
                "events_per_s": (now.applied - then.applied) / span if span > 0 else 0.0,
                "dead_letters": now.dead,
                "withheld": now.withheld,
                "lag_messages": summed("streamrank_consumer_lag_messages"),
                "profiles_written": summed("streamrank_profiles_written_total"),
            },
            "serving": {
                "requests": now.requests,
                "requests_per_s": (now.requests - then.requests) / span if span > 0 else 0.0,
                "p99_ms_recent": None if p99_now is None else p99_now * 1000,
                "p99_ms_since_start": _ms(quantile(0.99, now.latency_buckets)),
                "p50_ms_since_start": _ms(quantile(0.5, now.latency_buckets)),
            },
            "experiments": await self._experiments(client),
            "backtest": latest_backtest(self.home),
        }

    async def _experiments(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        if not self.experiments_url:
            return None
        try:
            reply = await client.get(f"{self.experiments_url}/v1/experiments", timeout=2)
            reply.raise_for_status()
            return reply.json()
        except (httpx.HTTPError, ValueError):
            return None


def _finite(value: Any) -> Any:
    """NaN (an empty segment) as null: JSON has no NaN."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
