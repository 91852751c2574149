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
import logging
import reprlib
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
from pydantic_core import PydanticCustomError, from_json

from streams import metrics

log = logging.getLogger(__name__)

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
    validation, measured). ``_utc`` is inlined: this runs once per event.

    A time near the ends of the calendar can leave it in UTC (``0001-01-01T00:00+01:00``):
    that is a ``ValueError``, which pydantic reports as a validation error, where the
    ``OverflowError`` itself would escape validation and crash the reader."""
    ts = record.ts
    offset = ts.utcoffset()
    if offset is None:
        ts = ts.replace(tzinfo=UTC)
    elif offset:
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:
            raise ValueError("ts is out of the calendar's range once in UTC") from None
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


DEAD_LETTER_MAX_BYTES = 64 * 1024
"""What a dead-letter message carries of the input at most: an invalid message may be as
large as the topic allows, more than a producer may send (1 MB by default). Its source
partition and offset lead to all of it."""


def dead_letter_value(raw: bytes, headers: dict[str, bytes]) -> bytes:
    """What a dead-letter message carries of ``raw``: at most ``DEAD_LETTER_MAX_BYTES``,
    with an ``original_bytes`` header added to ``headers`` when it was cut."""
    if len(raw) <= DEAD_LETTER_MAX_BYTES:
        return raw
    headers["original_bytes"] = str(len(raw)).encode()
    return raw[:DEAD_LETTER_MAX_BYTES]


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


def _schema_for(obj: Any) -> type[Event] | type[PrivacyRequest]:
    """Which record a JSON value claims to be. ``type`` may be any JSON value (a list is
    not hashable): anything but a privacy action's name is judged as an ``Event``, whose
    validation then says what is wrong with it."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    return PrivacyRequest if isinstance(kind, str) and kind in PRIVACY_TYPES else Event


def parse_record(obj: Any) -> Record:
    """One decoded JSON value (or a Python mapping) as an event or a privacy request.

    Raises ``ValidationError`` for every input that is not one, whatever it is: an
    unexpected exception while judging is reported (``report_unjudged``) and raised as a
    validation error of type ``internal``, so a caller (the SDK) handles one exception."""
    try:
        return _schema_for(obj).model_validate(obj)
    except ValidationError:
        raise
    except Exception as exc:
        report_unjudged(exc, "sdk")
        error = PydanticCustomError(
            "internal", "could not be judged ({error})", {"error": type(exc).__name__}
        )
        raise ValidationError.from_exception_data(
            "Record", [{"type": error, "loc": (), "input": _bounded_repr(obj)}]
        ) from exc


def validate_event(
    obj: Any,
    *,
    now: float,
    max_future_skew_s: float,
    max_event_bytes: int,
    where: str = "decode",
) -> Record | DeadLetter:
    """Validate one decoded JSON value; ``now`` is injected so replay stays deterministic.

    Total: whatever ``obj`` is, the answer is a record or a dead letter. An exception that
    judging did not foresee dead-letters this value alone (reason ``internal``, reported
    by ``report_unjudged`` under ``where``), so a new kind of bad input costs no neighbour
    and no reader."""
    try:
        return _judge(obj, now, max_future_skew_s, max_event_bytes)
    except Exception as exc:
        report_unjudged(exc, where)
        return DeadLetter(_raw_of(obj), f"internal: {type(exc).__name__} while judging")


def _judge(
    obj: Any, now: float, max_future_skew_s: float, max_event_bytes: int
) -> Record | DeadLetter:
    if not isinstance(obj, dict):
        return DeadLetter(_raw_of(obj), f"schema: expected a JSON object, got {type(obj).__name__}")
    try:
        raw = _dump(obj)
    except (RecursionError, ValueError):  # nested deeper than the encoder goes, an int too long
        return DeadLetter(_raw_of(obj), "schema: event cannot be encoded as JSON again")
    if len(raw) > max_event_bytes:
        return DeadLetter(raw[:1024], f"size: event of {len(raw)} bytes > {max_event_bytes}")
    try:
        record = _schema_for(obj).model_validate(obj)
    except ValidationError as exc:
        return DeadLetter(raw, _reason(exc))
    if record.epoch > now + max_future_skew_s:
        return DeadLetter(raw, f"time: ts {record.ts.isoformat()} is in the future")
    return record


