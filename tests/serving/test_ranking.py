"""Candidates, rules and explanations on the real catalog, without Ray."""

import time
from datetime import UTC, datetime

import numpy as np
import pytest

from serving.candidates import CandidateGenerator
from serving.ranking import blocked_items, rank
from serving.scorer import combine
from streamrank.catalog import Catalog
from streams.events import Event
from streams.profile import UserProfile, apply_event, derive_features


def profile_of(catalog: Catalog, views: list[str], buys: list[str]) -> UserProfile:
    profile = UserProfile("u")
    now = datetime.now(UTC)
    for n, (kind, item) in enumerate(
        [("view", i) for i in views] + [("purchase", i) for i in buys]
    ):
        apply_event(
            profile,
            Event(event_id=str(n), user_id="u", type=kind, item_id=item, ts=now),  # type: ignore[arg-type]
            catalog,
        )
    return profile


def test_candidates_come_from_every_source(catalog: Catalog) -> None:
    features = derive_features(profile_of(catalog, ["1", "2"], []), time.time())
    found = CandidateGenerator(catalog, n_popular=30, n_interest=40).generate(
        features, popular=[("50", 3.0), ("100", 2.0)], context_item="181"
    )
    sources = {c.source for c in found.values()}
    assert sources == {"similar", "interest", "popular"}
    anchors = {c.anchor for c in found.values() if c.anchor}
    assert {"181", "2"} <= anchors


def test_a_new_visitor_still_gets_candidates(catalog: Catalog) -> None:
    found = CandidateGenerator(catalog, n_popular=25).generate(None, popular=[])
    assert len(found) == 25


def test_bought_seen_excluded_and_in_view_items_are_never_ranked(catalog: Catalog) -> None:
    features = derive_features(profile_of(catalog, ["1"], ["2"]), time.time())
    blocked = blocked_items(features, ["3"], "4")
    assert blocked == {"1", "2", "3", "4"}
    found = CandidateGenerator(catalog).generate(features, popular=[])
    candidates = list(found.values())
    assert features.interest is not None
    scores = catalog.embeddings[np.array([c.row for c in candidates])] @ features.interest
    items = rank(candidates, scores, catalog, 10, blocked, features)
    assert len(items) == 10
    assert not {i.item_id for i in items} & blocked
    assert [i.score for i in items] == sorted((i.score for i in items), reverse=True)
    assert all(i.reason.startswith(("because you", "popular", "matches")) for i in items)


def test_query_and_interest_are_combined_into_one_unit_vector() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert combine(None, None) is None
    np.testing.assert_allclose(combine(a, None), a)
    np.testing.assert_allclose(combine(a, b), np.array([1, 1]) / np.sqrt(2))
    assert combine(a, -a) is None


@pytest.mark.parametrize("k", [1, 5, 100])
def test_rank_never_returns_more_than_k(catalog: Catalog, k: int) -> None:
    found = list(CandidateGenerator(catalog, n_popular=50).generate(None, popular=[]).values())
    items = rank(found, np.ones(len(found)), catalog, k, set(), None)
    assert len(items) == min(k, 50)
