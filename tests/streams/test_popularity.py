import math
from datetime import UTC, datetime

import pytest

from streams.events import Event
from streams.popularity import (
    POPULARITY_WINDOWS,
    PartitionPopularity,
    apply_popularity,
    merge_popularity,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
DAY = POPULARITY_WINDOWS["24h"]


def ev(item: str, type_: str = "view", dt: float = 0.0) -> Event:
    return Event(
        event_id=f"{item}-{dt}-{type_}",
        user_id="u",
        type=type_,  # type: ignore[arg-type]
        item_id=item,
        ts=datetime.fromtimestamp(T0 + dt, UTC),
    )


def test_weighted_decayed_counts_per_window() -> None:
    pop = PartitionPopularity(0)
    apply_popularity(pop, ev("a", "purchase"))
    apply_popularity(pop, ev("b", "view", dt=DAY))
    day = dict(pop.top("24h"))
    hour = dict(pop.top("1h"))
    assert day["a"] == pytest.approx(6 * math.exp(-1))
    assert day["b"] == pytest.approx(1.0)
    assert hour["a"] == pytest.approx(6 * math.exp(-24), rel=1e-6)
    assert list(dict(pop.top("7d"))) == ["a", "b"]  # a week-long window still ranks a first
    search = Event(event_id="s", user_id="u", type="search", query="q", ts=ev("x").ts)  # type: ignore[arg-type]
    apply_popularity(pop, search)
    assert set(pop.scores) == {"a", "b"}


def test_long_gaps_rebase_without_losing_precision() -> None:
    pop = PartitionPopularity(0)
    for day in range(60):  # 60 days of one view a day: rebased many times
        apply_popularity(pop, ev("a", "view", dt=day * DAY))
    expected = sum(math.exp(-d) for d in range(60))
    assert dict(pop.top("24h"))["a"] == pytest.approx(expected, rel=1e-9)


def test_row_round_trip_keeps_the_top_lists() -> None:
    pop = PartitionPopularity(3)
    for i, item in enumerate("abcde"):
        apply_popularity(pop, ev(item, "click", dt=i * 600))
    pop.applied_offset = 17
    back = PartitionPopularity.from_row(3, pop.to_row())
    assert back.applied_offset == 17
    for window in POPULARITY_WINDOWS:
        assert dict(back.top(window)) == pytest.approx(dict(pop.top(window)))


def test_merge_sums_partitions_at_a_common_time() -> None:
    p0, p1 = PartitionPopularity(0), PartitionPopularity(1)
    apply_popularity(p0, ev("a", "purchase"))
    apply_popularity(p1, ev("a", "view", dt=DAY))
    apply_popularity(p1, ev("b", "click", dt=DAY))
    merged = dict(merge_popularity([p0, p1], now=T0 + DAY))
    assert merged["a"] == pytest.approx(6 * math.exp(-1) + 1)
    assert merged["b"] == pytest.approx(2.0)
    assert next(iter(merged)) == "a"
