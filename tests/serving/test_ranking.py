"""Candidates, rules and explanations on the real catalog, without Ray."""

import copy
import random
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from serving.candidates import Candidate, CandidateGenerator, CandidatesBuilder, Popularity
from serving.ranking import (
    RankingPolicy,
    Shortlist,
    ShowAgain,
    blocked_items,
    diversify,
    explore,
    rank,
)
from serving.scorer import combine
from streamrank.catalog import Catalog
from streams.events import Event
from streams.profile import RECENT_N, UserProfile, apply_event, derive_features


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


def nothing_streamed(catalog: Catalog) -> Popularity:
    return CandidateGenerator(catalog).popularity([])


def test_candidates_come_from_every_source(catalog: Catalog) -> None:
    features = derive_features(profile_of(catalog, ["1", "2"], []), time.time())
    candidates = CandidateGenerator(catalog, n_popular=30, n_interest=40)
    found = candidates.generate(
        features, candidates.popularity([("50", 3.0), ("100", 2.0)]), context_item="181"
    )
    sources = {c.source for c in found}
    assert sources == {"recent", "similar", "interest", "popular"}
    anchors = {c.anchor for c in found if c.anchor}
    assert {"181", "2"} <= anchors


def test_an_item_several_sources_bring_keeps_the_first_ones_source_and_anchor() -> None:
    found = CandidatesBuilder()
    found.add([3, 4], "covisit", "a")
    found.add([4, 5], "similar", "b")
    found.add([], "interest")
    found.add([5, 6, 3], "popular")
    candidates = found.build()
    assert list(candidates) == [
        Candidate(3, "covisit", "a"),
        Candidate(4, "covisit", "a"),
        Candidate(5, "similar", "b"),
        Candidate(6, "popular", None),
    ]
    more = candidates.extended(np.array([9]), "model")  # the scorer's own finds
    assert len(candidates) == 4 and more.at(4) == Candidate(9, "model", None)
    assert len(CandidatesBuilder().build()) == 0


def test_requested_items_are_the_known_ones_each_once_in_the_callers_order(
    catalog: Catalog,
) -> None:
    a, b, c = catalog.ids[7], catalog.ids[3], catalog.ids[11]
    found = CandidateGenerator(catalog).requested([a, "no-such-item", b, a, c, b])
    assert [catalog.ids[r] for r in found.rows] == [a, b, c]
    assert [(x.source, x.anchor) for x in found] == [("requested", None)] * 3
    assert len(CandidateGenerator(catalog).requested(["no-such-item"])) == 0


def test_a_new_visitor_still_gets_candidates(catalog: Catalog) -> None:
    candidates = CandidateGenerator(catalog, n_popular=25)
    found = candidates.generate(None, candidates.popularity([]))
    assert len(found) == 25


def test_the_shops_rule_says_which_of_the_users_own_items_may_come_back(
    catalog: Catalog,
) -> None:
    features = derive_features(profile_of(catalog, ["1", "5"], ["2"]), time.time())
    rules = {rule: blocked_items(features, ["3"], "4", rule) for rule in ShowAgain}
    assert rules[ShowAgain.NONE] == {"1", "5", "2", "3", "4"}
    assert rules[ShowAgain.UNBOUGHT] == {"2", "3", "4"}  # purchases never come back
    assert rules[ShowAgain.ALL] == {"3", "4"}  # the caller's and the item in view still go
    assert blocked_items(None, (), None, ShowAgain.NONE) == set()
    # what fell out of the recent lists is still remembered (a heavy user's 21st item)
    old = [str(i) for i in range(6, 6 + 2 * RECENT_N)]
    heavy = derive_features(profile_of(catalog, old, old), time.time())
    assert set(old) - set(heavy.purchased)  # some left the recent list ...
    assert set(old) <= blocked_items(heavy, (), None, ShowAgain.NONE)  # ... none comes back
    assert set(old) <= blocked_items(heavy, (), None, ShowAgain.UNBOUGHT)
    # the settings' choices are the rule's names (settings import no serving code)
    from typing import get_args

    from streamrank.settings import Settings

    choices = get_args(Settings.model_fields["ranking_show_again"].annotation)
    assert set(choices) == {r.value for r in ShowAgain}


