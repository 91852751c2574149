from datetime import UTC, datetime

import pytest

from streams.covisitation import LOOKBACK_S, CovisitRow, covisit_edges, merge_neighbours
from streams.profile import UserProfile, apply_event
from tests.factories import ITEMS, T0, ev


def test_an_engagement_links_the_users_recent_items_to_it() -> None:
    profile = UserProfile("u")
    apply_event(profile, ev(1, "view", "a", dt=0), ITEMS)
    apply_event(profile, ev(2, "view", "b", dt=60), ITEMS)
    edges = covisit_edges(profile, ev(3, "purchase", "c", dt=120))
    assert sorted(edges) == [("a", "c", 6.0), ("b", "c", 6.0)]
    assert covisit_edges(profile, ev(4, "view", "b", dt=130)) == [("a", "b", 1.0)]
    assert covisit_edges(profile, ev(5, "search", dt=130)) == []


def test_old_engagements_are_not_linked() -> None:
    profile = UserProfile("u")
    apply_event(profile, ev(1, "view", "a", dt=0), ITEMS)
    assert covisit_edges(profile, ev(2, "view", "b", dt=LOOKBACK_S + 1)) == []


def test_rows_merge_over_partitions_and_round_trip() -> None:
    r0, r1 = CovisitRow(0, "a"), CovisitRow(1, "a")
    r0.add("b", 2.0, T0)
    r1.add("b", 1.0, T0)
    r1.add("c", 1.0, T0)
    r0.applied_offset = 9
    merged = dict(merge_neighbours([r0, r1], now=T0))
    assert merged == pytest.approx({"b": 3.0, "c": 1.0})
    back = CovisitRow.from_row(0, "a", r0.to_row())
    assert back.applied_offset == 9
    assert dict(back.top()) == pytest.approx(dict(r0.top()))
    assert datetime.fromtimestamp(back.as_of, UTC).year == 2026


def test_a_row_read_back_keeps_its_order_and_top_without_sorting_again() -> None:
    row = CovisitRow(0, "a")
    for n, weight in enumerate([1.0, 5.0, 3.0, 5.0, 2.0] * 30):  # more than TOP_N
        row.add(f"i{n}", weight, T0 + n)
    back = CovisitRow.from_row(0, "a", row.to_row())
    assert back.ordered and not row.ordered
    assert dict(back.top(n=50)) == pytest.approx(dict(row.top(n=50)))
    assert [i for i, _ in back.top(n=50)] == [i for i, _ in row.top(n=50)]
    back.add("new", 100.0, T0 + 200)
    assert not back.ordered and back.top(n=1)[0][0] == "new"
