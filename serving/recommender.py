"""The request path, free of Ray: profile -> candidates -> scores -> rules -> response.

The scorer is passed in as an async function, so the Serve ingress plugs in its deployment
handle and tests can plug in the in-process ``ScorerModel``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from cachetools import TTLCache

from serving import metrics
from serving.api import (
    ItemScore,
    ProfileSummary,
    RecommendationRequest,
    RecommendationResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.candidates import CandidateGenerator, Popularity
from serving.experiments import assign_arm
from serving.ranking import RankingPolicy, Shortlist, ShowAgain, blocked_items, rank
from serving.scorer import Scored, ScoreTask
from serving.stream_ranker import Neighbours, StreamSignals
from serving.user_state import ScoredCandidates, UserState, UserStates
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.covisitation import merge_neighbours
from streams.impressions import Impression
from streams.popularity import merge_popularity
from streams.profile import ProfileFeatures, UserProfile, derive_features
from streams.pseudonyms import RAW_IDS, Pseudonymizer
from streams.sink import FeastProfileStore, StoredRow

log = logging.getLogger(__name__)

ScoreFn = Callable[[ScoreTask], Awaitable[Scored | None]]
SearchFn = Callable[[str, int], Awaitable[np.ndarray]]
R = TypeVar("R")


def _default(setting: str) -> Any:
    """A setting's default, written once (in ``Settings``), for callers without settings."""
    return Settings.model_fields[setting].default


@dataclass(frozen=True)
class Arm:
    """One experiment arm: its scorer, its query search, and the model version behind them.
    An arm without a trained model ranks users with history from the stream
    (``serving/stream_ranker.py``), its scorer (the pretrained encoder) adding the text
    term and answering search queries."""

    score: ScoreFn
    model_version: str
    search: SearchFn | None = None
    trained: bool = True


