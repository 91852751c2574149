"""Rules applied after scoring: what may not be shown, the order, and why each item is there."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from serving.api import RecommendedItem
from serving.candidates import Candidate
from streamrank.catalog import Catalog
from streams.profile import ProfileFeatures


def blocked_items(
    features: ProfileFeatures | None, exclude: Iterable[str], context_item: str | None
) -> set[str]:
    """Never shown: what the user bought or recently engaged with (the row is for finding
    something new), the caller's exclusions, and the item already in view."""
    blocked = set(exclude)
    if features is not None:
        blocked.update(features.purchased, features.engaged)
    if context_item:
        blocked.add(context_item)
    return blocked


def closest_recent(row: int, catalog: Catalog, features: ProfileFeatures) -> str | None:
    """The recently engaged item most similar to candidate ``row``: the honest "because"."""
    recent = [i for i in features.engaged if i in catalog.index]
    if not recent:
        return None
    rows = [catalog.index[i] for i in recent]
    sims = catalog.embeddings[rows] @ catalog.embeddings[row]
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
    if candidate.source == "covisit" and anchor is not None:
        return f"people who viewed “{catalog.title(anchor)}” also looked at this"
    if anchor is not None and anchor == context_item:
        return f"similar to “{catalog.title(anchor)}”"
    if anchor is None and candidate.source == "interest" and features is not None:
        anchor = closest_recent(candidate.row, catalog, features)
    if anchor is not None:
        carted = features is not None and anchor in features.recent_carted
        verb = "added to your cart" if carted else "viewed"
        return f"because you {verb} “{catalog.title(anchor)}”"
    if candidate.source == "requested":
        return "ranked for you"
    return "popular right now"


def rank(
    candidates: list[Candidate],
    scores: np.ndarray,
    catalog: Catalog,
    k: int,
    blocked: set[str],
    features: ProfileFeatures | None,
    query: str | None = None,
    context_item: str | None = None,
) -> list[RecommendedItem]:
    order = np.argsort(-scores, kind="stable")
    items: list[RecommendedItem] = []
    for pos in order:
        candidate = candidates[int(pos)]
        item_id = catalog.ids[candidate.row]
        if item_id in blocked:
            continue
        items.append(
            RecommendedItem(
                item_id=item_id,
                title=catalog.titles[candidate.row],
                categories=list(catalog.categories(item_id)),
                score=round(float(scores[pos]), 6),
                reason=explain(candidate, catalog, features, query, context_item),
            )
        )
        if len(items) == k:
            break
    return items
