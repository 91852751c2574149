"""Baselines on toy interactions whose right answer is obvious."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streams.events import EventType
from streams.profile import ProfileFeatures
from training.baselines import ItemKNN, MatrixFactorization, Popular, RecentPopular
from training.examples import Example, Split

ITEMS = ["a", "b", "c", "d"]


def _interactions(pairs: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["user_id", "item_id", "ts"])


def _example(user: str, seen: set[str], ts: float = 100.0) -> Example:
    features = ProfileFeatures(user, 0, {}, [], None, [], [], [], [], [], 0.0, 0, 0)
    return Example(user, "a", EventType.VIEW, ts, features, Split.TEST, frozenset(seen))


def test_popular_ranks_by_count() -> None:
    ranker = Popular(ITEMS)
    ranker.fit(_interactions([("u", "c", 1), ("v", "c", 2), ("w", "b", 3)]))
    assert np.argmax(ranker.score([_example("x", set())])[0]) == ITEMS.index("c")


def test_recent_popular_never_looks_past_the_example() -> None:
    ranker = RecentPopular(ITEMS, tau_s=10.0)
    ranker.fit(_interactions([("u", "a", 10), ("v", "a", 11), ("w", "d", 99), ("z", "b", 150)]))
    scores = ranker.score([_example("x", set(), ts=100.0)])[0]
    assert scores[ITEMS.index("b")] == 0.0  # happened after t=100
    assert scores[ITEMS.index("d")] > scores[ITEMS.index("a")]  # recent beats old
    assert np.isclose(scores[ITEMS.index("d")], np.exp(-1 / 10))


def test_item_knn_follows_co_occurrence() -> None:
    ranker = ItemKNN(ITEMS)
    ranker.fit(
        _interactions(
            [
                ("u", "a", 1),
                ("u", "b", 2),
                ("v", "a", 1),
                ("v", "b", 2),
                ("w", "c", 1),
                ("w", "d", 2),
            ]
        )
    )
    scores = ranker.score([_example("x", {"a"})])[0]
    assert np.argmax(scores) == ITEMS.index("b")
    assert scores[ITEMS.index("c")] == 0.0


def test_matrix_factorization_scores_fitted_users() -> None:
    ranker = MatrixFactorization(ITEMS, "als", factors=4)
    pairs = [(f"u{i}", "a", 1) for i in range(20)] + [(f"u{i}", "b", 2) for i in range(20)]
    ranker.fit(_interactions([*pairs, ("loner", "d", 1)]))
    scores = ranker.score([_example("u1", {"a"}), _example("stranger", set())])
    assert scores.shape == (2, len(ITEMS))
    assert scores[0, ITEMS.index("b")] > scores[0, ITEMS.index("c")]
    assert not scores[1].any()  # never seen in fitting: no opinion


def test_recent_popular_on_events_spanning_decades_is_finite_and_exact() -> None:
    """Examples years before an item's last event once gave exp(+10^4) = inf times 0 = NaN
    (and an NDCG of inf). The log-space sum equals the direct sum wherever that is
    representable, and is finite everywhere."""
    year = 365 * 86_400.0
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 20 * year, 400))
    frame = _interactions([(f"u{i}", ITEMS[i % 4], t) for i, t in enumerate(times)])
    ranker = RecentPopular(ITEMS)  # τ = 7 days
    ranker.fit(frame)
    at = np.concatenate([rng.uniform(0, 21 * year, 200), times[:50], [-year, 30 * year]])
    scores = ranker.score([_example("x", set(), ts=float(t)) for t in at])
    assert np.isfinite(scores).all()
    for row, t in enumerate(at):
        for col, item in enumerate(ITEMS):
            mine = times[(frame["item_id"] == item).to_numpy() & (times < t)]
            direct = np.exp(-(t - mine) / ranker.tau_s).sum()
            assert np.isclose(scores[row, col], direct, rtol=1e-5, atol=1e-30), (t, item)
