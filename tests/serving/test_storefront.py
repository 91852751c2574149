"""What the storefront reads besides recommendations: the catalog grid and the profile view."""

from __future__ import annotations

from serving.storefront import list_items, profile_view
from streamrank.catalog import Catalog
from streams.profile import UserProfile, apply_event
from tests.factories import ev


def test_the_grid_matches_every_word_and_puts_the_popular_first(catalog: Catalog) -> None:
    page = list_items(catalog, [], query="star wars")
    assert page.total >= 1
    assert all("star" in i.title.lower() and "wars" in i.title.lower() for i in page.items)
    horror = list_items(catalog, [], category="Horror", limit=100)
    assert horror.total == sum("Horror" in catalog.categories(i) for i in catalog.ids)
    assert all("Horror" in i.categories for i in horror.items)
    by_genre = list_items(catalog, [], query="horror")  # a word may name a category too
    assert by_genre.total >= horror.total
    last = horror.items[-1].item_id
    ranked = list_items(catalog, [(last, 9.0)], category="Horror")
    assert ranked.items[0].item_id == last  # the stream's most popular first
    assert list_items(catalog, [], query="no such title zzz").items == []
    paged = list_items(catalog, [], limit=5, offset=5)
    assert [i.item_id for i in paged.items] == catalog.ids[5:10]
    every = {c for i in catalog.ids for c in catalog.categories(i)}
    assert page.categories == sorted(every) and "Horror" in page.categories


def test_the_profile_view_shows_what_is_kept_and_nothing_for_a_tombstone(
    catalog: Catalog,
) -> None:
    profile = UserProfile("u")
    for event in (ev(1, "view", "1"), ev(2, "purchase", "50", dt=5), ev(3, "search", dt=6)):
        apply_event(profile, event, catalog)  # the catalog's genres and embeddings
    view = profile_view("raw-id", profile, catalog, "main")
    assert view.user_id == "raw-id" and not view.opted_out
    assert (view.events, view.totals["purchase"], view.totals["search"]) == (3, 1, 1)
    assert [i.item_id for i in view.recent["purchased"]] == ["50"]
    assert view.recent["viewed"][0].title == catalog.title("1")
    assert view.recent_queries == ["shoes"]
    # the purchase (weight 6) outweighs the view (1): its genres lead, as shares of the whole
    assert {c for c, _ in view.top_categories} == set(catalog.categories("50"))
    assert sum(w for _, w in view.top_categories) < 1
    gone = profile_view("raw-id", UserProfile.tombstone("u"), catalog, "main")
    assert gone.opted_out and gone.events == 0 and gone.recent["viewed"] == []
    assert profile_view("new", None, catalog, "b").events == 0
