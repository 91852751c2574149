"""One batch of ``events`` messages in, state written and dead letters out.

Free of Faust on purpose: the live agent, replay and the tests drive the same class, so
validation, dedupe and the folds run the same everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams import metrics
from streams.covisitation import covisit_anchors
from streams.events import DeadLetter, PrivacyAction, PrivacyRequest, Record
from streams.growth import PartitionGates
from streams.messages import RawMessage, ValidationLimits
from streams.outbox import ItemEffect
from streams.privacy import PrivacyRegistry, PrivacyState
from streams.producer import partition_for
from streams.profile import ItemLookup, apply_event
from streams.sink import FeastProfileStore
from streams.state import ProfileState

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0  # events already in their user's stored profile
    skipped_messages: int = 0  # messages at or below the partition's checkpoint
    dead_letters: list[tuple[RawMessage, DeadLetter]] = field(default_factory=list)
    profiles_written: int = 0
    withheld: int = 0  # events of opted-out or wiped users (streams/privacy.py)
    privacy: list[PrivacyState] = field(default_factory=list)  # to publish, in order
    fences: int = 0  # fence messages folded (streams/growth.py)
    forwards: dict[int, list[Record]] = field(default_factory=dict)
    """Events of users who moved to another partition, found past their old partition's
    fence: to send to the user's partition (by partition), before the batch is acked."""


