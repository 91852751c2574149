"""The event schema and the wire format of the ``events`` topic.

A message on ``events`` carries either one event (a JSON object, as any producer may send)
or a JSON array of events. The SDK and the collector send arrays: one message per partition
batch, because a Faust agent handles a few thousand *messages* per second but folds hundreds
of thousands of events per second when each message carries many (see DESIGN.md). Every
event of an array is validated on its own, so one bad element never costs its neighbours.

Besides what shoppers do (``Event``), the topic carries what users decide about their data
(``PrivacyRequest``: opt out, opt back in, erase), in the same stream and partition as
their events, so the worker applies a choice exactly between the events before and after
it (``streams/privacy.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


def _utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC; aware ones are converted to it. One already in
    UTC (pydantic's own ``TzInfo(0)``, equal to ``UTC``) is returned as it is: a copy per
    event was a quarter of the cost of validating a batch."""
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC) if offset else value


def _settle_time(record: Event | PrivacyRequest) -> None:
    """``ts`` in UTC, and ``epoch`` beside it, set once at validation. Both go straight into
    the instance dict (the models are frozen), from the model's one Python validator: each
    call out of pydantic-core costs about a microsecond, and a first read of a
    ``cached_property`` takes a lock on Python 3.11 (together a sixth of a batch's
    validation, measured). ``_utc`` is inlined: this runs once per event."""
    ts = record.ts
    offset = ts.utcoffset()
    if offset is None:
        ts = ts.replace(tzinfo=UTC)
    elif offset:
        ts = ts.astimezone(UTC)
    fields = record.__dict__
    fields["ts"] = ts
    fields["epoch"] = epoch_of_utc(ts)


_UNIX_EPOCH_DAY = date(1970, 1, 1).toordinal()


def epoch_of_utc(ts: datetime) -> float:
    """``ts.timestamp()`` for a datetime in UTC, from its fields, and the same float: the
    exact count of microseconds over a million, rounded once, as ``timestamp`` divides it.
    Half the cost of ``timestamp``, which asks pydantic's time zone (a Rust object) for
    its offset again."""
    seconds = (ts.toordinal() - _UNIX_EPOCH_DAY) * 86_400 + ts.hour * 3600 + ts.minute * 60
    seconds += ts.second
    micro = ts.microsecond
    return (seconds * 1_000_000 + micro) / 1_000_000 if micro else float(seconds)


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    SEARCH = "search"


class Event(BaseModel):
    """One thing a shopper did, at event time ``ts`` (UTC)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Id
    user_id: Id
    type: EventType
    ts: datetime  # UTC once validated (naive means UTC)
    item_id: Id | None = None
    query: Annotated[str, StringConstraints(max_length=256, strip_whitespace=True)] | None = None
    session_id: Id | None = None
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    context: dict[Id, Annotated[str, StringConstraints(max_length=256)]] | None = Field(
        default=None, max_length=16
    )

    @model_validator(mode="after")
    def _checked(self) -> Event:
        """What the field types cannot say, and the time settled (``_settle_time``)."""
        if self.type is EventType.SEARCH:
            if not self.query:
                raise ValueError("a search event needs a non-empty 'query'")
        elif self.item_id is None:
            raise ValueError(f"a {self.type.value} event needs an 'item_id'")
        _settle_time(self)
        return self

    @cached_property
    def epoch(self) -> float:
        """Event time in epoch seconds, read several times by every fold step. Validation
        sets it (``_settle_time``); this computes it for an instance built without
        validation. It lives in the instance dict, much cheaper to read than a pydantic
        private attribute (those go through ``BaseModel.__getattr__``)."""
        return _utc(self.ts).timestamp()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class PrivacyAction(StrEnum):
    OPT_OUT = "opt_out"  # no profile from now on; what was kept is wiped
    OPT_IN = "opt_in"  # personalization again, from a fresh profile
    ERASE = "erase"  # everything kept about the user up to now is deleted (admin request)


class PrivacyRequest(BaseModel):
    """A user's decision about their data. On the wire it looks like an event (``type`` is
    the action), so it travels in order with the user's events through any producer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Id
    user_id: Id
    type: PrivacyAction
    ts: datetime  # UTC once validated (naive means UTC)

    @model_validator(mode="after")
    def _checked(self) -> PrivacyRequest:
        _settle_time(self)
        return self

    @cached_property
    def epoch(self) -> float:
        return _utc(self.ts).timestamp()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


