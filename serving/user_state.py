"""What a request needs of its user, made once per stored profile and kept briefly.

Every personalization call reads the user's profile: the stream may have changed it a
moment ago, and the next page must show that. Most of what follows from the profile is
then the same for every request until the stream writes it again: its features, the
co-visited neighbours of the newest items and the stream's score vectors built from them,
the items the shop's rule blocks, the profile summary of the response, each model's
user vector, and, for the user's own page (no items given, no query, no item in view),
the scored candidates, which only the ranking rules (``k``, the request's exclusions,
exploration) apply to differently from one request to the next. Rebuilding them, and the
profile itself from its row, was over half of a request's CPU. A replica keeps them per
user (``UserStates``) for the stored row they were made from, told apart from the next
write of it by its write time (``streams.sink.StoredRow``), for at most ``max_age_s``; a
request that finds its user's state kept reads the row but never decodes it.

When popularity is refreshed (every ``popular_refresh_s``), the kept signals take the new
popularity vector for the requests scored afresh (the co-visitation and recency vectors
are the user's own and stay). A kept own page keeps the popularity it was scored with
for the rest of its state's life: popularity is then one more of the stream's aggregates
a state holds for up to ``max_age_s``, as co-visitation is. Scoring the page again at
every refresh had been about a quarter of a replica's page requests.

What the age bounds: the decayed counts a user vector reads move with the clock (the
shortest time constant is an hour: 10 s moves a count by 0.3 %), and the co-visitation
rows a state was built from. Those came from the replica's rows kept per anchor (up to
``covisit_refresh_s`` old), so the recommender caps the age at ``covisit_refresh_s`` too:
a state's rows are at most twice that old. A new event, an opt-out or an erasure writes
or deletes the row, so the next request builds the state afresh: a kept state never
outlives the profile it was made from. (A row written again unchanged makes a new state
too; the worker writes a profile when an event changed it, and an opted-out user's
tombstone again while they browse, whose state holds no profile.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from cachetools import TTLCache

from serving import metrics
from serving.api import ProfileSummary
from serving.candidates import Popularity
from serving.ranking import Shortlist
from serving.stream_ranker import Neighbours, StreamSignals
from streams.profile import ProfileFeatures


@dataclass(frozen=True)
class ScoredCandidates:
    """A request's scored candidates under the user's rules, ready to rank
    (``personalized``: scored by the user's profile, not popularity)."""

    shortlist: Shortlist
    personalized: bool


@dataclass
class UserState:
    """One user's request-independent state. ``version`` is the stored profile row's write
    time (None: no row); ``features`` None for a user without
    history or who opted out; ``anchors`` the newest items whose ``covisits`` make
    ``signals``; ``blocked`` what the shop's rule never shows this user; ``vectors`` each
    model's user vector (by model version), filled by the first request that scores;
    ``pages`` each model's scored candidates for the user's own page (a request without
    candidates, query or item in view), which only ranking (``k``, the request's
    exclusions, exploration) tells apart."""

    version: float | None
    opted_out: bool
    features: ProfileFeatures | None
    popular: Popularity
    anchors: list[str]
    covisits: dict[str, Neighbours]
    signals: StreamSignals
    blocked: frozenset[str]
    summary: ProfileSummary | None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    pages: dict[str, ScoredCandidates] = field(default_factory=dict)


class UserStates:
    """Users' states, the ``size`` most recently used, none older than ``max_age_s``
    (either 0: none kept, every request builds its own)."""

    def __init__(self, size: int, max_age_s: float):
        self._kept: TTLCache[str, UserState] | None = None
        if size > 0 and max_age_s > 0:
            self._kept = TTLCache(size, max_age_s, time.monotonic)

    def get(self, user: str, version: float | None) -> UserState | None:
        """The kept state of ``user`` if it was made from the row written at ``version``,
        else None."""
        if self._kept is None:
            return None
        state = self._kept.get(user)
        if state is not None and state.version == version:
            metrics.USER_STATES.labels("hit").inc()
            return state
        metrics.USER_STATES.labels("miss").inc()
        return None

    def put(self, user: str, state: UserState) -> None:
        if self._kept is not None:
            self._kept[user] = state
