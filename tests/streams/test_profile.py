import copy
import math
import random

import numpy as np
import pytest

from streams.profile import (
    COUNT_WINDOWS,
    INTEREST_TAU_S,
    MAX_UNSUMMED,
    RECENT_N,
    SEEN_N,
    TYPE_WEIGHTS,
    Recent,
    UserProfile,
    apply_event,
    derive_features,
)
from tests.factories import ITEMS, T0, ev, fold


def test_counts_totals_and_last_event_time() -> None:
    p = fold([ev(1), ev(2, "click", "b", 10), ev(3, "purchase", "c", 20), ev(4, "search", dt=30)])
    assert p.totals == {"view": 1, "click": 1, "add_to_cart": 0, "purchase": 1, "search": 1}
    assert p.as_of == T0 + 30
    assert p.recent["purchased"].newest_first() == [("c", T0 + 20)]
    assert p.recent["clicked"].newest_first() == [("b", T0 + 10)]
    assert p.recent["viewed"].newest_first() == [("a", T0)]
    assert p.recent_queries.newest_first() == [("shoes", T0 + 30)]


def test_decayed_counters_follow_exponential_decay() -> None:
    p = fold([ev(1, dt=0), ev(2, "view", "b", dt=3600)])
    # the first view is one hour old when the second arrives
    row = p.to_row()
    assert row["view_1h"] == pytest.approx(1 + math.exp(-1))
    assert row["view_24h"] == pytest.approx(1 + math.exp(-3600 / 86400))
    later = derive_features(p, now=T0 + 2 * 3600)
    assert later.counts["view_1h"] == pytest.approx((1 + math.exp(-1)) * math.exp(-1))


def test_decay_stays_exact_across_months_of_events() -> None:
    """Sums are kept relative to a reference time and rebased; check against brute force."""
    times = [i * 5000.0 for i in range(600)]  # ~35 days, many rebases of the 1 h counter
    p = fold([ev(i, "view", "a", dt=t) for i, t in enumerate(times)])
    now = T0 + times[-1] + 1800
    features = derive_features(p, now=now)
    for window, tau in (("1h", 3600.0), ("24h", 86400.0), ("30d", 30 * 86400.0)):
        brute = sum(math.exp(-(now - (T0 + t)) / tau) for t in times)
        assert features.counts[f"view_{window}"] == pytest.approx(brute, rel=1e-9)


def test_sessions_split_on_gaps_or_ids() -> None:
    p = fold([ev(1, dt=0), ev(2, dt=600), ev(3, dt=600 + 3600), ev(4, dt=600 + 3700)])
    assert (p.sessions, p.session_events, p.session_start) == (2, 2, T0 + 4200)
    p = fold([ev(1, session_id="x"), ev(2, dt=5, session_id="x"), ev(3, dt=9, session_id="y")])
    assert (p.sessions, p.session_id, p.session_events) == (2, "y", 1)
    late = fold([ev(1, dt=0), ev(2, dt=3600), ev(3, dt=3500)])  # late, inside session 2
    assert (late.sessions, late.session_events) == (2, 2)


def test_duplicate_event_ids_are_applied_once() -> None:
    p = UserProfile(user_id="u")
    assert apply_event(p, ev(1), ITEMS)
    assert not apply_event(p, ev(1), ITEMS)
    assert p.totals["view"] == 1


def test_out_of_order_events_give_the_same_profile() -> None:
    rng = random.Random(7)
    types = ["view", "click", "add_to_cart", "purchase"]
    events = [
        ev(i, rng.choice(types), rng.choice("abc"), dt=rng.uniform(0, 5 * 86400))
        for i in range(200)
    ]
    in_order = fold(sorted(events, key=lambda e: e.ts))
    shuffled = fold(rng.sample(events, len(events)))
    assert shuffled.totals == in_order.totals
    assert shuffled.as_of == in_order.as_of
    a, b = in_order.to_row(), shuffled.to_row()
    for name in in_order.decayed:
        assert b[name] == pytest.approx(a[name], rel=1e-9)
    assert b["top_categories"] == a["top_categories"]
    assert b["category_weights"] == pytest.approx(a["category_weights"], rel=1e-9)
    for name, entries in in_order.recent.items():
        assert shuffled.recent[name].newest_first() == entries.newest_first()
    np.testing.assert_allclose(b["interest_sum"], a["interest_sum"], rtol=1e-5)


