"""The request path without Ray: a real online store, a scorer that misbehaves."""

import asyncio
from pathlib import Path

import numpy as np
import pytest

from feature_repo.store import apply_repo
from serving.api import RecommendationRequest
from serving.recommender import Arm, Recommender, ScoreFn
from serving.scorer import ScoreTask
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.impressions import Impression
from streams.sink import FeastProfileStore
from tests.serving.test_ranking import profile_of


def recommender(
    home: Path, catalog: Catalog, score: ScoreFn, timeout_s: float = 0.2
) -> Recommender:
    store = FeastProfileStore(apply_repo(Settings(home=home)))
    store.write_profiles([profile_of(catalog, ["1", "2", "3"], [])])
    return Recommender(
        catalog,
        store,
        {"main": Arm(score, "test")},
        partitions=4,
        score_timeout_s=timeout_s,
        impressions=shown.append,
    )


shown: list[Impression] = []


def ask(r: Recommender) -> dict:
    request = RecommendationRequest(user_id="u", k=5)
    return asyncio.run(r.recommend(request)).model_dump()


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("slow", "scorer slower than 0.2s"), ("broken", "scorer unavailable (RuntimeError)")],
)
def test_a_slow_or_failing_scorer_gives_flagged_popular_items(
    home: Path, catalog: Catalog, behaviour: str, reason: str
) -> None:
    async def score(task: ScoreTask) -> np.ndarray:
        if behaviour == "slow":
            await asyncio.sleep(5)
        raise RuntimeError("replica died")

    answer = ask(recommender(home, catalog, score))
    assert answer["strategy"] == "fallback"
    assert answer["fallback_reason"] == reason
    assert len(answer["items"]) == 5
    assert answer["profile"]["events"] == 3  # the profile was read; only scoring fell back


def test_a_healthy_scorer_personalizes(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> np.ndarray:
        assert task.profile is not None and task.profile.event_count == 3
        return -task.item_rows.astype(float)  # lowest rows first

    answer = ask(recommender(home, catalog, score))
    assert (answer["strategy"], answer["fallback_reason"]) == ("personalized", None)
    assert all(0 < item["propensity"] <= 1 for item in answer["items"])


def test_each_answer_is_logged_as_an_impression_of_its_arm(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> np.ndarray:
        return np.zeros(len(task.item_rows))

    shown.clear()
    answer = ask(recommender(home, catalog, score))
    (impression,) = shown
    assert impression.request_id == answer["request_id"]
    assert (impression.arm, impression.model_version) == ("main", "test")
    assert impression.items == [i["item_id"] for i in answer["items"]]
    assert impression.propensities == [i["propensity"] for i in answer["items"]]
