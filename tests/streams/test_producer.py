"""The producer SDK against the real embedded broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from confluent_kafka import Producer
from hypothesis import given
from hypothesis import settings as fuzz_settings
from pydantic import ValidationError

from infra.kafka_admin import read_topic
from streamrank.settings import Settings
from streams.events import Event
from streams.producer import MAX_MESSAGE_BYTES, EventProducer, partition_for
from streams.pseudonyms import RAW_IDS, Pseudonymizer
from tests.hostile_inputs import json_values, wrong_records


def make_events(users: int, per_user: int) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(event_id=f"u{u}-{i}", user_id=f"u{u}", type="click", item_id=str(i), ts=now)  # type: ignore[arg-type]
        for u in range(users)
        for i in range(per_user)
    ]


def test_batches_land_in_the_users_partition_in_order(settings: Settings) -> None:
    events = make_events(users=10, per_user=7)
    with EventProducer(
        settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=16
    ) as producer:
        producer.send_many(events)
        producer.flush()
        assert producer.sent_events == 70
        assert producer.sent_messages < 70
    records = read_topic(settings.bootstrap(), settings.events_topic, producer.sent_messages)
    assert len(records) == producer.sent_messages
    seen: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        for item in json.loads(record.value or b"[]"):
            assert partition_for(item["user_id"], settings.events_partitions) == record.partition
            seen.setdefault(item["user_id"], []).append(item["event_id"])
    assert seen == {f"u{u}": [f"u{u}-{i}" for i in range(7)] for u in range(10)}


def test_single_event_mode_matches_kafkas_default_partitioner(settings: Settings) -> None:
    """Our partition function equals librdkafka's murmur2 (Java-compatible) partitioner."""
    events = make_events(users=20, per_user=1)
    with EventProducer(
        settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=1
    ) as producer:
        producer.send_many(events)
    records = read_topic(settings.bootstrap(), settings.events_topic, 20)
    assert len(records) == 20
    for record in records:
        body = json.loads(record.value or b"{}")
        assert isinstance(body, dict)
        assert record.key == body["user_id"].encode()
        assert record.partition == partition_for(body["user_id"], settings.events_partitions)
    # and a plain producer keyed by user id, as another team would write it, agrees
    plain = Producer({"bootstrap.servers": settings.bootstrap(), "partitioner": "murmur2_random"})
    delivered: list[int] = []
    plain.produce(
        settings.events_topic,
        key=b"u7",
        value=b"{}",
        on_delivery=lambda err, msg: delivered.append(msg.partition()),
    )
    plain.flush(10)
    assert delivered == [partition_for("u7", settings.events_partitions)]


def test_invalid_dicts_are_refused_at_the_edge(settings: Settings) -> None:
    import pytest
    from pydantic import ValidationError

    with EventProducer(settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS) as producer:
        with pytest.raises(ValidationError):
            producer.send({"user_id": "u", "type": "view"})
        assert producer.sent_events == 0


def test_the_sdk_sends_pseudonyms_never_raw_ids(settings: Settings) -> None:
    pseudonym = Pseudonymizer(b"a key from the settings")
    events = [
        Event(
            event_id=f"a{i}",
            user_id="alice@example.com",
            type="view",
            item_id="1",
            ts=datetime.now(UTC),
        )  # type: ignore[arg-type]
        for i in range(3)
    ]
    with EventProducer(settings.bootstrap(), settings.events_topic, user_ids=pseudonym) as producer:
        producer.send_many(events)
        producer.send({**events[0].to_wire(), "event_id": "a3"})  # a dict, as beacons arrive
        producer.flush()
    records = read_topic(settings.bootstrap(), settings.events_topic, producer.sent_messages)
    sent = [item for r in records for item in json.loads(r.value or b"[]")]
    assert len(sent) == 4
    assert all(b"alice" not in (r.value or b"") for r in records)
    assert {item["user_id"] for item in sent} == {pseudonym("alice@example.com")}
    assert {r.partition for r in records} == {
        partition_for(pseudonym("alice@example.com"), settings.events_partitions)
    }


def as_python(text: bytes) -> object:
    """A wrong record as a caller's Python value; one nested too deep for Python's own JSON
    parser (a raw fragment ~990 levels deep: whether it parses depends on how deep the
    stack already is) stays the bytes it came as, still not an event."""
    try:
        return json.loads(text, parse_int=float)
    except RecursionError:
        return text


def test_anything_but_an_event_raises_a_validation_error(settings: Settings) -> None:
    """The SDK's edge: any value a caller passes is sent or refused with pydantic's
    ``ValidationError`` (a list for ``type`` once raised a ``TypeError``)."""
    values = json_values | wrong_records().map(as_python)
    # one event a message: ``sent_events`` then moves only in ``send`` (batched, the linger
    # thread sends earlier buffers at any moment, also while a slow value is being judged)
    with EventProducer(
        settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=1
    ) as producer:

        @fuzz_settings(max_examples=300, deadline=None, derandomize=True)
        @given(value=values)
        def send(value: object) -> None:
            sent = producer.sent_events
            try:
                producer.send(value)  # type: ignore[arg-type]
            except ValidationError:
                assert producer.sent_events == sent
            else:
                assert isinstance(value, dict)

        send()


def test_a_batch_over_the_message_limit_goes_as_several_messages_in_order(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    context = {f"k{i}": "v" * 250 for i in range(16)}  # ~4.3 kB an event
    events = [
        Event(
            event_id=f"big{i}", user_id="u-big", type="view", item_id="1", ts=now, context=context
        )  # type: ignore[arg-type]
        for i in range(500)
    ]
    with EventProducer(
        settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=500
    ) as producer:
        producer.send_many(events)
        producer.flush()
        assert producer.sent_messages >= 3  # 500 such events are over 2 MB
    records = read_topic(settings.bootstrap(), settings.events_topic, producer.sent_messages)
    records.sort(key=lambda r: r.offset)
    assert all(len(r.value or b"") <= MAX_MESSAGE_BYTES for r in records)
    sent = [item["event_id"] for r in records for item in json.loads(r.value or b"[]")]
    assert sent == [e.event_id for e in events]
