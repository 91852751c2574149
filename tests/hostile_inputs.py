"""Hypothesis strategies for what anyone may put on the ``events`` topic or post to the
collector: any JSON value, any bytes, every field of every record type with a wrong value,
and what Python's JSON codec itself trips on (deep nesting, integers of thousands of digits,
NaN, lone surrogates). Shared by the decoder's fuzz, the SDK's, the collector's and the
live poison-message test, so that a shape found once is tried everywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from streams.events import Event, EventType, PrivacyAction, PrivacyRequest

FIELDS = sorted(set(Event.model_fields) | set(PrivacyRequest.model_fields))
TYPES = [t.value for t in EventType] + [a.value for a in PrivacyAction]
ODD_TEXT = ["\ud800", "a\udfffb", "\x00", "\u202eevil", " ", "", "x" * 300, "🛒" * 40, "null"]


def nested(depth: int, kind: str = "[") -> bytes:
    """A JSON value ``depth`` levels deep: arrays, or objects with one key each."""
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


RAW_FRAGMENTS = [  # JSON texts that json.dumps would never write, as raw bytes
    b"1" * 5000,  # past Python's 4,300-digit limit for int conversion
    b"-" + b"9" * 4301,
    b"1e999",  # inf
    b"-1e-999",
    b"NaN",
    b"-Infinity",
    b'"\\ud800"',  # a lone surrogate, escaped
    b'"\\udfff\\ud800"',
    b'"\\u0000"',
    b'"\xed\xa0\x80"',  # a surrogate in raw UTF-8: not valid UTF-8
    nested(50),
    nested(990),
    nested(1200),
    nested(100_000),
    nested(990, "{"),
    nested(5000, "{"),
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(ODD_TEXT)
    | st.sampled_from(TYPES)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
times = st.datetimes(datetime(2000, 1, 1), datetime(2025, 12, 31), timezones=st.just(UTC))
odd_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",  # leaves the calendar once in UTC
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2020-02-30T00:00:00Z",
        "2020-01-01T25:00:00Z",
        "1e30",
        "",
    ]
) | st.sampled_from([10**30, -(10**15), 2**63, -1, 0, 1.5e300])


def _dump(value: Any) -> bytes:
    """json.dumps as a careless producer would call it (NaN allowed); a value it cannot
    write (too deep, an int too long) becomes a JSON string saying so."""
    try:
        return json.dumps(value).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return b'"unencodable"'


def valid_record(draw: st.DrawFn, index: int, user: str | None = None) -> dict[str, Any]:
    """One valid event or privacy request (never an erasure: the collector refuses those),
    as a JSON object."""
    kind = draw(st.sampled_from([*(t.value for t in EventType), "opt_out", "opt_in"]))
    record: dict[str, Any] = {
        "event_id": f"h{index}-{draw(st.integers(0, 10**6))}",
        "user_id": user or draw(st.sampled_from(["u1", "u2", "ü3", "u 4"])),
        "type": kind,
        "ts": draw(times).isoformat(),
    }
    if kind == "search":
        record["query"] = draw(st.text(min_size=1, max_size=30).filter(str.strip))
    elif kind in {t.value for t in EventType}:
        record["item_id"] = draw(st.sampled_from(["1", "50", "181", "x-9"]))
    return record


@st.composite
def wrong_records(draw: st.DrawFn, user: str | None = None) -> bytes:
    """A valid record with one field (any of any record type's, or an unknown one) set to a
    wrong value: a JSON value of any type, an odd time, or a raw fragment."""
    record = valid_record(draw, draw(st.integers(0, 10**6)), user)
    field = draw(st.sampled_from([*FIELDS, "extra"]))
    how = draw(st.sampled_from(["value", "time", "raw", "missing"]))
    if how == "missing":
        record.pop(field, None)
        return _dump(record)
    if how == "time":
        record[field] = draw(odd_times)
        return _dump(record)
    if how == "value":
        record[field] = draw(json_values)
        return _dump(record)
    record[field] = "__RAW__"
    return _dump(record).replace(b'"__RAW__"', draw(st.sampled_from(RAW_FRAGMENTS)))


@st.composite
def valid_messages(draw: st.DrawFn, user: str | None = None) -> bytes:
    return _dump(valid_record(draw, draw(st.integers(0, 10**6)), user))


def elements(user: str | None = None) -> st.SearchStrategy[bytes]:
    """One element of an ``events`` message, as JSON text."""
    return (
        valid_messages(user)
        | wrong_records(user)
        | json_values.map(_dump)
        | st.sampled_from(RAW_FRAGMENTS)
    )


def arrays(user: str | None = None) -> st.SearchStrategy[bytes]:
    """A JSON array of elements, as the SDK sends batches."""
    return st.lists(elements(user), max_size=6).map(lambda parts: b"[" + b",".join(parts) + b"]")


hostile_messages = (
    elements()
    | arrays()
    | st.binary(max_size=300)
    | st.sampled_from([b"", b"[]", b"{}", b"null", b"[null]", b"\xef\xbb\xbf{}", b"\xff" * 8])
)
"""Any message value at all, weighted towards ones that look nearly right."""