def test_own_items_are_candidates_and_say_why_they_came_back(catalog: Catalog) -> None:
    features = derive_features(profile_of(catalog, ["1", "5"], []), time.time())
    found = CandidateGenerator(catalog).generate(features, nothing_streamed(catalog))
    mine = [c for c in found if c.source == "recent"]
    assert {catalog.ids[c.row] for c in mine} == {"1", "5"}
    scores = np.array([1.0 if c.source == "recent" else 0.0 for c in found])
    blocked = blocked_items(features, show_again=ShowAgain.UNBOUGHT)
    items = rank(Shortlist(found, scores, catalog, blocked), 2, features)
    assert {i.item_id for i in items} == {"1", "5"}
    assert {i.reason for i in items} == {"you looked at this recently"}
    hidden = rank(Shortlist(found, scores, catalog, blocked_items(features)), 2, features)
    assert not {i.item_id for i in hidden} & {"1", "5"}  # the default rule: none come back


def test_bought_seen_excluded_and_in_view_items_are_never_ranked(catalog: Catalog) -> None:
    features = derive_features(profile_of(catalog, ["1"], ["2"]), time.time())
    blocked = blocked_items(features, ["3"], "4")
    assert blocked == {"1", "2", "3", "4"}
    found = CandidateGenerator(catalog).generate(features, nothing_streamed(catalog))
    assert len(set(found.rows.tolist())) == len(found)  # each item once
    assert features.interest is not None
    scores = catalog.vectors(found.rows) @ features.interest
    items = rank(Shortlist(found, scores, catalog, blocked), 10, features)  # score order
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
    candidates = CandidateGenerator(catalog, n_popular=50)
    found = candidates.generate(None, candidates.popularity([]))
    items = rank(Shortlist(found, np.ones(len(found)), catalog, set()), k, None)
    assert len(items) == min(k, 50)


def test_diversity_spreads_categories_and_zero_keeps_score_order() -> None:
    scores = np.array([1.0, 0.99, 0.98, 0.97, 0.5, 0.4])
    # columns Drama, Comedy, Horror: four dramas, a comedy, a horror film
    cats = np.array([[1, 0, 0]] * 4 + [[0, 1, 0], [0, 0, 1]], dtype=np.float32)
    assert diversify(scores, cats, 4, 0.0) == [0, 1, 2, 3]
    spread = diversify(scores, cats, 4, 0.5)
    assert spread[0] == 0 and {4, 5} <= set(spread)  # one drama, then the other categories
    assert sorted(diversify(scores, cats, 6, 0.5)) == list(range(6))  # nothing lost


def test_exploration_share_and_propensities() -> None:
    rng = random.Random(7)
    ranked = list(range(100))
    explored = shown = 0
    for _ in range(200):
        slots = explore(ranked, 100, 10, 0.2, rng)
        assert len({pos for pos, _, _ in slots}) == 10  # never the same item twice
        for _pos, propensity, was_explored in slots:
            shown += 1
            explored += was_explored
            assert propensity == (
                pytest.approx(0.2 / (100 - len(slots)), rel=0.2)
                if was_explored
                else pytest.approx(0.8)
            )
    assert 0.15 < explored / shown < 0.25
    assert [p for p, _, _ in explore(ranked, 100, 10, 0.0, rng)] == list(range(10))


def test_ranked_items_carry_propensities(catalog: Catalog) -> None:
    candidates = CandidateGenerator(catalog, n_popular=50)
    found = candidates.generate(None, candidates.popularity([]))
    policy = RankingPolicy(diversity=0.3, exploration=0.5)
    items = rank(
        Shortlist(found, np.linspace(1, 0, len(found)), catalog, set()),
        10,
        None,
        policy=policy,
        rng=random.Random(1),
    )
    assert len(items) == 10
    assert {i.reason for i in items if i.propensity < 0.5} == {"something new to try"}
    assert any(i.propensity == 0.5 for i in items)


def test_items_out_of_stock_are_never_ranked(catalog: Catalog) -> None:
    candidates = CandidateGenerator(catalog, n_popular=50)
    found = candidates.generate(None, candidates.popularity([]))
    out_of_stock = copy.copy(catalog)
    out_of_stock.available = catalog.available.copy()
    best = int(found.rows[0])  # the top score below
    out_of_stock.available[best] = False
    scores = np.linspace(1.0, 0.0, len(found))
    shown = {i.item_id for i in rank(Shortlist(found, scores, out_of_stock, ()), 10, None)}
    assert catalog.ids[best] not in shown
    assert len(shown) == 10
    in_stock = rank(Shortlist(found, scores, catalog, ()), 10, None)
    assert catalog.ids[best] in {i.item_id for i in in_stock}