UNJUDGED_LOGGED: set[tuple[str, str]] = set()
"""(where, exception type) pairs whose traceback has been logged once in this process."""


def report_unjudged(exc: BaseException, where: str) -> None:
    """A value that validation did not foresee: counted, and logged each time, with the
    traceback the first time per kind (so a flood of one new shape stays readable), so that
    a new class of bad input is seen the day it appears."""
    kind = type(exc).__name__
    metrics.UNJUDGED.labels(where, kind).inc()
    first = (where, kind) not in UNJUDGED_LOGGED
    UNJUDGED_LOGGED.add((where, kind))
    log.error("%s: could not judge an input (%s: %s)", where, kind, exc, exc_info=first)


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, 200, 200, 200


def _bounded_repr(obj: Any) -> str:
    """A repr of any value, at most a few hundred characters (``reprlib``)."""
    return _REPR.repr(obj)


def _raw_of(obj: Any) -> bytes:
    """What a dead letter carries for a value: its JSON when that can be written, else a
    bounded repr (a value nested too deep for the encoder, a number too long)."""
    try:
        return _dump(obj)
    except Exception:
        return _bounded_repr(obj).encode("utf-8", "backslashreplace")


_EVENT_LIST = TypeAdapter(list[Event])


def _fast_path(value: bytes, now: float, max_future_skew_s: float, max_event_bytes: int):  # type: ignore[no-untyped-def]
    """The common case, a batch in which every event is valid, in one pydantic-core call.
    Returns None when anything needs a closer look (then each element is checked alone)."""
    if not value.startswith(b"[") or len(value) > max_event_bytes * 8:
        return None
    try:
        events = _EVENT_LIST.validate_json(value)
    except Exception:  # a ValidationError, or anything else: each element is judged alone
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
    """Turn one ``events`` message into valid events and dead letters, whatever its bytes:
    every reader of the topic (the worker, replay, the experiment join) relies on this
    never raising. Should it fail outside the per-element judging, the whole message is a
    dead letter (reason ``internal``), never a crashed consumer."""
    try:
        return _decode(value, now, max_future_skew_s, max_event_bytes, max_message_bytes)
    except Exception as exc:
        report_unjudged(exc, "decode")
        raw = (value or b"")[:max_message_bytes]
        return DecodedMessage(
            [], [DeadLetter(raw, f"internal: {type(exc).__name__} while decoding")]
        )


def _decode(
    value: bytes | None,
    now: float,
    max_future_skew_s: float,
    max_event_bytes: int,
    max_message_bytes: int,
) -> DecodedMessage:
    if value is None:
        return DecodedMessage([], [DeadLetter(b"", "empty: message has no value")])
    if len(value) > max_message_bytes:
        reason = f"size: message of {len(value)} bytes > {max_message_bytes}"
        return DecodedMessage([], [DeadLetter(value[:1024], reason)])
    fast = _fast_path(value, now, max_future_skew_s, max_event_bytes)
    if fast is not None:
        return DecodedMessage(fast, [])
    decoded = load_json(value)
    if isinstance(decoded, JsonError):
        return DecodedMessage([], [DeadLetter(value, f"json: {decoded.reason}")])
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


@dataclass(frozen=True, slots=True)
class JsonError:
    reason: str


def load_json(value: bytes) -> Any:
    """Untrusted bytes as Python values, or a ``JsonError`` saying why not.

    pydantic-core's parser (the one the fast path validates with), not ``json.loads``: it
    stops at a fixed depth (~200 levels), where ``json.loads`` raises ``RecursionError``
    at whatever depth the caller's stack leaves, so the live worker and a replay could
    judge one message differently. It is also 4x quicker on a single event. It refuses
    what ``json.loads`` would let through to validation (lone surrogate escapes, integers
    of over 4,300 digits): the whole message is then one dead letter."""
    try:
        return from_json(value)
    except ValueError as exc:
        return JsonError(str(exc))


def encode_event(event: Record) -> bytes:
    """The wire form of a single event: a JSON object."""
    return _dump(event.to_wire())


def encode_events(events: Iterable[Record | dict[str, Any]]) -> bytes:
    """The wire form of a batch: a JSON array of events."""
    return _dump([e if isinstance(e, dict) else e.to_wire() for e in events])


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
