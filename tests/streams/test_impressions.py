"""Impressions reach their topic on the user's partition, including those still queued when
the serving replica shuts down. Real broker."""

from datetime import UTC, datetime

from infra.kafka_admin import read_topic
from streamrank.settings import Settings
from streams.impressions import Impression, ImpressionLog
from streams.producer import partition_for


def test_queued_impressions_are_delivered_on_close(settings: Settings) -> None:
    log = ImpressionLog(settings.bootstrap(), settings.impressions_topic)
    shown = [
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
        for i in range(200)
    ]
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
