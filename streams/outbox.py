"""Item-side effects of applied events, kept in the profile row until the item rows hold them.

Popularity and co-visitation rows are shared by many users. Rewriting them at every
0.2-second flush cost about one row per event and kept profiles from being fresh, so the
worker writes profiles every batch and item rows every few seconds. One thing makes that
exact. An event's item-side effect is recorded with the profile that produced it: a
co-visitation edge depends on the profile *before* the event, and an effect exists only if
the event was not a duplicate. After a crash, the replayed events that a stored profile
already holds cannot be folded again, so their effects are read back from this outbox.
They are applied to the item rows whose applied offset is older.
Entries are dropped once the partition's checkpoint (written after the item rows) passes
them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from streams.events import EventType


@dataclass(frozen=True, slots=True)
class ItemEffect:
    """Event ``offset`` of ``partition`` raised ``item_id`` (popularity) and linked it from
    ``anchors`` (co-visitation), with its type's weight, at event time ``ts``."""

    partition: int
    offset: int
    event_type: EventType
    item_id: str
    ts: float
    anchors: tuple[str, ...]


def encode_outbox(effects: Iterable[ItemEffect]) -> str:
    return json.dumps(
        [
            [e.partition, e.offset, e.event_type.value, e.item_id, e.ts, list(e.anchors)]
            for e in effects
        ]
    )


def decode_outbox(text: str | None) -> list[ItemEffect]:
    return [
        ItemEffect(int(p), int(o), EventType(t), str(i), float(ts), tuple(map(str, anchors)))
        for p, o, t, i, ts, anchors in json.loads(text or "[]")
    ]
