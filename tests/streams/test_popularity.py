import math
from datetime import UTC, datetime

import pytest

from streams.events import Event
from streams.popularity import (
    POPULARITY_TAU_S,
    PartitionPopularity,
    apply_popularity,
    merge_popularity,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def ev(item: str, type_: str = "view", dt: float = 0.0) -> Event:
    return Event(
        event_id=f"{item}-{dt}-{type_}",
        user_id="u",
        type=type_,  # type: ignore[arg-type]
        item_id=item,
        ts=datetime.fromtimestamp(T0 + dt, UTC),
    )


def test_weighted_decayed_counts_per_partition() -> None:
    pop = PartitionPopularity(0)
    apply_popularity(pop, ev("a", "purchase"))
    apply_popularity(pop, ev("b", "view", dt=POPULARITY_TAU_S))
    assert pop.scores["a"] == pytest.approx(6 * math.exp(-1))
    assert pop.scores["b"] == pytest.approx(1.0)
    search = Event(event_id="s", user_id="u", type="search", query="q", ts=ev("x").ts)  # type: ignore[arg-type]
    apply_popularity(pop, search)
    assert set(pop.scores) == {"a", "b"}


def test_merge_sums_partitions_at_a_common_time() -> None:
    p0, p1 = PartitionPopularity(0), PartitionPopularity(1)
    apply_popularity(p0, ev("a", "purchase"))
    apply_popularity(p1, ev("a", "view", dt=POPULARITY_TAU_S))
    apply_popularity(p1, ev("b", "click", dt=POPULARITY_TAU_S))
    merged = dict(merge_popularity([p0, p1], now=T0 + POPULARITY_TAU_S))
    assert merged["a"] == pytest.approx(6 * math.exp(-1) + 1)
    assert merged["b"] == pytest.approx(2.0)
    assert next(iter(merged)) == "a"