def test_the_interest_sum_is_the_same_whenever_it_is_read() -> None:
    """Its terms are added when it is read, or every ``MAX_UNSUMMED`` events: a profile
    read after every event and one read once hold the same vector (float32 rounding), and
    both equal the sum computed term by term in float64."""
    rng = random.Random(3)
    types = ["view", "click", "add_to_cart", "purchase"]
    events = [
        ev(i, rng.choice(types), rng.choice("abc"), dt=rng.uniform(0, 86400))
        for i in range(MAX_UNSUMMED + 300)
    ]
    read_often, read_once = UserProfile("u"), UserProfile("u")
    for event in events:
        apply_event(read_often, event, ITEMS)
        assert read_often.interest_sum is not None
        apply_event(read_once, event, ITEMS)
        pending = read_once._unsummed
        assert pending is None or len(pending.rows) < MAX_UNSUMMED  # bounded memory
    expected = sum(
        TYPE_WEIGHTS[e.type]
        * math.exp((e.epoch - read_once.ref) / INTEREST_TAU_S)
        * ITEMS.embedding(e.item_id).astype(np.float64)  # type: ignore[union-attr]
        for e in events
    )
    for profile in (read_often, read_once):
        assert profile.interest_sum is not None
        np.testing.assert_allclose(profile.interest_sum, expected, rtol=1e-5)


class _Reloaded:
    """The test catalog after a reload: the same items, new vectors in a new matrix."""

    matrix = np.array([[0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]], dtype=np.float32)

    def categories(self, item_id: str) -> tuple[str, ...]:
        return ITEMS.categories(item_id)

    def embedding_row(self, item_id: str) -> tuple[np.ndarray, int] | None:
        return self.matrix, "abc".index(item_id)


def test_terms_pending_from_a_replaced_catalog_keep_their_own_vectors() -> None:
    """A worker that reloads its catalog mid-stream: the terms gathered against the old
    matrix are added before the first one against the new matrix is kept."""
    events = [ev(i, "click", "abc"[i % 3], dt=60.0 * i) for i in range(10)]
    profile = UserProfile("u")
    for event in events[:5]:
        apply_event(profile, event, ITEMS)
    for event in events[5:]:
        apply_event(profile, event, _Reloaded())
    weights = [
        TYPE_WEIGHTS[e.type] * math.exp((e.epoch - profile.ref) / INTEREST_TAU_S) for e in events
    ]
    old = [ITEMS.embedding(e.item_id) for e in events[:5]]  # type: ignore[arg-type]
    new = [_Reloaded.matrix["abc".index(e.item_id)] for e in events[5:]]  # type: ignore[arg-type]
    expected = sum(w * v.astype(np.float64) for w, v in zip(weights, old + new, strict=True))
    assert profile.interest_sum is not None
    np.testing.assert_allclose(profile.interest_sum, expected, rtol=1e-5)


def _insert_as_a_list(
    entries: list[tuple[str, float]], key: str, ts: float, limit: int
) -> list[tuple[str, float]]:
    """The list definition ``Recent.add`` replaced (newest first), which it must match: one
    entry per key at its newest time; a key as new as the newest goes first, a late one
    after the entries of its time; the oldest cut."""
    if entries and entries[0][0] == key and entries[0][1] >= ts:
        return entries
    kept = [(k, t) for k, t in entries if k != key]
    previous = next((t for k, t in entries if k == key), None)
    ts = max(ts, previous) if previous is not None else ts
    if not kept or ts >= kept[0][1]:
        kept.insert(0, (key, ts))
    else:
        kept.append((key, ts))
        kept.sort(key=lambda kt: -kt[1])
    return kept[:limit]


def test_recent_matches_the_plain_list_definition() -> None:
    """Random keys and times, late and repeated ones, ties and evictions included."""
    rng = random.Random(11)
    for _ in range(200):
        recent, reference = Recent(), []
        for _ in range(60):
            key, ts = rng.choice("abcdefghij"), float(rng.randint(0, 30))
            recent.add(key, ts, 6)
            reference = _insert_as_a_list(reference, key, ts, 6)
            assert recent.newest_first() == reference