Record = Event | PrivacyRequest
"""What one element of an ``events`` message can be."""

PRIVACY_TYPES = frozenset(a.value for a in PrivacyAction)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message or array element that failed validation, with the reason, for ``events.dlq``."""

    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    records: list[Record]  # in message order: privacy requests sit between events
    dead: list[DeadLetter]

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]


def _reason(error: ValidationError) -> str:
    parts = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    return "schema: " + "; ".join(parts)


def validate_event(
    obj: Any, *, now: float, max_future_skew_s: float, max_event_bytes: int
) -> Record | DeadLetter:
    """Validate one decoded JSON value; ``now`` is injected so replay stays deterministic."""
    if not isinstance(obj, dict):
        return DeadLetter(_dump(obj), f"schema: expected a JSON object, got {type(obj).__name__}")
    raw = _dump(obj)
    if len(raw) > max_event_bytes:
        return DeadLetter(raw[:1024], f"size: event of {len(raw)} bytes > {max_event_bytes}")
    schema: type[Event] | type[PrivacyRequest] = (
        PrivacyRequest if obj.get("type") in PRIVACY_TYPES else Event
    )
    try:
        record = schema.model_validate(obj)
    except ValidationError as exc:
        return DeadLetter(raw, _reason(exc))
    if record.epoch > now + max_future_skew_s:
        return DeadLetter(raw, f"time: ts {record.ts.isoformat()} is in the future")
    return record


_EVENT_LIST = TypeAdapter(list[Event])


def _fast_path(value: bytes, now: float, max_future_skew_s: float, max_event_bytes: int):  # type: ignore[no-untyped-def]
    """The common case, a batch in which every event is valid, in one pydantic-core call.
    Returns None when anything needs a closer look (then each element is checked alone)."""
    if not value.startswith(b"[") or len(value) > max_event_bytes * 8:
        return None
    try:
        events = _EVENT_LIST.validate_json(value)
    except ValidationError:
        return None
    limit = now + max_future_skew_s
    if any(e.epoch > limit for e in events):
        return None
    if len(value) > max_event_bytes and any(
        len(_dump(e.to_wire())) > max_event_bytes for e in events
    ):
        return None
    return events


def decode_message(
    value: bytes | None,
    *,
    now: float,
    max_future_skew_s: float = 300.0,
    max_event_bytes: int = 64 * 1024,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> DecodedMessage:
    """Turn one ``events`` message into valid events and dead letters."""
    if value is None:
        return DecodedMessage([], [DeadLetter(b"", "empty: message has no value")])
    if len(value) > max_message_bytes:
        reason = f"size: message of {len(value)} bytes > {max_message_bytes}"
        return DecodedMessage([], [DeadLetter(value[:1024], reason)])
    fast = _fast_path(value, now, max_future_skew_s, max_event_bytes)
    if fast is not None:
        return DecodedMessage(fast, [])
    try:
        decoded = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return DecodedMessage([], [DeadLetter(value, f"json: {exc}")])
    items = decoded if isinstance(decoded, list) else [decoded]
    records: list[Record] = []
    dead: list[DeadLetter] = []
    for item in items:
        result = validate_event(
            item, now=now, max_future_skew_s=max_future_skew_s, max_event_bytes=max_event_bytes
        )
        if isinstance(result, DeadLetter):
            dead.append(result)
        else:
            records.append(result)
    return DecodedMessage(records, dead)


def encode_event(event: Record) -> bytes:
    """The wire form of a single event: a JSON object."""
    return _dump(event.to_wire())


def encode_events(events: Iterable[Record | dict[str, Any]]) -> bytes:
    """The wire form of a batch: a JSON array of events."""
    return _dump([e if isinstance(e, dict) else e.to_wire() for e in events])


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