class Recommender:
    def __init__(
        self,
        catalog: Catalog,
        profiles: FeastProfileStore,
        arms: Mapping[str, Arm],
        partitions: int | Callable[[], int],
        experiment: str = "default",
        n_popular: int = _default("candidates_popular"),
        n_interest: int = _default("candidates_similar"),
        n_model: int = _default("candidates_model"),
        popular_refresh_s: float = _default("popular_refresh_s"),
        covisit_refresh_s: float = _default("covisit_refresh_s"),
        covisit_cache_anchors: int = _default("covisit_cache_anchors"),
        user_state_cache: int = _default("user_state_cache"),
        user_state_max_age_s: float = _default("user_state_max_age_s"),
        policy: RankingPolicy | None = None,
        score_timeout_s: float = _default("scorer_timeout_s"),
        store_timeout_s: float = _default("store_timeout_s"),
        impressions: Callable[[Impression], None] | None = None,
        pseudonyms: Pseudonymizer = RAW_IDS,
    ):
        self.catalog = catalog
        self.profiles = profiles
        self.arms = dict(arms)
        self.arm_names = sorted(self.arms)
        self.experiment = experiment
        self.publish_impression = impressions
        self.pseudonyms = pseudonyms  # the store, arms and impressions know pseudonyms only
        self._partitions = partitions  # a count, or a follower of the topic's (growth)
        self.candidates = CandidateGenerator(catalog, n_popular, n_interest)
        self.n_model = n_model
        self.popular_refresh_s = popular_refresh_s
        self.policy = policy or RankingPolicy()
        self.score_timeout_s = score_timeout_s
        self.store_timeout_s = store_timeout_s
        self._reads_inline = profiles.reads_inline
        self._popular = self.candidates.popularity([])
        self._popular_at = 0.0
        self._refresh: asyncio.Future[None] | None = None
        self._covisits: TTLCache[str, Neighbours] | None = None
        if covisit_refresh_s > 0 and covisit_cache_anchors > 0:
            self._covisits = TTLCache(covisit_cache_anchors, covisit_refresh_s, time.monotonic)
        # a state's signals hold co-visitation rows: no older than any request may read them
        self.states = UserStates(user_state_cache, min(user_state_max_age_s, covisit_refresh_s))

    @property
    def partitions(self) -> list[int]:
        """The events topic's partitions, whose item rows are summed."""
        count = self._partitions() if callable(self._partitions) else self._partitions
        return list(range(count))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        catalog: Catalog,
        arms: Mapping[str, Arm],
        impressions: Callable[[Impression], None] | None = None,
    ) -> Recommender:
        """The request path as the settings configure it, over the settings' store."""
        from feature_repo.store import open_store
        from streams.growth import PartitionCount

        return cls(
            catalog=catalog,
            profiles=FeastProfileStore(open_store(settings)),
            arms=arms,
            partitions=PartitionCount(settings),
            experiment=settings.experiment_name,
            n_popular=settings.candidates_popular,
            n_interest=settings.candidates_similar,
            n_model=settings.candidates_model,
            popular_refresh_s=settings.popular_refresh_s,
            covisit_refresh_s=settings.covisit_refresh_s,
            covisit_cache_anchors=settings.covisit_cache_anchors,
            user_state_cache=settings.user_state_cache,
            user_state_max_age_s=settings.user_state_max_age_s,
            policy=RankingPolicy(
                settings.ranking_diversity,
                settings.ranking_exploration,
                ShowAgain(settings.ranking_show_again),
            ),
            score_timeout_s=settings.scorer_timeout_s,
            store_timeout_s=settings.store_timeout_s,
            impressions=impressions,
            pseudonyms=Pseudonymizer.from_settings(settings),
        )

    # --- reads from the online store -----------------------------------------------------
    async def _read(self, read: Awaitable[R]) -> R:
        """A Feast read (async on Redis, inline for SQLite: ``streams/sink.py``), bounded
        in time: a store that hangs (not only one that refuses) must not hold the page;
        ``TimeoutError`` leads to the fallback. ``asyncio.timeout`` bounds it in the
        request's own task (``wait_for`` would start a task a read). An inline read never
        yields to the loop, so no timeout could end it: it runs without one."""
        if self._reads_inline:
            return await read
        async with asyncio.timeout(self.store_timeout_s):
            return await read

    async def profile_of(self, user_id: str) -> UserProfile | None:
        """The user's profile (by pseudonym); a tombstone for a user who opted out; None when
        unknown. Bounded by ``store_timeout_s``."""
        return _known(await self._stored_profile(user_id))

    async def _stored_profile(self, user_id: str) -> StoredRow | None:
        return (await self._read(self.profiles.read_stored_profiles_async([user_id])))[0]

    async def popular(self) -> Popularity:
        """Stream-kept popularity, refreshed every ``popular_refresh_s`` by one read in the
        background while requests go on with the last list (stale-while-revalidate): under
        load, every concurrent request used to start its own refresh at once."""
        due = time.monotonic() - self._popular_at > self.popular_refresh_s
        if due and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.ensure_future(self._refresh_popular())
        if not self._popular_at and self._refresh is not None:
            await self._refresh  # nothing to serve yet: wait for the first read
        return self._popular

    async def _refresh_popular(self) -> None:
        try:
            rows = await self._read(self.profiles.read_popularity_async(self.partitions))
        except Exception as exc:  # keep the last list; the next request tries again
            log.warning("popularity not refreshed (%r)", exc)
            return
        ranked = merge_popularity(rows.values(), time.time())
        self._popular = self.candidates.popularity(ranked)
        self._popular_at = time.monotonic()

    async def covisits(self, anchors: list[str]) -> dict[str, Neighbours]:
        """Each anchor's co-visited items, summed over the partitions' rows. A merged row
        is kept ``covisit_refresh_s``, so the anchors that requests share cost one read of
        their partitions' rows per refresh instead of one per request: the fewer requests
        a replica answers, the more of its anchors have expired since they were last
        read (``Settings.covisit_refresh_s``)."""
        cache = self._covisits
        found = {a: cache.get(a) for a in anchors} if cache is not None else {}
        missing = [a for a in anchors if found.get(a) is None]
        metrics.COVISIT_ROWS.labels("hit").inc(len(anchors) - len(missing))
        if missing:
            metrics.COVISIT_ROWS.labels("miss").inc(len(missing))
            partitions = self.partitions
            keys = [(p, a) for a in missing for p in partitions]
            rows = await self._read(self.profiles.read_covisits_async(keys))
            now, index = time.time(), self.catalog.index
            for a in missing:
                merged = merge_neighbours([rows[(p, a)] for p in partitions], now)
                found[a] = Neighbours.of(merged, index)
                if cache is not None:
                    cache[a] = found[a]
        return {a: found[a] for a in anchors}  # type: ignore[misc]

    # --- endpoints ------------------------------------------------------------------------
    def arm_of(self, user_id: str) -> str:
        return assign_arm(user_id, self.arm_names, self.experiment)

    async def user_state(self, user: str) -> UserState:
        """What the request needs of ``user`` that the request itself does not change,
        kept from an earlier request while the stored profile is the one it was made from
        (``serving/user_state.py``). Reads the profile's row every time; decodes it and
        rebuilds the profile from it only when it was written since."""
        stored = await self._stored_profile(user)
        popular = await self.popular()
        version = stored.written_at if stored is not None else None
        state = self.states.get(user, version)
        if state is None:
            state = await self._new_state(_known(stored), version, popular)
            self.states.put(user, state)
        elif state.popular is not popular:  # refreshed since: the signals follow it
            state.popular = popular
            state.signals = replace(state.signals, popular=popular.by_row)
        return state

    async def _new_state(
        self, profile: UserProfile | None, version: float | None, popular: Popularity
    ) -> UserState:
        opted_out = profile is not None and profile.opted_out
        features = None
        if profile is not None and not opted_out:
            features = derive_features(profile, time.time())
        anchors = self.candidates.anchors(features, None)
        covisits = await self.covisits(anchors)  # candidates, and every arm's scores
        return UserState(
            version=version,
            opted_out=opted_out,
            features=features,
            popular=popular,
            anchors=anchors,
            covisits=covisits,
            signals=self._signals(anchors, covisits, popular),
            blocked=frozenset(blocked_items(features, show_again=self.policy.show_again)),
            summary=_summary(features, self.catalog) if features else None,
        )

    def _signals(
        self, anchors: list[str], covisits: Mapping[str, Neighbours], popular: Popularity
    ) -> StreamSignals:
        index = self.catalog.index
        return StreamSignals.of(
            [index.get(a) for a in anchors], [covisits.get(a) for a in anchors], popular.by_row
        )

    def _without_store(self) -> UserState:
        """The state of a request whose store reads failed: popularity alone."""
        popular = self._popular
        return UserState(
            None, False, None, popular, [], {}, self._signals([], {}, popular), frozenset(), None
        )

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        request_id = uuid.uuid4().hex
        user = self.pseudonyms(request.user_id)
        arm_name = self.arm_of(user)
        arm = self.arms[arm_name]
        context = request.context
        query = context.query if context and context.query else None
        context_item = context.item_id if context else None
        fallback_reason = None
        try:
            state = await self.user_state(user)
            anchors, covisits, signals = state.anchors, state.covisits, state.signals
            if context_item:  # the item in view leads the anchors: this request's own
                anchors = self.candidates.anchors(state.features, context_item)
                covisits = await self.covisits(anchors)
                signals = self._signals(anchors, covisits, state.popular)
        except Exception as exc:  # the page must render even when the store is down
            log.warning("online store unavailable (%r): popularity fallback", exc)
            state, fallback_reason = self._without_store(), "profile store unavailable"
            covisits, signals = {}, state.signals
        features, opted_out = state.features, state.opted_out

        # the user's own page (no items given, no query, no item in view) is scored the
        # same for every request on one state and model: kept with the state
        own_page = request.candidate_ids is None and not query and not context_item
        page = state.pages.get(arm.model_version) if own_page else None
        if page is None:
            page, scorer_problem = await self._page(
                request, arm, state, query, context_item, covisits, signals
            )
            fallback_reason = fallback_reason or scorer_problem
            if own_page and fallback_reason is None:
                state.pages[arm.model_version] = page
        personalized = page.personalized
        # the request's own, on top of the user's rules kept in the shortlist
        exclude = blocked_items(None, request.exclude_ids, context_item)
        items = rank(
            page.shortlist,
            request.k,
            features,
            exclude,
            query,
            context_item,
            self.policy,
            random.Random(int(request_id[:16], 16)),  # replayable from the request id
        )
        if fallback_reason:
            strategy = "fallback"
        elif opted_out:
            strategy = "opted_out"
        else:
            strategy = "personalized" if personalized else "cold_start"
        response = RecommendationResponse(
            request_id=request_id,
            user_id=request.user_id,
            items=items,
            model_version=arm.model_version,
            experiment_arm=arm_name,
            strategy=strategy,
            fallback_reason=fallback_reason,
            profile=state.summary,
        )
        if self.publish_impression is not None and items and not opted_out:
            self.publish_impression(
                Impression(
                    request_id=request_id,
                    user_id=user,
                    arm=arm_name,
                    model_version=arm.model_version,
                    strategy=strategy,
                    items=[i.item_id for i in items],
                    propensities=[i.propensity for i in items],
                    ts=datetime.now(UTC),
                )
            )
        return response

    async def _page(
        self,
        request: RecommendationRequest,
        arm: Arm,
        state: UserState,
        query: str | None,
        context_item: str | None,
        covisits: Mapping[str, Neighbours],
        signals: StreamSignals,
    ) -> tuple[ScoredCandidates, str | None]:
        """The request's candidates (the caller's, else found) and their scores, with the
        scorer's problem if it failed."""
        if request.candidate_ids is not None:
            found = self.candidates.requested(request.candidate_ids)
        else:
            matches = await self._search(arm, query) if query else None
            found = self.candidates.generate(
                state.features, state.popular, context_item, covisits, matches
            )
        retrieve = self.n_model if request.candidate_ids is None else 0  # else: just those
        rows, scores, personalized, problem = await self._scores(
            arm, found.rows, state, query, signals, retrieve
        )
        candidates = found.extended(rows[len(found) :], "model")  # the scorer's own finds
        shortlist = Shortlist(candidates, scores, self.catalog, state.blocked)
        return ScoredCandidates(shortlist, personalized), problem

    async def _search(self, arm: Arm, query: str) -> np.ndarray | None:
        """Items matching the query (model's text path); none if the arm cannot search or
        is too slow: the other sources still fill the page."""
        if arm.search is None:
            return None
        try:
            async with asyncio.timeout(self.score_timeout_s):
                return await arm.search(query, self.candidates.n_search)
        except Exception as exc:
            log.warning("query search failed (%r): candidates without it", exc)
            return None

    async def _model_scores(
        self, score_fn: ScoreFn, task: ScoreTask
    ) -> tuple[Scored | None, str | None]:
        """The arm's scores, or None and the reason when the scorer fails or is slower than
        ``score_timeout_s``: a failed or slow replica must not fail the page."""
        try:
            async with asyncio.timeout(self.score_timeout_s):
                return await score_fn(task), None
        except TimeoutError:
            problem = f"scorer slower than {self.score_timeout_s:g}s"
        except Exception as exc:
            problem = f"scorer unavailable ({type(exc).__name__})"
        log.warning("%s: no model scores", problem)
        return None, problem

    async def _scores(
        self,
        arm: Arm,
        candidates: np.ndarray,
        state: UserState,
        query: str | None,
        signals: StreamSignals,
        retrieve: int,
    ) -> tuple[np.ndarray, np.ndarray, bool, str | None]:
        """(rows, scores, personalized, problem) for the ``candidates`` (catalog rows) and
        the up to ``retrieve`` items a trained model finds itself. With a profile, the
        arm's served score: a trained model's blend with the no-model default, else that
        default, which still ranks from the stream's signals without the scorer (failed or
        slower than ``score_timeout_s``); with a query, the arm's relevance; otherwise, or
        when the scorer fails, popularity (the reason returned): the page gets an answer
        either way. The arm's user vector is kept in ``state`` for the user's next request."""
        rows = np.asarray(candidates, dtype=np.int64)
        features = state.features
        problem = None
        if len(rows) and (features is not None or query):
            ranking = features is not None and not query
            task = ScoreTask(
                rows,
                features,
                query,
                signals if ranking else None,
                retrieve if ranking and arm.trained else 0,
                state.vectors.get(arm.model_version),
            )
            scored, problem = await self._model_scores(arm.score, task)
            if scored is not None:
                if scored.user_vector is not None:
                    state.vectors[arm.model_version] = scored.user_vector
                return scored.rows, np.asarray(scored.scores, dtype=np.float64), True, None
            if ranking and not arm.trained:  # the stream ranks without the encoder's term
                return rows, signals.scores(rows), True, None
        return rows, signals.popular[rows].astype(np.float64), False, problem

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """Model scores for the given items; null where the catalog does not know the item,
        or for all of them (with the reason) when there is no profile to score from. Read
        from the same kept user state as recommendations (its features, its user vector),
        so the two endpoints agree about a user at any moment."""
        user = self.pseudonyms(request.user_id)
        arm = self.arms[self.arm_of(user)]
        problem = None
        state: UserState | None = None
        try:
            state = await self.user_state(user)
            if state.opted_out:
                problem = "the user opted out of personalization"
        except Exception as exc:
            log.warning("online store unavailable (%r): no scores", exc)
            problem = "profile store unavailable"
        known = [i for i in request.item_ids if i in self.catalog.index]
        result: dict[str, float] = {}
        if known and state is not None and state.features is not None:
            rows = np.array([self.catalog.index[i] for i in known], dtype=np.int64)
            vector = state.vectors.get(arm.model_version)
            task = ScoreTask(rows, state.features, user_vector=vector)
            scored, problem = await self._model_scores(arm.score, task)
            if scored is not None:
                if scored.user_vector is not None:
                    state.vectors[arm.model_version] = scored.user_vector
                result = {i: float(s) for i, s in zip(known, scored.scores, strict=True)}
        return ScoreResponse(
            user_id=request.user_id,
            scores=[ItemScore(item_id=i, score=result.get(i)) for i in request.item_ids],
            model_version=arm.model_version,
            fallback_reason=problem,
        )


def _known(stored: StoredRow | None) -> UserProfile | None:
    """The profile a stored row holds (decoded here), as serving reads it; None for a user
    without one (no row, or no event and no opt-out in it)."""
    if stored is None:
        return None
    profile = UserProfile.from_row(stored.row(), worker_state=False)
    return profile if profile.event_count > 0 or profile.opted_out else None


def _summary(features: ProfileFeatures, catalog: Catalog) -> ProfileSummary:
    return ProfileSummary(
        events=features.event_count,
        top_categories=[(c, round(w, 3)) for c, w in features.top_categories],
        recent_items=[catalog.title(i) for i in features.recent_viewed[:5]],
    )
