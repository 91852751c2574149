"""What the storefront page reads besides recommendations: the catalog, and a user's profile
as the user may see it. The page itself is static (``serving/web``); every action on it is
a real event sent to the HTTP collector, so the page shows the product working, not a
mock-up of it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from serving.api import ItemCard, ItemPage, ProfileView
from streamrank.catalog import Catalog
from streams.events import EventType
from streams.profile import RECENT_LISTS, UserProfile, derive_features


def item_card(catalog: Catalog, item_id: str) -> ItemCard:
    row = catalog.index[item_id]
    price = float(catalog.prices[row])
    return ItemCard(
        item_id=item_id,
        title=catalog.titles[row],
        categories=list(catalog.categories(item_id)),
        price=None if price != price else price,  # NaN: no price
        available=bool(catalog.available[row]),
    )


def list_items(
    catalog: Catalog,
    popular: Sequence[tuple[str, float]],
    query: str | None = None,
    category: str | None = None,
    limit: int = 24,
    offset: int = 0,
) -> ItemPage:
    """Available items matching every word of ``query`` (title or category, any case) and
    ``category``; the stream's most popular first, then catalog order."""
    words = (query or "").lower().split()
    rank = {item: n for n, (item, _) in enumerate(popular)}
    matches = [
        item
        for row, item in enumerate(catalog.ids)
        if catalog.available[row]
        and (category is None or category in catalog.categories(item))
        and all(
            w in catalog.titles[row].lower()
            or any(w in c.lower() for c in catalog.categories(item))
            for w in words
        )
    ]
    matches.sort(key=lambda item: rank.get(item, len(rank) + catalog.index[item]))
    return ItemPage(
        items=[item_card(catalog, i) for i in matches[offset : offset + limit]],
        total=len(matches),
        categories=catalog.all_categories,
    )


def profile_view(
    user_id: str, profile: UserProfile | None, catalog: Catalog, arm: str
) -> ProfileView:
    """``profile`` as of now; a user with none (or a tombstone) gets an empty view."""
    kept = profile if profile is not None and not profile.opted_out else UserProfile(user_id)
    features = derive_features(kept, time.time())
    recent = {
        name: [
            item_card(catalog, i)
            for i in kept.recent[name].keys_newest_first()
            if i in catalog.index
        ]
        for name in RECENT_LISTS
    }
    return ProfileView(
        user_id=user_id,
        opted_out=bool(profile is not None and profile.opted_out),
        experiment_arm=arm,
        events=kept.event_count,
        totals=dict(kept.totals),
        last_24h={t.value: round(features.counts[f"{t.value}_24h"], 3) for t in EventType},
        top_categories=[(c, round(w, 3)) for c, w in features.top_categories],
        recent=recent,
        recent_queries=features.recent_queries,
        sessions=kept.sessions,
        session_events=kept.session_events,
        last_event_at=kept.as_of or None,
    )
