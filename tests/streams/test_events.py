import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from streams.events import (
    Event,
    EventType,
    decode_message,
    encode_event,
    encode_events,
    epoch_of_utc,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "type": "view",
        "item_id": "i1",
        "ts": "2025-12-31T23:00:00Z",
    }
    base.update(overrides)
    return base


def test_valid_event_round_trips_through_the_wire() -> None:
    parsed = Event.model_validate(event(price=9.5, session_id="s", context={"page": "home"}))
    out = decode_message(encode_event(parsed), now=NOW)
    assert out.dead == []
    assert out.events == [parsed]


def test_naive_and_offset_timestamps_become_utc() -> None:
    naive = Event.model_validate(event(ts="2025-12-31T23:00:00"))
    shifted = Event.model_validate(event(ts="2026-01-01T01:00:00+02:00"))
    assert naive.ts == shifted.ts == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert naive.epoch == shifted.epoch == naive.ts.timestamp()
    built = Event.model_construct(
        **event(ts=datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    )
    assert built.epoch == shifted.epoch  # built without validation: computed when read
    assert Event.model_validate(event(ts=1_767_222_000)).ts.tzinfo == UTC


def test_the_epoch_is_the_float_timestamp_gives() -> None:
    """``epoch_of_utc`` stands in for ``datetime.timestamp`` at validation: bit for bit,
    microseconds, times before 1970 and far ahead included."""
    rng = random.Random(7)
    stamps = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999_999, UTC)]
    for _ in range(20_000):
        seconds = rng.uniform(-2e9, 7e9)
        stamps.append(
            datetime.fromtimestamp(seconds, UTC).replace(
                microsecond=rng.choice([0, rng.randrange(1_000_000)])
            )
        )
    assert [epoch_of_utc(ts) for ts in stamps] == [ts.timestamp() for ts in stamps]
    wire = [event(event_id=f"e{i}", ts=ts.isoformat()) for i, ts in enumerate(stamps[:500])]
    decoded = decode_message(json.dumps(wire).encode(), now=NOW + 1e10)
    assert [e.epoch for e in decoded.events] == [ts.timestamp() for ts in stamps[:500]]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"type": "teleport"}, "type"),
        ({"item_id": None}, "needs an 'item_id'"),
        ({"type": "search", "item_id": None}, "needs a non-empty 'query'"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"ts": "yesterday"}, "ts"),
        ({"price": -1}, "price"),
        ({"price": float("nan")}, "price"),
    ],
)
def test_schema_violations_are_dead_letters_with_reasons(
    overrides: dict[str, object], fragment: str
) -> None:
    out = decode_message(json.dumps(event(**overrides)).encode(), now=NOW)
    assert out.events == []
    [dead] = out.dead
    assert dead.reason.startswith("schema:")
    assert fragment in dead.reason


def test_missing_fields_are_named() -> None:
    out = decode_message(json.dumps({"type": "view"}).encode(), now=NOW)
    reason = out.dead[0].reason
    for name in ("event_id", "user_id", "ts"):
        assert name in reason


def test_bad_json_and_empty_messages() -> None:
    assert decode_message(b"{oops", now=NOW).dead[0].reason.startswith("json:")
    assert decode_message(b"\xff\xfe", now=NOW).dead[0].reason.startswith("json:")
    assert decode_message(None, now=NOW).dead[0].reason.startswith("empty:")
    assert decode_message(b"42", now=NOW).dead[0].reason.startswith("schema: expected")


def test_size_limits() -> None:
    big = json.dumps(event(query="q" * 100, type="search", item_id=None)).encode()
    out = decode_message(big, now=NOW, max_event_bytes=50)
    assert out.dead[0].reason.startswith("size: event")
    out = decode_message(b"[" + b" " * 100 + b"]", now=NOW, max_message_bytes=50)
    assert out.dead[0].reason.startswith("size: message")


def test_future_timestamps_are_rejected_beyond_the_skew() -> None:
    soon = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=60)
    later = datetime.fromtimestamp(NOW, UTC) + timedelta(hours=2)
    ok = decode_message(json.dumps(event(ts=soon.isoformat())).encode(), now=NOW)
    bad = decode_message(json.dumps(event(ts=later.isoformat())).encode(), now=NOW)
    assert len(ok.events) == 1
    assert bad.dead[0].reason.startswith("time:")


def test_a_batch_keeps_good_events_when_some_are_bad() -> None:
    good = [Event.model_validate(event(event_id=f"e{i}")) for i in range(3)]
    batch = json.loads(encode_events(good))
    batch.insert(1, {"nonsense": True})
    batch.append("a string")
    out = decode_message(json.dumps(batch).encode(), now=NOW)
    assert [e.event_id for e in out.events] == ["e0", "e1", "e2"]
    assert len(out.dead) == 2


def test_unknown_fields_are_dropped_not_kept() -> None:
    parsed = Event.model_validate(event(email="someone@example.com"))
    assert "email" not in parsed.to_wire()
    assert parsed.type is EventType.VIEW


def test_events_are_immutable() -> None:
    parsed = Event.model_validate(event())
    with pytest.raises(ValidationError):
        parsed.user_id = "other"  # type: ignore[misc]
