"""Rules applied after scoring: what may not be shown, the order, and why each item is there."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from serving.api import RecommendedItem
from serving.candidates import Candidate, Candidates
from streamrank.catalog import Catalog
from streams.profile import ProfileFeatures


class ShowAgain(StrEnum):
    """Which of the user's own items a recommendation row may show again: the shop's rule,
    which serving applies and the offline evaluations mask by (``blocked_items``), so a
    ranker is judged on the row it would really fill.

    ``none`` suits a catalog consumed once (a film watched, whatever its rating); ``unbought``
    a shop where a viewed or carted item is the likeliest next look (anonymous sessions
    often come back to an item), purchases never shown again; ``all`` a shop of
    consumables bought again and again."""

    NONE = "none"
    UNBOUGHT = "unbought"
    ALL = "all"


def blocked_items(
    features: ProfileFeatures | None,
    exclude: Iterable[str] = (),
    context_item: str | None = None,
    show_again: ShowAgain = ShowAgain.NONE,
) -> set[str]:
    """Never shown: the caller's exclusions, the item already in view, and of the user's
    own items what ``show_again`` hides (purchases unless ``all``; every engaged item too
    under ``none``), from the profile's long memories (``SEEN_N`` items). Items out of
    stock are dropped too, by ``rank``, from the catalog's ``available`` flag."""
    blocked = set(exclude)
    if features is not None and show_again is not ShowAgain.ALL:
        blocked.update(features.purchased, features.bought)
        if show_again is ShowAgain.NONE:
            blocked.update(features.engaged, features.seen)
    if context_item:
        blocked.add(context_item)
    return blocked


def closest_recent(row: int, catalog: Catalog, features: ProfileFeatures) -> str | None:
    """The recently engaged item most similar to candidate ``row``: the honest "because"."""
    recent = [i for i in features.engaged if i in catalog.index]
    if not recent:
        return None
    rows = [catalog.index[i] for i in recent]
    sims = catalog.vectors(rows) @ catalog.vectors([row])[0]
    return recent[int(np.argmax(sims))]


def explain(
    candidate: Candidate,
    catalog: Catalog,
    features: ProfileFeatures | None,
    query: str | None,
    context_item: str | None = None,
) -> str:
    """A short, honest reason (seed 002: transparency)."""
    if query:
        return f"matches your search “{query}”"
    anchor = candidate.anchor
    if candidate.source == "recent" and anchor is not None:
        carted = features is not None and anchor in features.recent_carted
        return "still in your cart" if carted else "you looked at this recently"
    if candidate.source == "covisit" and anchor is not None:
        return f"people who viewed “{catalog.title(anchor)}” also looked at this"
    if anchor is not None and anchor == context_item:
        return f"similar to “{catalog.title(anchor)}”"
    if anchor is None and candidate.source in ("interest", "model") and features is not None:
        anchor = closest_recent(candidate.row, catalog, features)
    if anchor is not None:
        carted = features is not None and anchor in features.recent_carted
        verb = "added to your cart" if carted else "viewed"
        return f"because you {verb} “{catalog.title(anchor)}”"
    if candidate.source == "requested":
        return "ranked for you"
    return "popular right now"


@dataclass(frozen=True)
class RankingPolicy:
    """How the scored list becomes the shown list.

    A request with a search query is answered by relevance alone: neither applies to it
    (a shopper who typed "horror" wants horror first, not a category mix or a random slot).

    ``diversity`` (0..1) trades score for category novelty (maximal marginal relevance):
    0 is pure score order; at 0.3 an item whose categories repeat an item above it needs a
    clearly higher score to stay ahead. ``exploration`` is the share of slots given to a
    random candidate instead, so the logs hold feedback on items the model would not show;
    every item carries the probability with which the policy put it there (its propensity),
    for unbiased offline evaluation later (inverse propensity weighting). ``show_again``
    is the shop's rule on the user's own items (``ShowAgain``).
    """

    diversity: float = 0.0
    exploration: float = 0.0
    show_again: ShowAgain = ShowAgain.NONE


def diversify(scores: np.ndarray, membership: np.ndarray, k: int, weight: float) -> list[int]:
    """Greedy MMR: positions into ``scores``, best first, ``k`` at most. ``membership``:
    which categories each item is in (``Catalog.category_membership``, a row per score);
    redundancy is the Jaccard similarity of two items' categories."""
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    if weight <= 0 or n <= 1:
        return [int(i) for i in order[:k]]
    pool = order[: min(n, 4 * k)]  # items far down the list cannot win a slot
    s = scores[pool]
    spread = float(s.max() - s.min())
    relevance = (s - s.min()) / spread if spread > 0 else np.ones(len(pool))
    member = np.asarray(membership[pool], dtype=np.float32)
    shared = member @ member.T
    sizes = member.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - shared
    similarity = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    # gain = (1 - weight) * relevance - weight * redundancy, the weights applied once: the
    # loop runs per request, three small array operations a step
    gain = (1 - weight) * relevance
    penalty = (weight * similarity).astype(np.float64)
    redundancy = np.zeros(len(pool))
    picked: list[int] = []
    for _ in range(min(k, len(pool))):
        best = int(np.argmax(gain - redundancy))
        gain[best] = -np.inf  # taken
        picked.append(int(pool[best]))
        np.maximum(redundancy, penalty[best], out=redundancy)
    return picked


