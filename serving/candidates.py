"""Candidate generation: which items are worth scoring for this request.

Sources, each remembered on the candidate for the explanation shown to the user:
``requested`` (the caller's list), ``recent`` (the user's own newest items, which the
shop's rule may let come back, ``serving.ranking.ShowAgain``), ``popular`` (stream-kept
popularity), ``covisit`` (stream-kept "engaged with A, then with B" for the user's recent
items and the item in view), ``search`` (nearest items to the search query, found by the
scorer's text path), ``interest`` (nearest items to the user's interest vector),
``similar`` (nearest items by text to one of the user's recent items or to the item in
view). A trained model's scorer adds ``model``: its own nearest items to the user vector
(``serving/scorer.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice

import numpy as np

from serving.stream_ranker import recent_items
from streamrank.catalog import Catalog
from streams.profile import ProfileFeatures

RECENT_ANCHORS = 3
SIMILAR_PER_ANCHOR = 21  # the anchor itself among them (never shown: seen or in view)
COVISITS_PER_ANCHOR = 30


@dataclass
class Candidate:
    row: int
    source: str
    anchor: str | None = None  # the item that brought this one in, for "because you viewed"


@dataclass(frozen=True)
class Popularity:
    """The stream's popularity as of one refresh, in the forms requests read it: best
    first, by item, and the catalog rows of the ``n`` best (the ``popular`` candidates).
    Made once per refresh, not once per request (thousands of items)."""

    ranked: list[tuple[str, float]]
    weights: dict[str, float]
    rows: list[int]

    @classmethod
    def of(cls, ranked: list[tuple[str, float]], catalog: Catalog, n: int) -> Popularity:
        index = catalog.index
        rows = list(islice((index[i] for i, _ in ranked if i in index), n))
        if not rows:  # nothing streamed yet: the catalog's own order
            rows = list(range(min(n, len(catalog))))
        return cls(ranked, dict(ranked), rows)


class CandidateGenerator:
    def __init__(
        self, catalog: Catalog, n_popular: int = 200, n_interest: int = 200, n_search: int = 100
    ):
        self.catalog = catalog
        self.n_popular = n_popular
        self.n_interest = n_interest
        self.n_search = n_search

    def popularity(self, ranked: list[tuple[str, float]]) -> Popularity:
        """A refresh of the stream's popularity, as the requests until the next read it."""
        return Popularity.of(ranked, self.catalog, self.n_popular)

    def requested(self, item_ids: list[str]) -> dict[int, Candidate]:
        index = self.catalog.index
        return {index[i]: Candidate(index[i], "requested") for i in item_ids if i in index}

    @staticmethod
    def anchors(features: ProfileFeatures | None, context_item: str | None) -> list[str]:
        """The items whose co-visited neighbours are worth a look: the one in view, then the
        user's most recent ones, newest first (the no-model ranker scores from them too)."""
        recent = recent_items(features)
        return list(dict.fromkeys([context_item, *recent] if context_item else recent))

    def generate(
        self,
        features: ProfileFeatures | None,
        popular: Popularity,
        context_item: str | None = None,
        covisits: Mapping[str, list[tuple[str, float]]] | None = None,
        matches: np.ndarray | None = None,
    ) -> dict[int, Candidate]:
        """``matches``: catalog rows matching the request's search query, if any."""
        found: dict[int, Candidate] = {}

        def add(row: int, source: str, anchor: str | None = None) -> None:
            found.setdefault(int(row), Candidate(int(row), source, anchor))

        index = self.catalog.index
        for row in matches if matches is not None else ():
            add(row, "search")
        for anchor, neighbours in (covisits or {}).items():
            for item, _ in neighbours[:COVISITS_PER_ANCHOR]:
                if item in index:
                    add(index[item], "covisit", anchor)
        for item in recent_items(features):
            if item in index:
                add(index[item], "recent", item)
        texts = self.catalog.text_index
        similar = [context_item] if context_item in index else []
        if features is not None:
            similar += [i for i in features.engaged[:RECENT_ANCHORS] if i in index]
        if similar:  # items whose text is close to the one in view and the newest ones
            vectors = self.catalog.vectors([index[i] for i in similar])
            for anchor, rows in zip(
                similar, texts.search(vectors, SIMILAR_PER_ANCHOR), strict=True
            ):
                for row in rows:
                    add(row, "similar", anchor)
        if features is not None and features.interest is not None:
            for row in texts.search(features.interest, self.n_interest)[0]:
                add(row, "interest")
        for row in popular.rows:
            add(row, "popular")
        return found
