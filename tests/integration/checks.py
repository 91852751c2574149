"""What the integration tests compare: stored profiles against an offline fold."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from streamrank.catalog import Catalog
from streams.consistency import feature_differences
from streams.covisitation import CovisitRow, covisit_edges, merge_neighbours
from streams.events import Event
from streams.popularity import PartitionPopularity, apply_popularity, merge_popularity
from streams.producer import partition_for
from streams.profile import UserProfile, apply_event
from streams.sink import FeastProfileStore


def offline_truth(events: Iterable[Event], catalog: Catalog) -> dict[str, UserProfile]:
    """The same profile function over the same events, in one process, no Kafka."""
    truth: dict[str, UserProfile] = {}
    for event in events:
        apply_event(truth.setdefault(event.user_id, UserProfile(event.user_id)), event, catalog)
    return truth


def assert_profiles_equal(stored: dict[str, UserProfile], truth: dict[str, UserProfile]) -> None:
    """Exact counts and lists; decayed values and embeddings within float tolerance (the
    comparison ``streamrank verify-consistency`` makes)."""
    differences = [
        d for user, want in truth.items() for d in feature_differences(stored[user], want)
    ]
    assert not differences, differences[:5]


def item_truth(
    events: Iterable[Event], catalog: Catalog, partitions: list[int]
) -> tuple[list[PartitionPopularity], dict[str, list[CovisitRow]]]:
    """Popularity per partition and co-visitation rows, folded offline as the worker does."""
    popularity = {p: PartitionPopularity(p) for p in partitions}
    covisits: dict[tuple[int, str], CovisitRow] = {}
    profiles: dict[str, UserProfile] = {}
    for event in events:
        part = partition_for(event.user_id, len(partitions))
        profile = profiles.setdefault(event.user_id, UserProfile(event.user_id))
        edges = covisit_edges(profile, event)
        if apply_event(profile, event, catalog):
            apply_popularity(popularity[part], event)
            for anchor, target, weight in edges:
                row = covisits.setdefault((part, anchor), CovisitRow(part, anchor))
                row.add(target, weight, event.epoch)
    by_anchor: dict[str, list[CovisitRow]] = {}
    for (_, anchor), row in covisits.items():
        by_anchor.setdefault(anchor, []).append(row)
    return list(popularity.values()), by_anchor


def assert_items_equal(
    store: FeastProfileStore,
    partitions: list[int],
    truth: tuple[list[PartitionPopularity], dict[str, list[CovisitRow]]],
) -> None:
    popularity, covisits = truth
    now = max(p.as_of for p in popularity) + 1
    stored_pop = store.read_popularity(partitions).values()
    for window in ("1h", "24h", "7d"):
        ranked = merge_popularity(popularity, now, window)[:50]
        # rows keep each partition's top items only: compare the items that matter
        significant = {i: s for i, s in ranked if s >= 1e-3 * ranked[0][1]}
        got = dict(merge_popularity(stored_pop, now, window))
        for item, score in significant.items():
            assert got.get(item) == pytest.approx(score, rel=1e-6), (window, item)
    anchors = sorted(covisits, key=lambda a: -sum(len(r.neighbours) for r in covisits[a]))[:20]
    rows = store.read_covisits([(p, a) for a in anchors for p in partitions])
    for anchor in anchors:
        want = dict(merge_neighbours(covisits[anchor], now)[:5])
        got = dict(merge_neighbours([rows[(p, anchor)] for p in partitions], now))
        for item, weight in want.items():
            assert got.get(item) == pytest.approx(weight, rel=1e-6), (anchor, item)