class ProfileProcessor:
    """Validation, dedupe and the folds for one consumer of the ``events`` topic."""

    def __init__(
        self,
        state: ProfileState,
        items: ItemLookup,
        limits: ValidationLimits | None = None,
        clock: Callable[[], float] = time.time,
        item_side: bool = True,
        live: bool = False,
    ):
        """``item_side=False`` folds profiles only: no popularity, no co-visitation, no
        outbox (a replay for backtests, which read profiles alone). ``live``: one of a
        group of workers, which hold the partitions added by growth until their parents
        pass their fences and forward moved users' late events (``streams/growth.py``);
        otherwise (a replay) those are folded in place."""
        self.state = state
        self.items = items
        self.limits = limits or ValidationLimits()
        self.clock = clock
        self.item_side = item_side
        self.gates = PartitionGates(state.store, state.counts) if live else None
        self._unwritten: list[ItemEffect] = []  # effects of folded batches not yet flushed

    def process(self, messages: Sequence[RawMessage], write: bool = True) -> BatchResult:
        """Validate, fold and write one batch. Returns once the profiles are durable; item
        rows follow at the state's item-flush interval (see ``streams/outbox.py``).

        ``write=False`` folds only: the batch is written by a later ``flush`` (replay
        writes every few seconds, not every batch; nothing reads its rows meanwhile)."""
        result = BatchResult(messages=len(messages))
        state = self.state
        now = self.clock()
        state.ensure_partitions({m.partition for m in messages})
        if self.gates is not None:
            messages = self.gates.admit(messages)  # held ones released, new ones held

        decoded: list[tuple[RawMessage, list[Record]]] = []
        for msg in messages:
            state.advance(msg.partition, msg.offset)
            if msg.offset <= state.checkpoints[msg.partition]:
                result.skipped_messages += 1  # every effect of this message is written
                continue
            if msg.fence is not None:
                state.counts[msg.partition] = state.counts[msg.partition].fenced(msg.fence)
                result.fences += 1
                continue
            out = self.limits.decode(msg, now)
            result.dead_letters.extend((msg, dead) for dead in out.dead)
            records = out.records
            if self.gates is not None:  # live: moved users' late events go to their partition
                records = self._stay(msg, records, state.counts[msg.partition].partitions, result)
            state.count(msg.partition, len(records), len(out.dead))  # a forward counts there
            if records:
                decoded.append((msg, records))

        state.ensure_users(r.user_id for _, records in decoded for r in records)
        # the loop runs once per event: what it reads on every turn is held in locals
        profiles, withholds = state.profiles, state.privacy.withholds
        items, item_side = self.items, self.item_side
        effects: list[ItemEffect] = []
        for msg, records in decoded:
            partition, offset = msg.partition, msg.offset
            touched: set[str] = set()
            replayed: set[str] = set()
            for event in records:
                user = event.user_id
                if isinstance(event, PrivacyRequest):
                    touched.discard(user)  # the wiped profile records nothing
                    result.privacy.append(self._apply_privacy(event, msg))
                    continue
                profile = profiles[user]
                if profile.opted_out or withholds(user, partition, offset):
                    result.withheld += 1  # the tombstone holds even if the registry lost it
                    if profile.opted_out or state.privacy.opted_out(user):
                        state.keep_tombstone(user)
                    continue
                if profile.applied_offsets.get(partition, -1) >= offset:
                    result.redelivered += 1  # in the stored profile already (crash replay)
                    if user not in replayed:  # its item-side effects wait in the outbox
                        replayed.add(user)
                        effects.extend(
                            e
                            for e in profile.outbox
                            if e.partition == partition and e.offset == offset
                        )
                    continue
                touched.add(user)
                # co-visitation links come from the profile before the event
                anchors = covisit_anchors(profile, event) if item_side else ()
                if not apply_event(profile, event, items):
                    result.duplicates += 1
                    continue
                result.applied += 1
                if item_side and event.item_id is not None:
                    effect = ItemEffect(
                        partition, offset, event.type, event.item_id, event.epoch, anchors
                    )
                    profile.outbox.append(effect)
                    effects.append(effect)
            for user in touched:
                profiles[user].applied_offsets[partition] = offset
                state.mark_user(user)
        self._unwritten.extend(effects)
        if write:
            result.profiles_written = self.flush()
        self._observe(result, messages)
        return result

    @staticmethod
    def _stay(
        msg: RawMessage, records: list[Record], fenced: int, result: BatchResult
    ) -> list[Record]:
        """The records that belong on ``msg``'s partition; past the partition's fence, a
        moved user's go to ``result.forwards`` (step 5 of ``streams/growth.py``)."""
        if not fenced:
            return records
        kept = []
        for record in records:
            target = partition_for(record.user_id, fenced)
            if target == msg.partition:
                kept.append(record)
            else:
                result.forwards.setdefault(target, []).append(record)
        return kept

    def next_offset(self, partition: int) -> int | None:
        """The offset of ``partition`` this processor takes next (held messages count as
        taken); None while the partition is not loaded."""
        taken = self.state.next_offset(partition)
        held = self.gates.held_through(partition) if self.gates is not None else None
        return taken if held is None or taken is None else max(taken, held + 1)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop the partitions' state and held messages (revoked: the next owner reads them
        from their checkpoints)."""
        self.state.forget(partitions)
        if self.gates is not None:
            self.gates.forget(partitions)

    def flush(self) -> int:
        """Write what the folded batches changed (profiles first, then the item side, as
        ``ProfileState.flush`` orders it). Returns the number of profiles written."""
        started = time.perf_counter()
        effects, self._unwritten = self._unwritten, []
        written = self.state.flush(effects)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.PROFILES_WRITTEN.inc(written)
        return written

    def _apply_privacy(self, request: PrivacyRequest, msg: RawMessage) -> PrivacyState:
        """The user's new standing; what is kept about them changes with it (a tombstone,
        a deletion, or, opting in, a fresh start without the tombstone)."""
        state = self.state
        before = state.privacy.opted_out(request.user_id)
        after = state.privacy.apply(request, msg.partition, msg.offset)
        if request.type is not PrivacyAction.OPT_IN or before:
            state.wipe(request.user_id, opted_out=after.opted_out)
        metrics.PRIVACY_REQUESTS.labels(request.type.value).inc()
        log.info(
            "%s for %s at %d/%d", request.type.value, request.user_id, msg.partition, msg.offset
        )
        return after

    @staticmethod
    def _observe(result: BatchResult, messages: Sequence[RawMessage]) -> None:
        metrics.MESSAGES.inc(result.messages)
        metrics.BATCH_SIZE.observe(result.messages)
        metrics.EVENTS.labels("applied").inc(result.applied)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.EVENTS.labels("redelivered").inc(result.redelivered)
        metrics.SKIPPED_MESSAGES.inc(result.skipped_messages)
        metrics.EVENTS.labels("dead").inc(len(result.dead_letters))
        metrics.EVENTS.labels("withheld").inc(result.withheld)
        metrics.EVENTS.labels("forwarded").inc(sum(len(r) for r in result.forwards.values()))
        for _, dead in result.dead_letters:
            metrics.DEAD_LETTERS.labels(dead.reason.split(":", 1)[0]).inc()
        appended = [m.timestamp for m in messages if m.timestamp]
        if appended:
            metrics.PROCESSING_SECONDS.observe(time.time() - min(appended))


def build_processor(
    settings: Settings,
    store: FeastProfileStore,
    item_side: bool = True,
    live: bool = False,
    **state_options: Any,
) -> ProfileProcessor:
    """The processor the live worker and replay both run, over the store given. Both
    restore users' privacy states from the privacy topic (the state now)."""
    options: dict[str, Any] = {
        "max_profiles": settings.worker_max_profiles,
        "max_covisits": settings.worker_max_covisits,
        "item_flush_s": settings.worker_item_flush_s,
        "privacy": PrivacyRegistry.from_settings(settings),
        **state_options,
    }
    return ProfileProcessor(
        ProfileState(store, **options),
        Catalog.load(settings.home_dir),
        ValidationLimits.from_settings(settings),
        item_side=item_side,
        live=live,
    )
