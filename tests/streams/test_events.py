import json
import logging
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pydantic_core import from_json

import streams.events as events_module
from streams.events import (
    DecodedMessage,
    Event,
    EventType,
    PrivacyRequest,
    decode_message,
    encode_event,
    encode_events,
    epoch_of_utc,
    parse_record,
)
from tests.hostile_inputs import elements, hostile_messages, json_values, nested, wrong_records

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


# --- hostile input: judging is total --------------------------------------------------------

FUZZ = fuzz_settings(max_examples=600, deadline=None, derandomize=True)


def _elements_in(value: bytes) -> int | None:
    """How many elements the message holds, or None when it is not JSON to the decoder's
    parser (pydantic-core's: ~200 levels deep at most, no lone surrogate escapes)."""
    try:
        decoded = from_json(value)
    except ValueError:
        return None
    return len(decoded) if isinstance(decoded, list) else 1


def _loaded(value: bytes) -> object:
    """The Python value of a JSON text, or the text itself where Python cannot load it."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value.decode("utf-8", "replace")


def _judged(value: bytes) -> DecodedMessage:
    out = decode_message(value, now=NOW)
    unforeseen = [d.reason for d in out.dead if d.reason.startswith("internal")]
    assert not unforeseen, (value[:300], unforeseen)  # a shape judging did not foresee
    return out


@FUZZ
@given(value=hostile_messages)
def test_any_message_ends_as_records_or_dead_letters_with_reasons(value: bytes) -> None:
    out = _judged(value)
    count = _elements_in(value)
    if count is None or (count == 0 and value.strip() != b"[]"):
        assert (out.records, len(out.dead)) == ([], 1)  # the message is one dead letter
    else:
        assert len(out.records) + len(out.dead) == count  # each element, one outcome
    for dead in out.dead:
        assert dead.reason.split(":", 1)[0] in {"json", "schema", "time", "size", "empty"}
        assert isinstance(dead.raw, bytes)


@FUZZ
@given(parts=st.lists(elements(), max_size=6))
def test_a_batch_is_judged_as_its_elements_alone(parts: list[bytes]) -> None:
    """The one-call fast path and the per-element path agree: a batch's records are those
    of its elements judged one by one (an element that is not JSON spoils only the batch's
    parse, and then the whole message is one dead letter)."""
    batch = _judged(b"[" + b",".join(parts) + b"]")
    alone = [_judged(b"[" + part + b"]") for part in parts]
    if any(_elements_in(b"[" + part + b"]") is None for part in parts):
        assert batch.records == [] and len(batch.dead) == 1
        return
    assert batch.records == [r for out in alone for r in out.records]
    assert [d.reason for d in batch.dead] == [d.reason for out in alone for d in out.dead]


@FUZZ
@given(value=json_values | wrong_records().map(_loaded))
def test_parse_record_raises_only_validation_errors(value: object) -> None:
    """What the SDK calls on a dict: any input is a record or a ``ValidationError``."""
    try:
        record = parse_record(value)
    except ValidationError as exc:
        assert all(e["type"] != "internal" for e in exc.errors())
    else:
        assert isinstance(record, Event | PrivacyRequest)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (json.dumps(event(type=["view"])).encode(), "schema: type"),
        (json.dumps(event(type={"view": 1})).encode(), "schema: type"),
        (json.dumps(event(ts="0001-01-01T00:00:00+01:00")).encode(), "out of the calendar"),
        (json.dumps(event(ts="9999-12-31T23:59:59-01:00")).encode(), "out of the calendar"),
        (nested(100_000), "json: recursion limit exceeded"),
        (b"[" + nested(1000, "{") + b"]", "json: recursion limit exceeded"),
        (b"[" + nested(150, "{") + b"]", "schema: event_id: Field required"),
        (json.dumps(event(event_id="__")).replace('"__"', "7" * 5000).encode(), "json: number"),
        (json.dumps(event(user_id="\ud800")).encode(), "json: unexpected end of hex escape"),
        (json.dumps(event(price=float("inf"))).encode(), "schema: price"),
    ],
)
def test_inputs_that_once_crashed_a_reader_are_dead_letters(value: bytes, reason: str) -> None:
    """The shapes that raised out of judging (TypeError, RecursionError, OverflowError,
    ValueError) and stopped the worker's agent. A valid neighbour in the same batch stays
    when the batch is JSON to the parser."""
    [dead] = _judged(value).dead
    assert reason in dead.reason
    if value.startswith(b"{") and reason.startswith("schema"):
        neighbour = json.dumps(event(event_id="ok")).encode()
        out = _judged(b"[" + value + b"," + neighbour + b"]")
        assert [e.event_id for e in out.events] == ["ok"]
        assert len(out.dead) == 1


def test_an_unforeseen_exception_dead_letters_that_element_and_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should judging itself fail, the element is a dead letter with reason ``internal``,
    counted under its exception's type and logged (the traceback once per kind); its
    neighbours are judged as usual, and so is the next message."""
    original = events_module._settle_time

    def flaky(record: Event | PrivacyRequest) -> None:  # runs inside pydantic's validation
        if record.event_id == "boom":
            raise KeyError("a bug in judging")
        original(record)

    monkeypatch.setattr(events_module, "_settle_time", flaky)
    monkeypatch.setattr(events_module, "UNJUDGED_LOGGED", set())
    before = REGISTRY.get_sample_value(
        "streamrank_unjudged_inputs_total", {"where": "decode", "exception": "KeyError"}
    )
    batch = [event(event_id="a"), event(event_id="boom"), event(event_id="b")]
    with caplog.at_level(logging.ERROR, logger="streams.events"):
        out = decode_message(json.dumps(batch).encode(), now=NOW)
        again = decode_message(json.dumps([event(event_id="boom")]).encode(), now=NOW)
    assert [e.event_id for e in out.events] == ["a", "b"]
    [dead] = out.dead
    assert dead.reason == "internal: KeyError while judging"
    assert json.loads(dead.raw)["event_id"] == "boom"
    assert again.dead[0].reason == dead.reason
    after = REGISTRY.get_sample_value(
        "streamrank_unjudged_inputs_total", {"where": "decode", "exception": "KeyError"}
    )
    assert after == (before or 0) + 2
    lines = [r for r in caplog.records if "could not judge" in r.getMessage()]
    assert len(lines) == 2  # a line for every one
    assert sum(bool(r.exc_info) for r in lines) == 1  # the traceback once per kind
