"""Item popularity kept by the stream: decayed, engagement-weighted counts per item.

Users, not items, key the events topic, so each partition's worker sees a share of every
item's events. Popularity is therefore kept per partition (a row per partition in the
online store) and merged by the reader; with several workers each writes only its own
partitions' rows, and the merged sum is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.events import Event, EventType
from streams.profile import TYPE_WEIGHTS

POPULARITY_TAU_S = 3 * 86_400.0
POPULAR_TOP_N = 500
"""Items kept per partition row; the tail is forgotten (popularity is a soft signal)."""


@dataclass
class PartitionPopularity:
    """Decayed engagement per item within one events partition, as of ``as_of``."""

    partition: int
    as_of: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    applied_offset: int = -1


def apply_popularity(pop: PartitionPopularity, event: Event) -> None:
    if event.type is EventType.SEARCH or event.item_id is None:
        return
    ts = event.epoch
    if ts > pop.as_of:
        if pop.as_of:
            factor = math.exp(-(ts - pop.as_of) / POPULARITY_TAU_S)
            for item in pop.scores:
                pop.scores[item] *= factor
        pop.as_of = ts
    weight = TYPE_WEIGHTS[event.type] * math.exp(-(pop.as_of - ts) / POPULARITY_TAU_S)
    pop.scores[event.item_id] = pop.scores.get(event.item_id, 0.0) + weight


def trim(pop: PartitionPopularity, top_n: int = POPULAR_TOP_N) -> None:
    if len(pop.scores) > 2 * top_n:
        pop.scores = dict(sorted(pop.scores.items(), key=lambda kv: -kv[1])[:top_n])


def merge_popularity(rows: Iterable[PartitionPopularity], now: float) -> list[tuple[str, float]]:
    """All partitions' scores brought to ``now`` and summed, most popular first."""
    total: dict[str, float] = {}
    for row in rows:
        factor = math.exp(-max(0.0, now - row.as_of) / POPULARITY_TAU_S) if row.as_of else 0.0
        for item, score in row.scores.items():
            total[item] = total.get(item, 0.0) + score * factor
    return sorted(total.items(), key=lambda kv: -kv[1])
