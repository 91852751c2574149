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

Access: when write keys are configured, a request must carry one (``Authorization: Bearer
KEY`` or ``X-API-Key: KEY``), compared in constant time, else 401. Every client address has
a token bucket of requests (not every key: all the browsers of a site share its key); past
it, 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from streams import metrics
from streams.access import AccessKeys
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


class RateLimiter:
    """Token buckets per client: ``rate_per_s`` requests a second, bursts of ``burst``.
    The least recently seen clients are forgotten past ``max_clients`` (memory stays flat
    under a flood of spoofed addresses)."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, client: str, now: float | None = None) -> float:
        """0 when the request may go (and takes a token), else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, since = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class Collector:
    def __init__(
        self,
        producer: EventProducer,
        max_body_bytes: int = 1024 * 1024,
        max_event_bytes: int = 64 * 1024,
        max_future_skew_s: float = 300.0,
        write_keys: Iterable[str] = (),
        limiter: RateLimiter | None = None,
        max_pending: int = 20_000,
    ):
        self.producer = producer
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_future_skew_s = max_future_skew_s
        self.write_keys = AccessKeys(write_keys)
        self.limiter = limiter
        self.max_pending = max_pending

    def authorized(self, key: str | None) -> bool:
        return self.write_keys.allows(key)

    def accept(self, body: bytes, client: str = "", api_key: str | None = None) -> CollectorReply:
        if not self.authorized(api_key):
            metrics.COLLECTED.labels("unauthorized").inc()
            return CollectorReply(401, {"error": "a valid write key is required"})
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
