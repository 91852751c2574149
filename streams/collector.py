"""The HTTP collector for browser beacons: ``POST /v1/events`` with one event or a list.

Validation is the worker's own (``validate_event``): what the collector accepts, the worker
will accept too. Valid events go to Kafka through the producer SDK; invalid ones are
answered with their reasons and never sent. A batch with some valid events is accepted in
part (202, with the rejected indexes), so one bad event in a beacon does not cost the rest;
a request with none valid is a 422. Bodies over the size limit are a 413.

A browser may send the user's own consent choice (``{"type": "opt_out"}`` or ``"opt_in"``,
``streams/privacy.py``) like any event; an erasure is an admin request
(``DELETE /v1/users/{id}`` on the API) and is refused here.

Any body gets a deliberate answer, never a 500: judging is total (``streams/events.py``),
and a producer that cannot take the events makes a 503 with ``Retry-After``. The collector
runs on the Faust worker's event loop, so it never waits for the broker: while the broker
is away, accepted events wait in the producer's queue (delivered whenever it is back, no
delivery timeout: ``COLLECTOR_PRODUCER_CONFIG``), and past ``max_pending`` of them a
request is answered 503 at once instead of being queued, so nothing answered 202 is
dropped and the loop keeps serving fetches and heartbeats.

Access (``streams/access.py``): a server key of the ``events`` scope may post events for any
user; a browser's user token only for the user it names: a batch holding another user's
event is refused whole (403, nothing sent). Every client address has a token bucket of
requests and one of refused calls; past either, 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from streams import metrics
from streams.access import AccessPolicy, RateLimiter, Refused, Scope, UserTokens
from streams.events import (
    DeadLetter,
    JsonError,
    PrivacyAction,
    PrivacyRequest,
    Record,
    load_json,
    validate_event,
)
from streams.producer import EventProducer

log = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 500

COLLECTOR_PRODUCER_CONFIG = {
    "message.timeout.ms": 0,  # an accepted event waits for the broker as long as it takes
    "queue.buffering.max.messages": 1_000_000,  # above any ``max_pending``: never BufferError
}


@dataclass(frozen=True)
class CollectorReply:
    status: int
    body: dict[str, Any]


def unavailable(events: int) -> CollectorReply:
    """The stream cannot take ``events`` now: 503, and the client may send them again."""
    metrics.COLLECTED.labels("unavailable").inc(events)
    return CollectorReply(
        503, {"error": "the event stream is unavailable; retry later", "retry_after_s": 1}
    )


class Collector:
    def __init__(
        self,
        producer: EventProducer,
        max_body_bytes: int = 1024 * 1024,
        max_event_bytes: int = 64 * 1024,
        max_future_skew_s: float = 300.0,
        access: AccessPolicy | None = None,
        limiter: RateLimiter | None = None,
        max_pending: int = 20_000,
    ):
        """``access``: None is the open single host (no keys; no token can be valid)."""
        self.producer = producer
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_future_skew_s = max_future_skew_s
        self.access = access or AccessPolicy({}, UserTokens(secrets.token_bytes(32)))
        self.limiter = limiter
        self.max_pending = max_pending

    def accept(
        self, body: bytes, client: str = "", credential: str | None = None
    ) -> CollectorReply:
        try:
            caller = self.access.authorize(credential, Scope.EVENTS, client=client)
        except Refused as refused:
            return self._refused(refused)
        wait = self.limiter.wait_s(client) if self.limiter else 0.0
        if wait > 0:
            metrics.COLLECTED.labels("rate_limited").inc()
            return CollectorReply(
                429, {"error": "too many requests", "retry_after_s": math.ceil(wait)}
            )
        if len(body) > self.max_body_bytes:
            metrics.COLLECTED.labels("too_large").inc()
            return CollectorReply(413, {"error": f"body over {self.max_body_bytes} bytes"})
        decoded = load_json(body)
        if isinstance(decoded, JsonError):
            metrics.COLLECTED.labels("rejected").inc()
            return CollectorReply(400, {"error": f"invalid JSON: {decoded.reason}"})
        items = decoded if isinstance(decoded, list) else [decoded]
        if not items:
            return CollectorReply(422, {"error": "no events"})
        if len(items) > MAX_EVENTS_PER_REQUEST:
            metrics.COLLECTED.labels("too_large").inc(len(items))
            return CollectorReply(
                413, {"error": f"{len(items)} events > {MAX_EVENTS_PER_REQUEST} per request"}
            )
        now = time.time()
        valid: list[Record] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            result = validate_event(
                item,
                now=now,
                max_future_skew_s=self.max_future_skew_s,
                max_event_bytes=self.max_event_bytes,
                where="collector",
            )
            if isinstance(result, DeadLetter):
                rejected.append({"index": index, "reason": result.reason})
            elif isinstance(result, PrivacyRequest) and result.type is PrivacyAction.ERASE:
                reason = "erase: an erasure is an admin request (DELETE /v1/users/{id})"
                rejected.append({"index": index, "reason": reason})
            else:
                valid.append(result)
        try:  # a token holder's batch may hold no one else's event
            self.access.check(caller, Scope.EVENTS, *(e.user_id for e in valid), client=client)
        except Refused as refused:
            return self._refused(refused)
        if valid and self.producer.pending() + len(valid) > self.max_pending:
            log.warning("collector: %d events wait for the broker: refusing more", self.max_pending)
            return unavailable(len(valid))
        try:
            for event in valid:
                self.producer.send(event)
        except (BufferError, KafkaException) as exc:
            # Not the body's fault: the client may send it again (event ids make a resend
            # of what did go out count once).
            log.error("collector: events not sent to the stream: %s", exc)
            return unavailable(len(valid))
        metrics.COLLECTED.labels("accepted").inc(len(valid))
        metrics.COLLECTED.labels("rejected").inc(len(rejected))
        status = 202 if valid else 422
        return CollectorReply(status, {"accepted": len(valid), "rejected": rejected})

    @staticmethod
    def _refused(refused: Refused) -> CollectorReply:
        metrics.COLLECTED.labels("unauthorized" if refused.status != 429 else "rate_limited").inc()
        body: dict[str, Any] = {"error": refused.reason}
        if refused.retry_after_s is not None:
            body["retry_after_s"] = refused.retry_after_s
        return CollectorReply(refused.status, body)
