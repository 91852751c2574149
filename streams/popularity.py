"""Item popularity kept by the stream: decayed, engagement-weighted counts per item and
window (1 h, 24 h, 7 d).

Users, not items, key the events topic, so each partition's worker sees a share of every
item's events. Popularity is therefore kept per partition (a row per partition in the
online store) and merged by the reader; with several workers each writes only its own
partitions' rows, and the merged sum is exact. A row carries the last offset it applied,
so a redelivered message is not counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.decay import growth, needs_rebase, value_at
from streams.events import Event, EventType
from streams.profile import TYPE_WEIGHTS

POPULARITY_WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86_400.0, "7d": 7 * 86_400.0}
SHORTEST_TAU_S = min(POPULARITY_WINDOWS.values())
POPULAR_TOP_N = 1000
"""Items kept per window in a partition row; the tail is forgotten (a soft signal)."""


@dataclass
class PartitionPopularity:
    """Per item, one decayed sum per window, relative to ``ref`` (see streams/decay.py)."""

    partition: int
    as_of: float = 0.0
    ref: float = 0.0
    scores: dict[str, list[float]] = field(default_factory=dict)
    applied_offset: int = -1

    def rebase(self, new_ref: float) -> None:
        factors = [value_at(1.0, self.ref, tau, new_ref) for tau in POPULARITY_WINDOWS.values()]
        for values in self.scores.values():
            for i, factor in enumerate(factors):
                values[i] *= factor
        self.ref = new_ref

    def top(
        self, window: str, n: int = POPULAR_TOP_N, now: float | None = None
    ) -> list[tuple[str, float]]:
        i = list(POPULARITY_WINDOWS).index(window)
        factor = value_at(1.0, self.ref, POPULARITY_WINDOWS[window], now or self.as_of)
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1][i])[:n]
        return [(item, values[i] * factor) for item, values in ranked if values[i] > 0]

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "partition_id": self.partition,
            "as_of": self.as_of,
            "applied_offset": self.applied_offset,
        }
        for window in POPULARITY_WINDOWS:
            top = self.top(window)
            row[f"items_{window}"] = [i for i, _ in top]
            row[f"scores_{window}"] = [s for _, s in top]
        return row

    @classmethod
    def from_row(cls, partition: int, row: Mapping[str, Any] | None) -> PartitionPopularity:
        pop = cls(partition)
        if not row or row.get("as_of") is None:
            return pop
        pop.as_of = pop.ref = float(row["as_of"])
        pop.applied_offset = int(row["applied_offset"])
        n = len(POPULARITY_WINDOWS)
        for i, window in enumerate(POPULARITY_WINDOWS):
            for item, score in zip(row[f"items_{window}"], row[f"scores_{window}"], strict=True):
                pop.scores.setdefault(item, [0.0] * n)[i] = float(score)
        return pop


def apply_popularity(pop: PartitionPopularity, event: Event) -> None:
    if event.type is EventType.SEARCH or event.item_id is None:
        return
    add_popularity(pop, event.type, event.item_id, event.epoch)


def add_popularity(
    pop: PartitionPopularity, event_type: EventType, item_id: str, ts: float
) -> None:
    if not pop.ref:
        pop.ref = ts
    elif needs_rebase(ts, pop.ref, SHORTEST_TAU_S):
        pop.rebase(ts)
    pop.as_of = max(pop.as_of, ts)
    weight = TYPE_WEIGHTS[event_type]
    values = pop.scores.get(item_id)
    if values is None:
        values = pop.scores[item_id] = [0.0] * len(POPULARITY_WINDOWS)
    for i, tau in enumerate(POPULARITY_WINDOWS.values()):
        values[i] += weight * growth(ts, pop.ref, tau)


def trim(pop: PartitionPopularity, keep: int = 4 * POPULAR_TOP_N) -> None:
    """Bound memory: keep the items strongest in the longest window."""
    if len(pop.scores) > 2 * keep:
        pop.scores = dict(sorted(pop.scores.items(), key=lambda kv: -kv[1][-1])[:keep])


def merge_popularity(
    rows: Iterable[PartitionPopularity], now: float, window: str = "24h"
) -> list[tuple[str, float]]:
    """All partitions' scores in one window, brought to ``now`` and summed, best first."""
    total: dict[str, float] = {}
    for row in rows:
        for item, score in row.top(window, now=max(now, row.as_of)):
            total[item] = total.get(item, 0.0) + score
    return sorted(total.items(), key=lambda kv: -kv[1])
