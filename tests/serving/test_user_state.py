"""What serving keeps per user between requests: the same answers as a request that
builds everything afresh, until the profile changes or the state is too old."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from feature_repo.row_codec import RowCodec
from feature_repo.store import apply_repo
from serving.api import RecommendationRequest, ScoreRequest
from serving.ranking import RankingPolicy
from serving.recommender import Arm, Recommender
from serving.scorer import Scored, ScorerModel, ScoreTask
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.events import Event
from streams.profile import UserProfile, apply_event, derive_features
from streams.sink import FeastProfileStore
from tests.serving.test_ranking import profile_of

CANDIDATES = [str(i) for i in range(1, 121)]


def _model_dir(trained: Path) -> Path:
    return trained / "models" / (trained / "models" / "LATEST").read_text().strip()


class CountingScorer:
    """The trained model, scoring each task as the ingress does, with a count of the
    tasks that came with a user vector (the user tower skipped)."""

    def __init__(self, trained: Path):
        self.model = ScorerModel(Settings(home=trained), _model_dir(trained), device="cpu")
        self.tasks: list[ScoreTask] = []

    async def __call__(self, task: ScoreTask) -> Scored | None:
        self.tasks.append(task)
        return self.model.score_batch([task])[0]

    @property
    def given_vectors(self) -> list[bool]:
        return [t.user_vector is not None for t in self.tasks]


def recommender(
    store: FeastProfileStore, catalog: Catalog, scorer: CountingScorer, **kept: float
) -> Recommender:
    return Recommender(
        catalog,
        store,
        {"main": Arm(scorer, scorer.model.version)},
        partitions=4,
        policy=RankingPolicy(diversity=0.2, exploration=0.0),  # no random slot
        **kept,  # type: ignore[arg-type]
    )


def ask(r: Recommender, exclude: list[str] | None = None) -> dict:
    request = RecommendationRequest(
        user_id="u", k=10, candidate_ids=CANDIDATES, exclude_ids=exclude or []
    )
    return asyncio.run(r.recommend(request)).model_dump()


def shown(answer: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], i["score"]) for i in answer["items"]]


def assert_same_items(answer: dict, expected: dict) -> None:
    """The same items in the same order, their scores equal to float tolerance (the
    decayed counts the user vector reads moved by the microseconds between the two)."""
    assert [i for i, _ in shown(answer)] == [i for i, _ in shown(expected)]
    np.testing.assert_allclose(
        [s for _, s in shown(answer)], [s for _, s in shown(expected)], rtol=1e-5
    )


def viewed(profile: UserProfile, item: str, catalog: Catalog) -> UserProfile:
    n = profile.event_count
    event = Event(event_id=f"e{n}", user_id="u", type="view", item_id=item, ts=datetime.now(UTC))
    apply_event(profile, event, catalog)
    return profile


def test_a_kept_state_answers_as_a_fresh_one_until_the_profile_changes(
    trained: Path, catalog: Catalog
) -> None:
    store = FeastProfileStore(apply_repo(Settings(home=trained)))
    profile = profile_of(catalog, ["1", "2", "3"], [])
    store.write_profiles([profile])
    scorer, fresh_scorer = CountingScorer(trained), CountingScorer(trained)
    kept = recommender(store, catalog, scorer)
    fresh = recommender(store, catalog, fresh_scorer, user_state_cache=0)

    first, second = ask(kept), ask(kept)
    assert scorer.given_vectors == [False, True]  # the user tower ran once
    on_demand = ask(fresh)
    assert fresh_scorer.given_vectors == [False]
    for answer in (first, second):
        assert_same_items(answer, on_demand)
        assert answer["profile"] == on_demand["profile"]
    # the request's own exclusions apply on top of the kept ones
    top = shown(second)[0][0]
    assert top not in [i for i, _ in shown(ask(kept, exclude=[top]))]
    assert scorer.given_vectors[-1]

    # a new view: the next request builds a new state, which blocks the viewed item
    store.write_profiles([viewed(profile, top, catalog)])
    after = ask(kept)
    assert not scorer.given_vectors[-1]
    assert top not in [i for i, _ in shown(after)]
    assert after["profile"]["events"] == 4
    assert_same_items(after, ask(fresh))

    # an opt-out takes effect at the next request
    store.write_profiles([UserProfile.tombstone("u")])
    assert ask(kept)["strategy"] == "opted_out"


def test_a_state_is_rebuilt_once_older_than_its_max_age(trained: Path, catalog: Catalog) -> None:
    store = FeastProfileStore(apply_repo(Settings(home=trained)))
    store.write_profiles([profile_of(catalog, ["1", "2", "3"], [])])
    scorer = CountingScorer(trained)
    kept = recommender(store, catalog, scorer, user_state_max_age_s=0.3)
    ask(kept), ask(kept)
    time.sleep(0.4)
    ask(kept)
    assert scorer.given_vectors == [False, True, False]


def test_a_user_vector_given_with_a_task_is_used_as_it_is(trained: Path, catalog: Catalog) -> None:
    scorer = CountingScorer(trained).model
    features = derive_features(profile_of(catalog, ["1", "2", "3"], []), time.time())
    rows = np.arange(200)
    computed = scorer.score_batch([ScoreTask(rows, features)])[0]
    assert computed is not None and computed.user_vector is not None

    def no_tower(profiles: list) -> np.ndarray:  # type: ignore[type-arg]
        raise AssertionError("the user tower ran")

    scorer.user_vectors = no_tower  # type: ignore[method-assign]
    again = scorer.score_batch([ScoreTask(rows, features, user_vector=computed.user_vector)])[0]
    assert again is not None
    np.testing.assert_array_equal(again.scores, computed.scores)


def test_a_kept_state_reads_its_row_without_decoding_it(
    trained: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose user's state is kept reads the row's write time alone; a write of
    the row, even an unchanged one, is decoded and makes a new state."""
    store = FeastProfileStore(apply_repo(Settings(home=trained)))
    profile = profile_of(catalog, ["1", "2", "3"], [])
    store.write_profiles([profile])
    decoded: list[int] = []
    decode = RowCodec.decode

    def counted(codec: RowCodec, blob: bytes) -> dict:
        decoded.append(len(blob))
        return decode(codec, blob)

    monkeypatch.setattr(RowCodec, "decode", counted)
    scorer = CountingScorer(trained)
    kept = recommender(store, catalog, scorer)
    ask(kept), ask(kept), ask(kept)
    assert len(decoded) == 1 and scorer.given_vectors == [False, True, True]
    store.write_profiles([profile])  # the same profile, written again
    ask(kept)
    assert len(decoded) == 2 and scorer.given_vectors[-1] is False


