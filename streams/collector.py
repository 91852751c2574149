"""The HTTP collector for browser beacons: ``POST /v1/events`` with one event or a list.

Validation is the worker's own (``validate_event``): what the collector accepts, the worker
will accept too. Valid events go to Kafka through the producer SDK; invalid ones are
answered with their reasons and never sent. A batch with some valid events is accepted in
part (202, with the rejected indexes), so one bad event in a beacon does not cost the rest;
a request with none valid is a 422. Bodies over the size limit are a 413.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from streams import metrics
from streams.events import DeadLetter, Event, validate_event
from streams.producer import EventProducer

MAX_EVENTS_PER_REQUEST = 500


@dataclass(frozen=True)
class CollectorReply:
    status: int
    body: dict[str, Any]


class Collector:
    def __init__(
        self,
        producer: EventProducer,
        max_body_bytes: int = 1024 * 1024,
        max_event_bytes: int = 64 * 1024,
        max_future_skew_s: float = 300.0,
    ):
        self.producer = producer
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_future_skew_s = max_future_skew_s

    def accept(self, body: bytes) -> CollectorReply:
        if len(body) > self.max_body_bytes:
            metrics.COLLECTED.labels("too_large").inc()
            return CollectorReply(413, {"error": f"body over {self.max_body_bytes} bytes"})
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            metrics.COLLECTED.labels("rejected").inc()
            return CollectorReply(400, {"error": f"invalid JSON: {exc}"})
        items = decoded if isinstance(decoded, list) else [decoded]
        if not items:
            return CollectorReply(422, {"error": "no events"})
        if len(items) > MAX_EVENTS_PER_REQUEST:
            metrics.COLLECTED.labels("too_large").inc(len(items))
            return CollectorReply(
                413, {"error": f"{len(items)} events > {MAX_EVENTS_PER_REQUEST} per request"}
            )
        now = time.time()
        valid: list[Event] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            result = validate_event(
                item,
                now=now,
                max_future_skew_s=self.max_future_skew_s,
                max_event_bytes=self.max_event_bytes,
            )
            if isinstance(result, DeadLetter):
                rejected.append({"index": index, "reason": result.reason})
            else:
                valid.append(result)
        for event in valid:
            self.producer.send(event)
        metrics.COLLECTED.labels("accepted").inc(len(valid))
        metrics.COLLECTED.labels("rejected").inc(len(rejected))
        status = 202 if valid else 422
        return CollectorReply(status, {"accepted": len(valid), "rejected": rejected})
