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
from typing import NamedTuple

from streams.events import EventType


class ItemEffect(NamedTuple):
    """Event ``offset`` of ``partition`` raised ``item_id`` (popularity) and linked it from
    ``anchors`` (co-visitation), with its type's weight, at event time ``ts``.

    A named tuple rather than a frozen dataclass: every applied event makes one, and the
    worker pickles them to its item process, where unpickling a slotted frozen dataclass
    (``dataclasses.fields`` and ``object.__setattr__`` per field) was a third of the
    process's time."""

    partition: int
    offset: int
    event_type: EventType
    item_id: str
    ts: float
    anchors: tuple[str, ...]


def encode_outbox(effects: Iterable[ItemEffect]) -> str:
    """``[partition, offset, type, item, ts, [anchors]]`` per effect: a named tuple is a
    JSON array and the type a JSON string as they stand, so the C encoder does it all."""
    return json.dumps(list(effects))


def decode_outbox(text: str | None) -> list[ItemEffect]:
    return [
        ItemEffect(int(p), int(o), EventType(t), str(i), float(ts), tuple(map(str, anchors)))
        for p, o, t, i, ts, anchors in json.loads(text or "[]")
    ]
