"""Impressions reach their topic on the user's partition, including those still queued when
the serving replica shuts down. Real broker."""

import logging
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from infra.kafka_admin import read_topic
from infra.processes import free_port
from streamrank.settings import Settings
from streams.impressions import Impression, ImpressionLog
from streams.producer import partition_for


def impressions(n: int) -> list[Impression]:
    return [
        Impression(
            request_id=f"r{i}",
            user_id=f"user-{i}",
            arm="main",
            model_version="v1",
            strategy="personalized",
            items=["1", "2"],
            propensities=[1.0, 1.0],
            ts=datetime.now(UTC),
        )
        for i in range(n)
    ]


def test_queued_impressions_are_delivered_on_close(settings: Settings) -> None:
    log = ImpressionLog(settings.bootstrap(), settings.impressions_topic)
    shown = impressions(200)
    for impression in shown:
        log.publish(impression)
    assert log.close() == 0  # nothing left behind
    records = read_topic(settings.bootstrap(), settings.impressions_topic, len(shown), timeout=30)
    got = {Impression.model_validate_json(r.value or b"").request_id: r for r in records}
    assert set(got) == {i.request_id for i in shown}
    for impression in shown:
        assert got[impression.request_id].partition == partition_for(
            impression.user_id, settings.events_partitions
        )


def test_a_broker_outage_drops_impressions_counted_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No broker: each impression is dropped and counted, and the log says so once, not
    once per response."""

    def dropped() -> float:
        sample = REGISTRY.get_sample_value(
            "streamrank_impressions_dropped_total", {"reason": "delivery"}
        )
        return sample or 0.0

    before = dropped()
    log = ImpressionLog(f"127.0.0.1:{free_port()}", "impressions", delivery_timeout_s=0.3)
    with caplog.at_level(logging.WARNING, logger="streams.impressions"):
        for impression in impressions(50):
            log.publish(impression)
        deadline = time.monotonic() + 20
        while dropped() - before < 50 and time.monotonic() < deadline:
            log._producer.poll(0.1)
    assert dropped() - before == 50
    warnings = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("impressions not delivered: 1 since")
    assert log.close(1.0) == 0