def test_search_matches_join_the_candidates(catalog: Catalog) -> None:
    matches = np.array([catalog.index["1"], catalog.index["2"]])
    candidates = CandidateGenerator(catalog)
    popular = candidates.popularity([("50", 3.0), ("100", 2.0)])
    found = candidates.generate(None, popular, matches=matches)
    assert {catalog.ids[c.row]: c.source for c in found} == {
        "1": "search",
        "2": "search",
        "50": "popular",
        "100": "popular",
    }


def test_a_search_is_ranked_by_relevance_alone(catalog: Catalog) -> None:
    """Diversity and exploration would put other categories and random items ahead of what
    was searched for; with a query, the order is the score order and nothing is explored."""
    candidates = CandidateGenerator(catalog, n_popular=50)
    found = candidates.generate(None, candidates.popularity([]))
    scores = np.linspace(1.0, 0.0, len(found))
    policy = RankingPolicy(diversity=0.9, exploration=0.9)
    args = (Shortlist(found, scores, catalog, ()), 10, None)
    searched = rank(*args, query="horror", policy=policy, rng=random.Random(0))
    assert [i.item_id for i in searched] == [catalog.ids[r] for r in found.rows[:10]]
    assert {i.propensity for i in searched} == {1.0}
    browsed = rank(*args, policy=policy, rng=random.Random(0))
    assert [i.item_id for i in browsed] != [i.item_id for i in searched]


def test_category_membership_gives_the_jaccard_of_the_items_categories(catalog: Catalog) -> None:
    rows = np.random.default_rng(3).choice(len(catalog), 60, replace=False)
    member = catalog.category_membership(rows)
    assert member.shape[0] == len(rows) and set(np.unique(member)) <= {0.0, 1.0}
    shared = member @ member.T
    for i, a in enumerate(rows.tolist()):
        for j, b in enumerate(rows.tolist()):
            sa, sb = set(catalog.categories_at(a)), set(catalog.categories_at(b))
            assert shared[i, j] == len(sa & sb)


def test_a_kept_shortlist_ranks_as_a_fresh_one_for_any_k_and_exclusions(
    catalog: Catalog,
) -> None:
    """A user's own page is ranked again and again from one shortlist, its diversified
    tops and reasons kept: each answer must equal one from a shortlist made for that
    request alone, with the request's exclusions blocked from the start."""
    features = derive_features(profile_of(catalog, ["1", "5", "7"], ["2"]), time.time())
    found = CandidateGenerator(catalog).generate(features, nothing_streamed(catalog))
    scores = np.random.default_rng(3).random(len(found))
    blocked = blocked_items(features)
    policy = RankingPolicy(diversity=0.4, exploration=0.0)
    kept = Shortlist(found, scores, catalog, blocked)
    top = [i.item_id for i in rank(kept, 10, features, policy=policy)]
    for k, exclude in [(10, []), (3, []), (10, top[:2]), (5, [top[0], "no-such-item"]), (10, [])]:
        fresh = Shortlist(found, scores, catalog, blocked | set(exclude))
        expected = rank(fresh, k, features, policy=policy)
        answer = rank(kept, k, features, exclude, policy=policy)
        assert [i.model_dump() for i in answer] == [i.model_dump() for i in expected]
        assert not {i.item_id for i in answer} & set(exclude)
    assert [i.item_id for i in rank(kept, 10, features, policy=policy)] == top
    exploring = RankingPolicy(diversity=0.4, exploration=0.3)  # slots drawn alike by seed
    explored = 0
    for seed, exclude in enumerate([[], top[:3], [], []]):
        fresh = Shortlist(found, scores, catalog, blocked | set(exclude))
        expected = rank(fresh, 10, features, policy=exploring, rng=random.Random(seed))
        answer = rank(kept, 10, features, exclude, policy=exploring, rng=random.Random(seed))
        assert [i.model_dump() for i in answer] == [i.model_dump() for i in expected]
        explored += sum(i.reason == "something new to try" for i in answer)
    assert explored > 0