def test_recent_lists_are_bounded_unique_and_newest_first() -> None:
    items = [f"x{i}" for i in range(RECENT_N + 5)]
    events = [ev(i, "view", item, dt=i) for i, item in enumerate(items)]
    events.append(ev(999, "view", "x0", dt=1000))  # re-view moves x0 to the front
    p = fold(events)
    viewed = p.recent["viewed"].keys_newest_first()
    assert len(viewed) == RECENT_N
    assert viewed[0] == "x0"
    assert len(set(viewed)) == RECENT_N


def test_the_long_memories_outlive_the_recent_lists_and_stay_bounded() -> None:
    events = [ev(i, "purchase" if i % 2 else "view", f"x{i}", dt=i) for i in range(SEEN_N + 10)]
    p = fold(events)
    features = derive_features(p, now=T0 + SEEN_N + 10)
    assert len(features.seen) == SEEN_N and len(features.purchased) == RECENT_N
    assert features.seen[0] == f"x{SEEN_N + 9}" and f"x{9}" not in features.seen
    assert features.seen[-1] == "x10"  # the oldest ten are forgotten, oldest first
    assert len(features.bought) == (SEEN_N + 10) // 2
    assert set(features.bought) == {f"x{i}" for i in range(1, SEEN_N + 10, 2)}
    assert derive_features(p, now=T0, memories=False).seen == []
    back = UserProfile.from_row(p.to_row())
    assert derive_features(back, now=T0).seen == features.seen
    assert derive_features(back, now=T0).bought == features.bought


def test_category_affinity_and_interest_vector_follow_engagement() -> None:
    p = fold([ev(1, "purchase", "a"), ev(2, "view", "b"), ev(3, "view", "c")])
    features = derive_features(p, now=T0)
    top = dict(features.top_categories)
    assert features.top_categories[0][0] == "Horror"
    assert sum(top.values()) == pytest.approx(1.0)
    # purchase weight 6 on "a" vs view weight 1 on "b" and "c"
    assert features.interest is not None
    assert np.argmax(features.interest) == 0
    assert np.linalg.norm(features.interest) == pytest.approx(1.0, rel=1e-6)


def test_unknown_items_count_but_add_no_taste() -> None:
    p = fold([ev(1, "view", "not-in-catalog")])
    assert p.totals["view"] == 1
    assert p.categories == {}
    assert p.interest_sum is None
    assert derive_features(p, now=T0).interest is None


def test_row_round_trip_is_lossless_for_state() -> None:
    p = fold([ev(1, "purchase", "a"), ev(2, "search", dt=5), ev(3, "add_to_cart", "b", dt=9)])
    p.applied_offsets = {0: 41, 3: 7}
    row = p.to_row()
    back = UserProfile.from_row(row)
    for name, value in row.items():
        if name == "interest_sum":
            np.testing.assert_allclose(back.to_row()[name], value, rtol=1e-6)
        elif isinstance(value, float):
            assert back.to_row()[name] == pytest.approx(value, rel=1e-12), name
        else:
            assert back.to_row()[name] == value, name
    assert back.applied_offsets == {0: 41, 3: 7}
    assert (back.sessions, back.session_events) == (p.sessions, p.session_events)


def test_a_row_holds_what_a_rebase_to_its_time_would_and_leaves_the_state_alone() -> None:
    p = fold(
        [ev(i, ["view", "click", "purchase"][i % 3], "abc"[i % 3], dt=3000.0 * i) for i in range(9)]
    )
    p.ref = T0 - 86_400.0  # sums held relative to an older reference, as between rebases
    state = copy.deepcopy(p.__dict__)
    row = p.to_row()
    assert p.__dict__.keys() == state.keys() and p.ref == state["ref"]
    assert p.decayed == state["decayed"] and p.categories == state["categories"]
    rebased = copy.deepcopy(p)
    rebased.rebase(p.as_of)
    assert {name: row[name] for name in rebased.decayed} == rebased.decayed  # bit for bit
    assert (
        dict(zip(row["top_categories"], row["category_weights"], strict=True)) == rebased.categories
    )
    assert rebased.interest_sum is not None
    assert row["interest_sum"] == rebased.interest_sum.tolist()
    assert row["interest_weight"] == rebased.interest_weight


def test_an_empty_row_is_an_empty_profile() -> None:
    empty = UserProfile.from_row({"user_id": "nobody", "as_of": None})
    assert empty.event_count == 0
    assert derive_features(empty, now=T0).interest is None


def test_every_window_has_a_counter_per_type() -> None:
    p = UserProfile(user_id="u")
    assert len(p.decayed) == 5 * len(COUNT_WINDOWS)
