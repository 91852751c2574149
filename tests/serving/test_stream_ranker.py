"""The ranker without a model: co-visitation from the newest items, popularity, ties."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from serving.api import RecommendationRequest
from serving.recommender import Arm
from serving.scorer import Scored, ScoreTask
from serving.stream_ranker import (
    ANCHOR_DECAY,
    POPULARITY_WEIGHT,
    REPEAT_WEIGHT,
    TEXT_WEIGHT,
    Neighbours,
    StreamSignals,
    popularity_by_row,
    recent_items,
)
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.covisitation import CovisitRow
from streams.events import Event, EventType
from streams.profile import UserProfile, apply_event, derive_features
from tests.serving.test_recommender import recommender


def viewed_in_order(catalog: Catalog, items: list[str]) -> UserProfile:
    """User "u" viewed ``items`` a second apart, the last one a second ago."""
    profile = UserProfile("u")
    start = datetime.now(UTC) - timedelta(seconds=len(items))
    for n, item in enumerate(items):
        ts = start + timedelta(seconds=n)
        event = Event(event_id=f"v{n}", user_id="u", type=EventType.VIEW, item_id=item, ts=ts)
        apply_event(profile, event, catalog)
    return profile


def test_newer_anchors_count_more_and_popularity_is_a_share() -> None:
    """Rows 0-3 of a catalog; "new" (row 4) and "old" (not in the catalog) are the
    user's newest items, in that order."""
    index = {"a": 0, "b": 1, "c": 2, "d": 3, "new": 4}
    new = Neighbours.of([("a", 10.0)], index)
    old = Neighbours.of([("b", 10.0), ("c", 5.0), ("gone", 20.0)], index)  # gone: not held
    popular = popularity_by_row([("d", 100.0), ("a", 50.0)], index, 5)
    signals = StreamSignals.of([4, None], [new, old], popular)
    assert signals.scores(np.array([0, 1, 2, 3, 4])).tolist() == [
        1.0 + POPULARITY_WEIGHT * 0.5,  # the newest anchor's neighbour, and half as popular
        ANCHOR_DECAY,
        ANCHOR_DECAY / 2,
        POPULARITY_WEIGHT,  # known to popularity alone
        REPEAT_WEIGHT,  # the newest item itself, where the shop's rule lets it come back
    ]
    # an item's score does not depend on the rows scored with it
    assert signals.scores(np.array([2]))[0] == signals.scores(np.arange(5))[2]
    nothing = StreamSignals.of([], [], np.zeros(4))
    assert nothing.scores(np.arange(4)).tolist() == [0.0] * 4  # nothing known: no signal


def test_recent_items_are_the_newest_first_each_once(catalog: Catalog) -> None:
    features = derive_features(viewed_in_order(catalog, ["1", "2", "3", "2", "4"]), time.time())
    assert recent_items(features, n=3) == ["4", "2", "3"]
    assert recent_items(features) == ["4", "2", "3", "1"]
    assert recent_items(None) == []


def test_without_a_model_the_stream_ranks_with_the_encoders_cosine(
    home: Path, catalog: Catalog
) -> None:
    """A user who viewed 1, 2, 3 (in that order): what others engaged with after item 3
    comes first, then what followed item 1; the untrained scorer's cosine is added (it
    lifts its favourite above items the stream knows nothing of, not above a strong
    co-visit)."""
    from serving.scorer import ScorerModel

    asked: list[ScoreTask] = []
    favourite = 150  # a catalog row among the candidates (popular, by catalog order)
    viewed = viewed_in_order(catalog, ["1", "2", "3"])
    interest = derive_features(viewed, time.time()).interest
    assert interest is not None
    untrained = ScorerModel(Settings(home=home), None)  # the pretrained encoder
    untrained.item_vectors = np.outer(np.full(len(catalog), 0.1), interest).astype(np.float32)
    untrained.item_vectors[favourite] = 0.25 * interest  # cosine 0.1, the favourite's 0.25

    async def encoder(task: ScoreTask) -> Scored | None:
        asked.append(task)
        return untrained.score_batch([task])[0]

    r = recommender(home, catalog, encoder)
    r.profiles.write_profiles([viewed])
    r.arms = {"main": Arm(encoder, "stream-default+test", None, trained=False)}
    now = time.time()
    after_3, after_1 = CovisitRow(0, "3"), CovisitRow(0, "1")
    after_3.add("181", 5.0, now)
    after_3.add("50", 1.0, now)
    after_1.add("100", 9.0, now)
    r.profiles.write_covisits([after_3, after_1])
    answer = asyncio.run(r.recommend(RecommendationRequest(user_id="u", k=5))).model_dump()
    scores = {i["item_id"]: i["score"] for i in answer["items"]}
    assert answer["strategy"] == "personalized"
    assert answer["model_version"] == "stream-default+test"
    assert len(asked) == 1 and asked[0].query is None
    assert asked[0].retrieve == 0  # the stream's candidates: no model to retrieve with
    text = TEXT_WEIGHT * 0.1
    assert scores["181"] == pytest.approx(1.0 + text)  # the newest anchor's strongest edge
    assert scores["100"] == pytest.approx(ANCHOR_DECAY**2 * 9.0 / 5.0 + text)  # 2 steps back
    assert scores["50"] == pytest.approx(1.0 / 5.0 + text)
    assert [i["item_id"] for i in answer["items"][:2]] == ["181", "100"]
    # the encoder's favourite, over the items nothing else knows
    assert scores[catalog.ids[favourite]] == pytest.approx(TEXT_WEIGHT * 0.25)