def explore(
    ranked: list[int], n: int, k: int, share: float, rng: random.Random
) -> list[tuple[int, float, bool]]:
    """``k`` (position, propensity, explored) triples: each slot keeps the next ranked item
    with probability 1 - ``share``, else takes a uniformly random unshown candidate (drawn
    from all ``n`` until it is one not shown yet: uniform over the unshown, and no list of
    hundreds made for one slot). ``rng`` is Python's: seeding one per request costs half
    what a numpy generator's seeding does, and its scalar draws a sixth."""
    out: list[tuple[int, float, bool]] = []
    used: set[int] = set()
    queue = iter(ranked)
    while len(out) < min(k, n):
        if share > 0 and len(used) < n and rng.random() < share:
            pick = rng.randrange(n)
            while pick in used:
                pick = rng.randrange(n)
            out.append((pick, share / (n - len(used)), True))
            used.add(pick)
            continue
        for pick in queue:
            if pick not in used:
                out.append((pick, 1.0 - share, False))
                used.add(pick)
                break
        else:
            break
    return out


class Shortlist:
    """A scored page under the shop's rules, ready to rank: the candidates in stock and not
    blocked for the user, best score first.

    Made once per scored page and ranked for each request on it. A user's own page is
    ranked again and again from one kept state (``serving/user_state.py``), so what depends
    on the page alone is kept here: the order, the diversified top for each ``k`` and each
    item as a ranked slot shows it (``item``). Reasons depend on the profile, query and
    item in view the page was scored for, so a shortlist is only ranked for those (the
    recommender keeps pages of the user's own profile without a query or item in view,
    and makes the others per request)."""

    def __init__(
        self, candidates: Candidates, scores: np.ndarray, catalog: Catalog, blocked: Collection[str]
    ):
        rows = candidates.rows
        allowed = catalog.available[rows]
        if blocked:  # a look-up per candidate: a profile blocks hundreds of items, most not here
            ids = catalog.ids
            allowed &= np.fromiter((ids[r] not in blocked for r in rows.tolist()), bool, len(rows))
        kept = np.flatnonzero(allowed)  # positions in ``candidates``
        kept_scores = np.asarray(scores, dtype=np.float64)[kept]
        order = np.argsort(-kept_scores, kind="stable")  # ties: in the candidates' order
        self.candidates = candidates
        self.catalog = catalog
        self.positions = kept[order]
        self.scores = kept_scores[order]
        self.rows = rows[self.positions]
        self._diversified: dict[tuple[int, float], list[int]] = {}
        self._items: dict[tuple[int, float], RecommendedItem] = {}

    def __len__(self) -> int:
        return len(self.positions)

    def without(self, exclude: Iterable[str]) -> np.ndarray:
        """Positions in this list, best first, of the items not in ``exclude``."""
        index = self.catalog.index
        dropped = [index[i] for i in exclude if i in index]
        if not dropped:
            return np.arange(len(self))
        return np.flatnonzero(~np.isin(self.rows, dropped))

    def diversified(self, order: np.ndarray, k: int, weight: float) -> list[int]:
        """The best ``k`` of ``order`` (positions in this list, best first) by greedy MMR
        (``diversify``), as positions in ``order``; kept for the whole list."""
        whole = len(order) == len(self)
        if whole and (k, weight) in self._diversified:
            return self._diversified[k, weight]
        pool = order[: 4 * k]  # only the best 4k can win a slot: their categories alone
        membership = self.catalog.category_membership(self.rows[pool])
        ranked = diversify(self.scores[pool], membership, k, weight)
        if whole:
            self._diversified[k, weight] = ranked
        return ranked

    def item(
        self,
        at: int,
        propensity: float,
        features: ProfileFeatures | None,
        query: str | None,
        context_item: str | None,
    ) -> RecommendedItem:
        """The item at position ``at`` as a ranked slot shows it, with its reason
        (``explain``); made once per position and propensity (items are frozen, so the
        responses of a kept page share them)."""
        key = (at, propensity)
        item = self._items.get(key)
        if item is None:
            candidate = self.candidates.at(int(self.positions[at]))
            reason = explain(candidate, self.catalog, features, query, context_item)
            item = self._items[key] = self._shown(at, reason, propensity)
        return item

    def explored(self, at: int, propensity: float) -> RecommendedItem:
        """The item at position ``at`` in a slot given to exploration."""
        return self._shown(at, "something new to try", propensity)

    def _shown(self, at: int, reason: str, propensity: float) -> RecommendedItem:
        row = int(self.rows[at])
        catalog = self.catalog
        return RecommendedItem(
            item_id=catalog.ids[row],
            title=catalog.titles[row],
            categories=list(catalog.categories_at(row)),
            score=round(float(self.scores[at]), 6),
            reason=reason,
            propensity=round(propensity, 6),
        )


def rank(
    shortlist: Shortlist,
    k: int,
    features: ProfileFeatures | None,
    exclude: Collection[str] = (),
    query: str | None = None,
    context_item: str | None = None,
    policy: RankingPolicy = RankingPolicy(),
    rng: random.Random | None = None,
) -> list[RecommendedItem]:
    """The ``k`` items to show from ``shortlist``, leaving out the request's own
    ``exclude``: diversified (``policy.diversity``), with exploration slots."""
    if query:
        policy = RankingPolicy()
    order = shortlist.without(exclude)
    ranked = shortlist.diversified(order, k, policy.diversity)
    slots = explore(ranked, len(order), k, policy.exploration, rng or random.Random())
    return [
        shortlist.explored(int(order[pos]), propensity)
        if explored
        else shortlist.item(int(order[pos]), propensity, features, query, context_item)
        for pos, propensity, explored in slots
    ]
