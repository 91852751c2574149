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

from collections.abc import Iterable, Mapping, Sequence
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


@dataclass(frozen=True)
class Neighbours:
    """One anchor's co-visited items as catalog rows, strongest first, with their strengths:
    the form requests score from, made once per store read of the anchor's rows."""

    rows: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, merged: Sequence[tuple[str, float]], index: Mapping[str, int]) -> Neighbours:
        """From ``merge_neighbours``'s (item, strength) pairs; items the catalog does not
        hold are dropped (nothing can show or score them)."""
        known = [(index[item], weight) for item, weight in merged if item in index]
        return cls(
            np.fromiter((r for r, _ in known), np.int64, len(known)),
            np.fromiter((w for _, w in known), np.float64, len(known)),
        )


@dataclass(frozen=True)
class StreamSignals:
    """What the stream keeps for one request, as sparse score vectors over catalog rows:
    co-visitation from the user's newest items (the anchors, newest first, each weighted
    ``ANCHOR_DECAY`` times the one before), the anchors themselves by the same weights, and
    the stream's popularity (dense, by row). Each is scaled to a top of 1 over everything
    it holds, not over the rows scored: an item's score must not depend on which other
    items are scored with it (serving scores a few hundred candidates, the offline
    evaluation the whole catalog). The scorer scores the items it retrieves itself from
    the same signals as the ones it was sent, so they travel with a scoring task."""

    covisit_rows: np.ndarray
    covisit: np.ndarray
    recent_rows: np.ndarray
    recency: np.ndarray
    popular: np.ndarray

    @classmethod
    def of(
        cls,
        anchors: Sequence[int | None],
        neighbours: Sequence[Neighbours | None],
        popular: np.ndarray,
    ) -> StreamSignals:
        """``anchors``: the anchors' catalog rows, newest first (None for an item the
        catalog does not hold, which still counts through its neighbours);
        ``neighbours``: each anchor's co-visited items (None: none kept); ``popular``:
        popularity by catalog row, top 1 (all 0: none known)."""
        decay = [ANCHOR_DECAY**k for k in range(len(anchors))]
        found = [(n, w) for n, w in zip(neighbours, decay, strict=True) if n is not None]
        covisit_rows, covisit = _summed(
            [n.rows for n, _ in found], [w * n.weights for n, w in found]
        )
        top = float(covisit.max()) if len(covisit) else 0.0
        recent = [(row, w) for row, w in zip(anchors, decay, strict=True) if row is not None]
        rows = np.fromiter((r for r, _ in recent), np.int64, len(recent))
        weights = np.fromiter((w for _, w in recent), np.float64, len(recent))
        recent_rows, first = np.unique(rows, return_index=True)  # each anchor's newest
        return cls(covisit_rows, covisit / (top or 1.0), recent_rows, weights[first], popular)

    def scores(self, rows: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """The no-model default's scores of catalog ``rows``: co-visitation, plus
        ``POPULARITY_WEIGHT`` times popularity, plus ``REPEAT_WEIGHT`` times the anchors'
        recency, plus ``TEXT_WEIGHT`` times the pretrained encoder's cosine ``text``
        between the user's interest and each item (None: without that term)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = _at(self.covisit_rows, self.covisit, rows)
        out += POPULARITY_WEIGHT * self.popular[rows]
        out += REPEAT_WEIGHT * _at(self.recent_rows, self.recency, rows)
        if text is not None:
            out += TEXT_WEIGHT * np.asarray(text, dtype=np.float64)
        return out


def popularity_by_row(
    ranked: Iterable[tuple[str, float]], index: Mapping[str, int], n_items: int
) -> np.ndarray:
    """The stream's popularity (item, weight) as ``StreamSignals`` reads it: by catalog
    row, scaled to a top of 1 over every item it holds (the catalog's or not)."""
    out = np.zeros(n_items, np.float64)
    top = 0.0
    for item, weight in ranked:
        top = max(top, weight)
        row = index.get(item)
        if row is not None:
            out[row] = weight
    return out / top if top > 0 else out


def _summed(keys: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the sum of each one's values."""
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return unique, np.bincount(inverse, weights=np.concatenate(values), minlength=len(unique))


def _at(keys: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` at ``rows`` by sorted ``keys``; 0 where a row is not a key."""
    if not len(keys):
        return np.zeros(len(rows), np.float64)
    at = np.minimum(np.searchsorted(keys, rows), len(keys) - 1)
    return np.where(keys[at] == rows, values[at], 0.0)


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
