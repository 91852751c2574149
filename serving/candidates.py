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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
from cachetools import LRUCache

from serving.stream_ranker import Neighbours, popularity_by_row, recent_items
from streamrank.catalog import Catalog
from streams.profile import ProfileFeatures

RECENT_ANCHORS = 3
SIMILAR_PER_ANCHOR = 21  # the anchor itself among them (never shown: seen or in view)
COVISITS_PER_ANCHOR = 30
SIMILAR_KEPT = 50_000
"""Anchors whose text neighbours are kept (``CandidateGenerator.similar``): ~0.3 KB each."""


@dataclass
class Candidate:
    row: int
    source: str
    anchor: str | None = None  # the item that brought this one in, for "because you viewed"


SOURCES = ("requested", "search", "covisit", "recent", "similar", "interest", "popular", "model")


@dataclass(frozen=True)
class Candidates:
    """A request's candidate items as arrays: catalog ``rows``, each with the source that
    brought it in first (``sources``, positions in ``SOURCES``) and the item that did
    (``anchors``, positions in ``anchor_ids``; -1: none). A request has hundreds of
    candidates and shows ten: only those become ``Candidate`` objects (``at``)."""

    rows: np.ndarray
    sources: np.ndarray
    anchors: np.ndarray
    anchor_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Candidate]:
        return (self.at(i) for i in range(len(self.rows)))

    def at(self, i: int) -> Candidate:
        anchor = int(self.anchors[i])
        return Candidate(
            int(self.rows[i]),
            SOURCES[self.sources[i]],
            self.anchor_ids[anchor] if anchor >= 0 else None,
        )

    @classmethod
    def of_source(cls, rows: np.ndarray, source: str) -> Candidates:
        """``rows`` (each once) all brought in by ``source``, with no anchor."""
        n = len(rows)
        return cls(
            rows.astype(np.int64, copy=False),
            np.full(n, SOURCES.index(source), np.int8),
            np.full(n, -1, np.int32),
        )

    def extended(self, rows: np.ndarray, source: str) -> Candidates:
        """These candidates and ``rows`` (not among them) brought in by ``source``."""
        if not len(rows):
            return self
        more = Candidates.of_source(rows, source)
        return Candidates(
            np.concatenate([self.rows, more.rows]),
            np.concatenate([self.sources, more.sources]),
            np.concatenate([self.anchors, more.anchors]),
            self.anchor_ids,
        )


class CandidatesBuilder:
    """Candidates gathered source by source, in order of precedence: an item brought in
    by several sources keeps the first one's source and anchor."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._sources: list[np.ndarray] = []
        self._anchors: list[np.ndarray] = []
        self._anchor_ids: dict[str, int] = {}

    def add(self, rows: np.ndarray | Sequence[int], source: str, anchor: str | None = None) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        code = -1  # no anchor
        if anchor is not None:
            code = self._anchor_ids.setdefault(anchor, len(self._anchor_ids))
        self._rows.append(rows)
        self._sources.append(np.full(len(rows), SOURCES.index(source), np.int8))
        self._anchors.append(np.full(len(rows), code, np.int32))

    def build(self) -> Candidates:
        if not self._rows:
            empty = np.zeros(0, np.int64)
            return Candidates(empty, empty.astype(np.int8), empty.astype(np.int32))
        rows = np.concatenate(self._rows)
        _, first = np.unique(rows, return_index=True)
        keep = np.sort(first)  # each row once, in the order it first came
        return Candidates(
            rows[keep],
            np.concatenate(self._sources)[keep],
            np.concatenate(self._anchors)[keep],
            tuple(self._anchor_ids),
        )


@dataclass(frozen=True)
class Popularity:
    """The stream's popularity as of one refresh, in the forms requests read it: best
    first, by catalog row (scaled to a top of 1: ``StreamSignals``), and the catalog rows
    of the ``n`` best (the ``popular`` candidates). Made once per refresh, not once per
    request (thousands of items)."""

    ranked: list[tuple[str, float]]
    by_row: np.ndarray
    rows: list[int]

    @classmethod
    def of(cls, ranked: list[tuple[str, float]], catalog: Catalog, n: int) -> Popularity:
        index = catalog.index
        rows = list(islice((index[i] for i, _ in ranked if i in index), n))
        if not rows:  # nothing streamed yet: the catalog's own order
            rows = list(range(min(n, len(catalog))))
        return cls(ranked, popularity_by_row(ranked, index, len(catalog)), rows)


class CandidateGenerator:
    def __init__(
        self, catalog: Catalog, n_popular: int = 200, n_interest: int = 200, n_search: int = 100
    ):
        self.catalog = catalog
        self.n_popular = n_popular
        self.n_interest = n_interest
        self.n_search = n_search
        self._similar: LRUCache[int, np.ndarray] = LRUCache(SIMILAR_KEPT)

    def popularity(self, ranked: list[tuple[str, float]]) -> Popularity:
        """A refresh of the stream's popularity, as the requests until the next read it."""
        return Popularity.of(ranked, self.catalog, self.n_popular)

    def requested(self, item_ids: list[str]) -> Candidates:
        """The caller's items the catalog holds, each once, in the caller's order: one
        source, so none of ``CandidatesBuilder``'s merging."""
        index = self.catalog.index
        rows = [index[i] for i in dict.fromkeys(item_ids) if i in index]
        return Candidates.of_source(np.fromiter(rows, np.int64, len(rows)), "requested")

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
        covisits: Mapping[str, Neighbours] | None = None,
        matches: np.ndarray | None = None,
    ) -> Candidates:
        """``matches``: catalog rows matching the request's search query, if any."""
        found = CandidatesBuilder()
        index = self.catalog.index
        if matches is not None:
            found.add(matches, "search")
        for anchor, neighbours in (covisits or {}).items():
            found.add(neighbours.rows[:COVISITS_PER_ANCHOR], "covisit", anchor)
        for item in recent_items(features):
            if item in index:
                found.add([index[item]], "recent", item)
        similar = [context_item] if context_item in index else []
        if features is not None:
            similar += [i for i in features.engaged[:RECENT_ANCHORS] if i in index]
        for anchor in dict.fromkeys(similar):  # text close to the one in view, the newest
            found.add(self.similar(index[anchor]), "similar", anchor)
        if features is not None and features.interest is not None:
            found.add(
                self.catalog.text_index.search(features.interest, self.n_interest)[0], "interest"
            )
        found.add(popular.rows, "popular")
        return found.build()

    def similar(self, row: int) -> np.ndarray:
        """The ``SIMILAR_PER_ANCHOR`` items nearest by text to the item at ``row`` (itself
        among them): the same for every request, so kept for the anchors requests share."""
        rows = self._similar.get(row)
        if rows is None:
            vector = self.catalog.vectors([row])[0]
            rows = self._similar[row] = self.catalog.text_index.search(vector, SIMILAR_PER_ANCHOR)[
                0
            ]
        return rows
