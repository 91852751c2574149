"""The platform page's arithmetic: Prometheus text in, rates and quantiles out."""

from __future__ import annotations

import json
import math
from pathlib import Path

from serving.platform import latest_backtest, parse, quantile, total

WORKER = """\
# HELP streamrank_events_total Events seen by the profile worker, by outcome
# TYPE streamrank_events_total counter
streamrank_events_total{outcome="applied"} 1500.0
streamrank_events_total{outcome="dead"} 3.0
# HELP streamrank_consumer_lag_messages lag
# TYPE streamrank_consumer_lag_messages gauge
streamrank_consumer_lag_messages{partition="0"} 4.0
streamrank_consumer_lag_messages{partition="1"} 6.0
"""


def test_counters_and_gauges_are_summed_by_label() -> None:
    series = parse(WORKER)
    assert total(series, "streamrank_events_total", outcome="applied") == 1500
    assert total(series, "streamrank_events_total") == 1503
    assert total(series, "streamrank_consumer_lag_messages") == 10
    assert total(series, "missing") == 0


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    # 100 requests: 50 under 10 ms, 40 more under 20 ms, 10 more under 50 ms
    buckets = [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == 0.01
    assert math.isclose(quantile(0.7, buckets), 0.015)
    assert math.isclose(quantile(0.99, buckets), 0.047)
    assert quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) is None  # no requests yet
    assert quantile(0.99, [(0.01, 1.0), (math.inf, 10.0)]) == 0.01  # in the overflow bucket


def test_the_latest_backtest_is_found_and_nan_becomes_null(tmp_path: Path) -> None:
    assert latest_backtest(tmp_path) is None
    out = tmp_path / "namespaces" / "march" / "backtest"
    out.mkdir(parents=True)
    report = {
        "cut": "2026-03-01",
        "k": 10,
        "targets": 5,
        "users": 2,
        "results": {"popular": {"overall": {"ndcg@10": float("nan"), "recall@10": 0.2}}},
    }
    (out / "backtest.json").write_text(json.dumps(report))
    found = latest_backtest(tmp_path)
    assert found is not None and found["namespace"] == "march"
    assert found["overall"]["popular"] == {"ndcg@10": None, "recall@10": 0.2}
    json.dumps(found, allow_nan=False)  # what the API sends must be strict JSON