def test_the_users_own_page_is_scored_once_per_state(trained: Path, catalog: Catalog) -> None:
    store = FeastProfileStore(apply_repo(Settings(home=trained)))
    store.write_profiles([profile_of(catalog, ["1", "2", "3"], [])])
    scorer = CountingScorer(trained)
    kept = recommender(store, catalog, scorer)

    def page(**fields: object) -> dict:
        request = RecommendationRequest.model_validate({"user_id": "u", "k": 10, **fields})
        return asyncio.run(kept.recommend(request)).model_dump()

    first, second = page(), page()
    assert len(scorer.tasks) == 1  # the second page was ranked from the kept scores
    assert shown(second) == shown(first)
    top = shown(first)[0][0]
    fewer = page(k=3, exclude_ids=[top])  # a request's own rules still apply
    assert len(fewer["items"]) == 3 and top not in [i for i, _ in shown(fewer)]
    assert len(scorer.tasks) == 1
    # an item in view or a search query makes the request's own candidates
    page(context={"item_id": "50"})
    page(context={"query": "space adventure"})
    assert len(scorer.tasks) == 3
    # popularity refreshed: the kept page stays for its state's life, while candidates
    # scored afresh read the new popularity, with the user's own vectors as a fresh build
    kept._popular = kept.candidates.popularity([("50", 2.0), ("100", 1.0)])
    assert shown(page()) == shown(first) and len(scorer.tasks) == 3
    ask(kept)
    assert len(scorer.tasks) == 4 and scorer.tasks[-1].user_vector is not None
    state = asyncio.run(kept.user_state("u"))
    rebuilt = kept._signals(state.anchors, state.covisits, kept._popular)
    sent = scorer.tasks[-1].signals
    assert sent is not None and sent.popular is kept._popular.by_row
    for name in ("covisit_rows", "covisit", "recent_rows", "recency", "popular"):
        np.testing.assert_array_equal(getattr(sent, name), getattr(rebuilt, name))


def test_item_scores_read_the_kept_state_and_equal_fresh_ones(
    trained: Path, catalog: Catalog
) -> None:
    store = FeastProfileStore(apply_repo(Settings(home=trained)))
    store.write_profiles([profile_of(catalog, ["1", "2", "3"], [])])
    scorer, fresh_scorer = CountingScorer(trained), CountingScorer(trained)
    kept = recommender(store, catalog, scorer)
    fresh = recommender(store, catalog, fresh_scorer, user_state_cache=0)
    request = ScoreRequest(user_id="u", item_ids=["10", "11", "no-such-item"])

    ask(kept)  # recommendations first: the scores reuse their user vector
    scores = asyncio.run(kept.score(request)).model_dump()
    assert scorer.given_vectors == [False, True]
    expected = asyncio.run(fresh.score(request)).model_dump()
    assert fresh_scorer.given_vectors == [False]
    assert [s["item_id"] for s in scores["scores"]] == ["10", "11", "no-such-item"]
    assert scores["scores"][2]["score"] is None and scores["fallback_reason"] is None
    np.testing.assert_allclose(
        [s["score"] for s in scores["scores"][:2]],
        [s["score"] for s in expected["scores"][:2]],
        rtol=1e-5,
    )

    store.write_profiles([UserProfile.tombstone("u")])
    opted_out = asyncio.run(kept.score(request)).model_dump()
    assert opted_out["fallback_reason"] == "the user opted out of personalization"
    assert all(s["score"] is None for s in opted_out["scores"])
