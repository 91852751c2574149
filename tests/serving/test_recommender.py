"""The request path without Ray: a real online store, a scorer that misbehaves."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from feature_repo.store import apply_repo
from serving.api import RecommendationRequest
from serving.recommender import Arm, Recommender, ScoreFn, SearchFn
from serving.scorer import Scored, ScoreTask
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.impressions import Impression
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore
from tests.serving.test_ranking import profile_of


def recommender(
    home: Path,
    catalog: Catalog,
    score: ScoreFn,
    timeout_s: float = 0.2,
    search: SearchFn | None = None,
) -> Recommender:
    store = FeastProfileStore(apply_repo(Settings(home=home)))
    store.write_profiles([profile_of(catalog, ["1", "2", "3"], [])])
    return Recommender(
        catalog,
        store,
        {"main": Arm(score, "test", search)},
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
    async def score(task: ScoreTask) -> Scored:
        if behaviour == "slow":
            await asyncio.sleep(5)
        raise RuntimeError("replica died")

    answer = ask(recommender(home, catalog, score))
    assert answer["strategy"] == "fallback"
    assert answer["fallback_reason"] == reason
    assert len(answer["items"]) == 5
    assert answer["profile"]["events"] == 3  # the profile was read; only scoring fell back


def test_a_healthy_scorer_personalizes(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> Scored:
        assert task.profile is not None and task.profile.event_count == 3
        return Scored(task.item_rows, -task.item_rows.astype(float))  # lowest rows first

    answer = ask(recommender(home, catalog, score))
    assert (answer["strategy"], answer["fallback_reason"]) == ("personalized", None)
    assert all(0 < item["propensity"] <= 1 for item in answer["items"])


def test_each_answer_is_logged_as_an_impression_of_its_arm(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> Scored:
        return Scored(task.item_rows, np.zeros(len(task.item_rows)))

    shown.clear()
    answer = ask(recommender(home, catalog, score))
    (impression,) = shown
    assert impression.request_id == answer["request_id"]
    assert (impression.arm, impression.model_version) == ("main", "test")
    assert impression.items == [i["item_id"] for i in answer["items"]]
    assert impression.propensities == [i["propensity"] for i in answer["items"]]


def test_a_search_query_brings_its_matches_into_the_ranking(home: Path, catalog: Catalog) -> None:
    from serving.api import RecommendationContext

    wanted = np.array([catalog.index[i] for i in ("500", "501", "502")])

    async def search(query: str, n: int) -> np.ndarray:
        assert query == "space opera"
        return wanted

    async def score(task: ScoreTask) -> Scored:
        assert task.query == "space opera"
        return Scored(task.item_rows, np.isin(task.item_rows, wanted).astype(float))  # best

    r = recommender(home, catalog, score, search=search)
    request = RecommendationRequest(
        user_id="u", k=3, context=RecommendationContext(query="space opera")
    )
    answer = asyncio.run(r.recommend(request))
    assert {i.item_id for i in answer.items} == {"500", "501", "502"}
    assert all(i.reason == "matches your search “space opera”" for i in answer.items)


def test_a_search_that_fails_leaves_the_other_candidates(home: Path, catalog: Catalog) -> None:
    from serving.api import RecommendationContext

    async def search(query: str, n: int) -> np.ndarray:
        raise RuntimeError("replica died")

    async def score(task: ScoreTask) -> Scored:
        return Scored(task.item_rows, np.zeros(len(task.item_rows)))

    r = recommender(home, catalog, score, search=search)
    request = RecommendationRequest(user_id="u", k=5, context=RecommendationContext(query="x"))
    answer = asyncio.run(r.recommend(request))
    assert len(answer.items) == 5 and answer.strategy == "personalized"


def test_the_scorer_finds_items_by_their_text(home: Path, catalog: Catalog) -> None:
    from serving.scorer import ScorerModel

    model = ScorerModel(Settings(home=home), None)  # no model: the pretrained encoder
    titles = [catalog.titles[r] for r in model.search("Star Wars", 5)]
    assert any("Star Wars" in t for t in titles), titles


def test_concurrent_requests_share_one_popularity_refresh(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> Scored:
        return Scored(task.item_rows, np.zeros(len(task.item_rows)))

    r = recommender(home, catalog, score)
    r.popular_refresh_s = 0.0  # always due
    reads = 0
    read_popularity = r.profiles.read_popularity_async

    async def counted(partitions: list[int]) -> dict:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return await read_popularity(partitions)

    r.profiles.read_popularity_async = counted  # type: ignore[method-assign]

    async def burst() -> None:
        await r.popular()  # the first list
        await asyncio.gather(*(r.popular() for _ in range(20)))
        await asyncio.sleep(0.3)  # let the background refresh finish

    asyncio.run(burst())
    assert reads == 2  # the first, then one background refresh for all twenty


def test_the_raw_id_is_looked_up_and_logged_as_its_pseudonym(home: Path, catalog: Catalog) -> None:
    async def score(task: ScoreTask) -> Scored:
        return Scored(task.item_rows, np.zeros(len(task.item_rows)))

    r = recommender(home, catalog, score)
    pseudonym = Pseudonymizer(b"key")
    stored = r.profiles.read_profiles(["u"])["u"]
    stored.user_id = pseudonym("u")
    r.profiles.write_profiles([stored])  # what the stream wrote for raw id "u"
    r.pseudonyms = pseudonym
    shown.clear()
    answer = ask(r)
    assert answer["strategy"] == "personalized"  # found under the pseudonym
    assert answer["user_id"] == "u"  # the caller's own id back
    assert [i.user_id for i in shown] == [pseudonym("u")]  # the impression: pseudonym only


def test_an_anchors_merged_covisits_are_kept_for_the_refresh_interval(
    home: Path, catalog: Catalog
) -> None:
    """Requests sharing an anchor read its partitions' rows once per refresh; a row the
    worker writes since is seen after the refresh, and a cache of 0 seconds reads each
    time."""
    from streams.covisitation import CovisitRow

    async def score(task: ScoreTask) -> Scored:
        return Scored(task.item_rows, np.zeros(len(task.item_rows)))

    r = recommender(home, catalog, score)
    read = r.profiles.read_covisits_async
    keys_read: list[tuple[int, str]] = []

    async def counted(keys: list[tuple[int, str]]) -> dict:
        keys_read.extend(keys)
        return await read(keys)

    r.profiles.read_covisits_async = counted  # type: ignore[method-assign]
    now = time.time()
    edge = CovisitRow(1, "3")
    edge.add("181", 2.0, now)
    r.profiles.write_covisits([edge])

    def neighbours_of_3() -> list[int]:
        return asyncio.run(r.covisits(["3", "1"]))["3"].rows.tolist()

    assert neighbours_of_3() == [catalog.index["181"]]
    assert sorted(keys_read) == sorted((p, a) for p in range(4) for a in ("3", "1"))
    later = CovisitRow(2, "3")
    later.add("50", 5.0, now)
    r.profiles.write_covisits([later])
    keys_read.clear()
    assert neighbours_of_3() == [catalog.index["181"]]  # kept: no read
    assert keys_read == []
    kept = r._covisits
    assert kept is not None
    kept.expire(time.monotonic() + kept.ttl + 1.0)  # a refresh interval later
    assert neighbours_of_3() == [catalog.index[i] for i in ("50", "181")]  # summed, strongest first
    assert {a for _, a in keys_read} == {"3", "1"}

    uncached = Recommender(catalog, r.profiles, r.arms, partitions=4, covisit_refresh_s=0)
    keys_read.clear()
    for _ in range(2):
        asyncio.run(uncached.covisits(["3"]))
    assert len(keys_read) == 2 * 4
