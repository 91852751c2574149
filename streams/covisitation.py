"""Co-visitation kept by the stream: "users who engaged with A then engaged with B".

When a user engages with B, every item A they engaged with in the ``LOOKBACK_S`` before
(up to ``ANCHORS`` of them) gains ``weight(B's event)`` on the edge A -> B, decayed over
``TAU_S``. As with popularity, edges are kept per events partition, in rows keyed by
(partition, A), each with the last offset it applied; serving sums A's rows over
partitions and uses the strongest B as candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from streams.decay import growth, needs_rebase, value_at
from streams.events import Event, EventType
from streams.profile import TYPE_WEIGHTS, UserProfile

TAU_S = 14 * 86_400.0
LOOKBACK_S = 86_400.0
ANCHORS = 3
TOP_N = 50
KEPT = 2 * TOP_N
"""A row holds at most ``KEPT`` edges; past that it keeps its ``TOP_N`` strongest. Rows are
written whole, so a reloaded row is the row that was in memory."""


@dataclass
class CovisitRow:
    """Edges out of one item within one partition, relative to ``ref``."""

    partition: int
    item_id: str
    as_of: float = 0.0
    ref: float = 0.0
    neighbours: dict[str, float] = field(default_factory=dict)
    applied_offset: int = -1
    ordered: bool = field(default=False, repr=False, compare=False)
    """Whether ``neighbours`` is strongest first, as a row read back from the store is
    (``to_row`` writes it so): then ``top`` need not sort it again, per request."""

    def add(self, neighbour: str, weight: float, ts: float) -> None:
        if not self.ref:
            self.ref = ts
        elif needs_rebase(ts, self.ref, TAU_S):
            factor = value_at(1.0, self.ref, TAU_S, ts)
            self.neighbours = {k: v * factor for k, v in self.neighbours.items()}
            self.ref = ts
        self.as_of = max(self.as_of, ts)
        self.ordered = False
        self.neighbours[neighbour] = self.neighbours.get(neighbour, 0.0) + weight * growth(
            ts, self.ref, TAU_S
        )
        if len(self.neighbours) > KEPT:
            self.neighbours = dict(sorted(self.neighbours.items(), key=lambda kv: -kv[1])[:TOP_N])

    def top(self, now: float | None = None, n: int = TOP_N) -> list[tuple[str, float]]:
        factor = value_at(1.0, self.ref, TAU_S, now or self.as_of)
        if self.ordered:
            ranked = list(islice(self.neighbours.items(), n))
        else:
            ranked = sorted(self.neighbours.items(), key=lambda kv: -kv[1])[:n]
        return [(item, w * factor) for item, w in ranked]

    def to_row(self) -> dict[str, Any]:
        top = self.top(n=KEPT)
        return {
            "partition_id": self.partition,
            "item_id": self.item_id,
            "as_of": self.as_of,
            "neighbours": [i for i, _ in top],
            "weights": [w for _, w in top],
            "applied_offset": self.applied_offset,
        }

    @classmethod
    def from_row(cls, partition: int, item_id: str, row: Mapping[str, Any] | None) -> CovisitRow:
        out = cls(partition, item_id)
        if not row or row.get("as_of") is None:
            return out
        out.as_of = out.ref = float(row["as_of"])
        out.applied_offset = int(row["applied_offset"])
        out.neighbours = dict(zip(row["neighbours"], map(float, row["weights"]), strict=True))
        out.ordered = True  # written strongest first by ``to_row``
        return out


def covisit_anchors(profile: UserProfile, event: Event) -> tuple[str, ...]:
    """The items that ``event`` links to its item: the user's ``ANCHORS`` most recent other
    engagements within ``LOOKBACK_S``, read from the profile as it was *before* the event."""
    if event.type is EventType.SEARCH or event.item_id is None:
        return ()
    ts = event.epoch
    since = ts - LOOKBACK_S
    target = event.item_id
    recent: dict[str, float] = {}
    for entries in profile.recent.values():
        # newest first: the ANCHORS newest overall are among each list's ANCHORS + 1 newest
        for item, seen in islice(reversed(entries.items()), ANCHORS + 1):
            if since <= seen <= ts and item != target and seen > recent.get(item, -1.0):
                recent[item] = seen
    if not recent:
        return ()
    # newest first; equal times keep their order of discovery (a stable sort)
    return tuple(sorted(recent, key=recent.__getitem__, reverse=True)[:ANCHORS])


def covisit_edges(profile: UserProfile, event: Event) -> list[tuple[str, str, float]]:
    """Edges (A, B, weight) that ``event`` adds, from the profile as it was *before* it."""
    target = event.item_id
    if target is None:
        return []
    weight = TYPE_WEIGHTS[event.type]
    return [(anchor, target, weight) for anchor in covisit_anchors(profile, event)]


def merge_neighbours(
    rows: Iterable[CovisitRow], now: float, n: int = TOP_N
) -> list[tuple[str, float]]:
    """One anchor's rows summed over partitions, strongest first: the ``n`` strongest, as
    one row holds (the offline evaluation folds every partition into one row), so serving
    ranks from the same number of neighbours as the evaluation that judged it."""
    total: dict[str, float] = {}
    for row in rows:
        for item, weight in row.top(now=max(now, row.as_of)):
            total[item] = total.get(item, 0.0) + weight
    return sorted(total.items(), key=lambda kv: -kv[1])[:n]
