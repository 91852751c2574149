"""One batch of ``events`` messages in, profiles written and dead letters out.

Free of Faust on purpose: the live agent, replay and the tests drive the same class, so
validation, dedupe and the profile fold run the same everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams import metrics
from streams.events import DeadLetter, Event, decode_message
from streams.popularity import apply_popularity
from streams.profile import ItemLookup, apply_event
from streams.state import ProfileState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawMessage:
    partition: int
    offset: int
    value: bytes | None


@dataclass
class BatchResult:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    dead_letters: list[tuple[RawMessage, DeadLetter]] = field(default_factory=list)
    profiles_written: int = 0


@dataclass(frozen=True)
class ValidationLimits:
    max_future_skew_s: float = 300.0
    max_event_bytes: int = 64 * 1024
    max_message_bytes: int = 4 * 1024 * 1024


class ProfileProcessor:
    def __init__(
        self,
        state: ProfileState,
        items: ItemLookup,
        limits: ValidationLimits | None = None,
        clock=time.time,  # type: ignore[no-untyped-def]
    ):
        self.state = state
        self.items = items
        self.limits = limits or ValidationLimits()
        self.clock = clock

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Validate, fold and write one batch. Returns once the profiles are durable."""
        result = BatchResult(messages=len(messages))
        now = self.clock()
        decoded: list[tuple[RawMessage, list[Event]]] = []
        for msg in messages:
            out = decode_message(
                msg.value,
                now=now,
                max_future_skew_s=self.limits.max_future_skew_s,
                max_event_bytes=self.limits.max_event_bytes,
                max_message_bytes=self.limits.max_message_bytes,
            )
            result.dead_letters.extend((msg, dead) for dead in out.dead)
            if out.events:
                decoded.append((msg, out.events))

        self.state.ensure_loaded(
            (e.user_id for _, events in decoded for e in events),
            {msg.partition for msg, _ in decoded},
        )
        newest = 0.0
        for msg, events in decoded:
            pop = self.state.popularity[msg.partition]
            count_popularity = msg.offset > pop.applied_offset
            touched: set[str] = set()
            for event in events:
                profile = self.state.profile(event.user_id)
                if profile.applied_offsets.get(msg.partition, -1) >= msg.offset:
                    result.redelivered += 1  # already in the stored profile: crash replay
                    continue
                touched.add(event.user_id)
                if apply_event(profile, event, self.items):
                    result.applied += 1
                    if count_popularity:
                        apply_popularity(pop, event)
                    newest = max(newest, event.epoch)
                else:
                    result.duplicates += 1
            for user in touched:
                self.state.profile(user).applied_offsets[msg.partition] = msg.offset
                self.state.mark_dirty(user)
            if count_popularity:
                pop.applied_offset = msg.offset
                self.state.mark_partition_dirty(msg.partition)

        started = time.perf_counter()
        result.profiles_written, _ = self.state.flush()
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.MESSAGES.inc(result.messages)
        metrics.BATCH_SIZE.observe(result.messages)
        metrics.PROFILES_WRITTEN.inc(result.profiles_written)
        metrics.EVENTS.labels("applied").inc(result.applied)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.EVENTS.labels("redelivered").inc(result.redelivered)
        metrics.EVENTS.labels("dead").inc(len(result.dead_letters))
        for _, dead in result.dead_letters:
            metrics.DEAD_LETTERS.labels(dead.reason.split(":", 1)[0]).inc()
        if newest:
            metrics.EVENT_LAG_SECONDS.set(max(0.0, now - newest))
        return result
