"""The ranker without a model: what the stream already keeps, as scores.

Until a model is trained (``streamrank train``), a user with history is ranked by
co-visitation from their most recent items (the stream's "engaged with A, then with B"
rows, ``streams/covisitation.py``), the newest items counting most, plus a share of the
stream's recent popularity and the pretrained encoder's cosine between the user's interest
vector and each item's text (what carries a session's intent to items no one has
co-visited yet). A search query is answered in the encoder's space, as with a model.

Co-visitation and popularity are each divided by their largest value before they are
added, and the cosine is bounded by 1, so the weights are ratios between signals that do
not depend on how many events or items a shop has. On MovieLens 100K (per-user
leave-last-out, full catalog, seen items masked) this ranks at NDCG@10 0.058, against
ALS 0.052, item-kNN 0.046, recent popularity 0.037 and the encoder alone 0.010. Text
weights from 0 to 3 all gave 0.052-0.058, the best at 2 (kept), 5 gave 0.051; a shop
whose items have no text beyond an id gets noise from that term (``streamrank evaluate``
without a model says whether it helps on a shop's own data). Popularity weights 0.1-0.4
and a 24 h or 7 d window moved it by less than 0.002.
``streamrank evaluate`` and ``streamrank backtest`` report it as the ``stream-default``
row (``training/baselines.py``), computed by these same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streams.profile import ProfileFeatures

ANCHORS = 10
"""The user's most recent items whose co-visited neighbours are read and scored."""
ANCHOR_DECAY = 0.7
"""Each older anchor counts this much of the one after it."""
POPULARITY_WEIGHT = 0.2
REPEAT_WEIGHT = 0.5
"""Of the anchors themselves, newest first: the user's own recent items, which come back
where the shop's rule lets them (``serving.ranking.ShowAgain``; anonymous sessions often
return to an item), and are masked where it does not. At 0.5 the newest item counts half
the strongest co-visited neighbour: on synthetic sessions with a quarter or half of the
views repeating an earlier one, 0.5 ranked best of 0, 0.5, 1 and 2 (by 0.01-0.03 NDCG@10);
it is not yet measured on a real shop's sessions."""
TEXT_WEIGHT = 2.0
"""Of the pretrained encoder's cosine between the user's interest and the item's text."""


def recent_items(features: ProfileFeatures | None, n: int = ANCHORS) -> list[str]:
    """The user's engaged items, newest first, each once."""
    if features is None:
        return []
    newest: dict[str, None] = {}
    for item, _ in reversed(features.history):
        newest.setdefault(item, None)
        if len(newest) == n:
            break
    return list(newest)


def stream_scores(
    item_ids: Sequence[str],
    anchors: Sequence[str],
    neighbours: Mapping[str, Sequence[tuple[str, float]]],
    popular: Mapping[str, float],
) -> np.ndarray:
    """Scores of ``item_ids``: co-visitation from ``anchors`` (newest first, each weighted
    ``ANCHOR_DECAY`` times the one before) and popularity, each scaled to a top of 1, and
    the anchors themselves by the same recency weights (``REPEAT_WEIGHT``).

    The tops are taken over everything the signals hold, not over ``item_ids``: an item's
    score must not depend on which other items are scored with it (serving scores a few
    hundred candidates, the offline evaluation the whole catalog)."""
    covisit: dict[str, float] = {}
    for k, anchor in enumerate(anchors):
        weight = ANCHOR_DECAY**k
        for item, strength in neighbours.get(anchor, ()):
            covisit[item] = covisit.get(item, 0.0) + weight * strength
    recency = {}
    for k, anchor in enumerate(anchors):
        recency.setdefault(anchor, ANCHOR_DECAY**k)
    top_covisit = max(covisit.values(), default=0.0) or 1.0
    top_popular = max(popular.values(), default=0.0) or 1.0
    n = len(item_ids)
    return (
        np.fromiter((covisit.get(i, 0.0) for i in item_ids), np.float64, n) / top_covisit
        + POPULARITY_WEIGHT
        * np.fromiter((popular.get(i, 0.0) for i in item_ids), np.float64, n)
        / top_popular
        + REPEAT_WEIGHT * np.fromiter((recency.get(i, 0.0) for i in item_ids), np.float64, n)
    )


@dataclass(frozen=True)
class StreamSignals:
    """What the stream keeps for one request: the user's newest items (``anchors``, newest
    first), their co-visited neighbours and the stream's popularity. The no-model default
    scores any catalog item from them, so they travel with a scoring task and the scorer
    scores the items it retrieves itself the same way as the ones it was sent."""

    anchors: Sequence[str]
    neighbours: Mapping[str, Sequence[tuple[str, float]]]
    popular: Mapping[str, float]

    def scores(self, item_ids: Sequence[str], text: np.ndarray | None = None) -> np.ndarray:
        """The no-model default's scores of ``item_ids``: ``stream_scores`` plus
        ``TEXT_WEIGHT`` times the pretrained encoder's cosine ``text`` between the user's
        interest and each item (None: without that term)."""
        out = stream_scores(item_ids, self.anchors, self.neighbours, self.popular)
        if text is not None:
            out += TEXT_WEIGHT * np.asarray(text, dtype=np.float64)
        return out


def recency_scores(item_ids: Sequence[str], features: ProfileFeatures | None) -> np.ndarray:
    """The "recently viewed" row as scores: the user's engaged items, newest first, each
    ``ANCHOR_DECAY`` times the one after it; every other item 0."""
    position = {item: i for i, item in enumerate(item_ids)}
    out = np.zeros(len(item_ids), np.float64)
    for k, item in enumerate(recent_items(features, n=len(item_ids))):
        row = position.get(item)
        if row is not None:
            out[row] = ANCHOR_DECAY**k
    return out
