"""THE profile logic: one state transition per event, and the features derived from the state.

The live Faust agent, replay and training-data generation all call ``apply_event`` and
``derive_features``; nothing else may compute a profile. That is what keeps online and
offline features equal.

Time. Event time (``Event.ts``), never arrival time, drives everything, so a replay of the
same events gives the same profile. Decayed quantities are sums ``Σ w_i·exp(-(t - t_i)/τ)``
stored as of ``as_of`` (the newest event time seen). Such sums do not depend on the order
of the events, so the policy for late and out-of-order events is simply: accept them,
weight them by their age relative to ``as_of``, and place them by event time in the
"recent" lists. Nothing is dropped for lateness.

Sessions. An event's ``session_id`` when it has one, else a gap of ``SESSION_GAP_S`` without
events starts a new session. A late event joins the current session when it is no older
than the session's start minus the gap; older ones count everywhere except in sessions
(the one part of the profile that depends on arrival order).

Idempotence. An event whose ``event_id`` is among the user's recent ids is ignored (client
retries, double beacons). Redelivery after a worker crash is handled one level up, by the
applied offsets that the stream processor keeps in the same state.

Cost. Decayed sums are kept relative to a reference time (``streams/decay.py``), so folding
an event costs the same however many categories or counters the profile holds. The stored
row holds every value as of ``as_of``, readable without knowing that trick. The recent
lists are ordered dicts (``Recent``: insert, move and evict in O(1)), and the interest
vector's terms are added in one matrix product when the vector is read, so a fold step is
a few dict operations and no numpy call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import exp
from typing import Any, Protocol

import numpy as np

from streams.decay import growth, needs_rebase, value_at
from streams.events import Event, EventType
from streams.outbox import ItemEffect, decode_outbox, encode_outbox

# --- the profile's definition -------------------------------------------------------------
COUNT_WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86_400.0, "30d": 30 * 86_400.0}
"""Decayed counters: time constant τ per window name."""

TYPE_WEIGHTS: dict[EventType, float] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 4.0,
    EventType.PURCHASE: 6.0,
    EventType.SEARCH: 0.0,
}
"""How much an event says about the user's taste (category affinity, interest vector)."""

CATEGORY_TAU_S = 7 * 86_400.0
INTEREST_TAU_S = 14 * 86_400.0
SHORTEST_TAU_S = min(*COUNT_WINDOWS.values(), CATEGORY_TAU_S, INTEREST_TAU_S)
MAX_CATEGORIES = 32
RECENT_N = 20
SEEN_N = 500
"""Distinct items remembered per user for the show-again rule (``serving.ranking``), far
more than the recent lists keep: without it a heavy user's 21st-newest film or purchase
comes back as a recommendation, and every heavy user's row fills with the same
best-sellers they have all consumed already."""
RECENT_QUERIES_N = 10
RECENT_EVENT_IDS_N = 64
MAX_UNSUMMED = 1024  # interest terms gathered before they are added (bounds the memory)
SESSION_GAP_S = 30 * 60.0


class Recent(dict[str, float]):
    """The last few distinct keys (items, queries) with their newest time, kept oldest
    first in the dict's own order: a new key, a repeat and an eviction are each O(1).
    Rows and features list them newest first (``newest_first``)."""

    def add(self, key: str, ts: float, limit: int) -> None:
        """One entry per key at its newest time, at most ``limit`` entries, in time order.
        A late key is placed by its time, behind (older than) the entries of the same time;
        one as new as the newest becomes the newest."""
        previous = self.pop(key, None)
        if previous is not None and previous > ts:
            ts = previous
        if self and ts < next(reversed(self.values())):  # late: rare, so a sort is fine
            ordered = sorted([(key, ts), *self.items()], key=_by_time)
            self.clear()
            self.update(ordered)
        else:
            self[key] = ts
        if len(self) > limit:
            del self[next(iter(self))]

    def newest_first(self) -> list[tuple[str, float]]:
        return list(reversed(self.items()))

    def keys_newest_first(self) -> list[str]:
        return list(reversed(self))

    @classmethod
    def from_newest_first(cls, pairs: Iterable[tuple[str, float]]) -> Recent:
        return cls(reversed(list(pairs)))


def _by_time(entry: tuple[str, float]) -> float:
    return entry[1]


RECENT_LISTS: dict[str, EventType] = {
    "viewed": EventType.VIEW,
    "clicked": EventType.CLICK,
    "carted": EventType.ADD_TO_CART,
    "purchased": EventType.PURCHASE,
}
"""The last ``RECENT_N`` distinct items per event type, newest first."""

MEMORY_LISTS = ("seen_items", "bought_items")
"""The profile's long item memories (``SEEN_N`` each), stored like the recent lists."""


class ItemLookup(Protocol):
    """What the profile needs to know about an item (the catalog provides it)."""

    def categories(self, item_id: str) -> Sequence[str]: ...

    def embedding_row(self, item_id: str) -> tuple[np.ndarray, int] | None:
        """The matrix of item vectors and the item's row in it; None: no vector. A row
        rather than the vector: the interest sum gathers its pending rows in one step."""
        ...


@dataclass(slots=True)
class PendingTerms:
    """Terms ``weight · matrix[row]`` of an interest sum, not added yet."""

    matrix: np.ndarray
    weights: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def total(self) -> np.ndarray:
        # a gather of the rows: 3x quicker than building the array from the row vectors
        return np.asarray(self.weights, dtype=np.float32) @ self.matrix[self.rows]


def counter_name(event_type: EventType, window: str) -> str:
    return f"{event_type.value}_{window}"


COUNTER_TAUS: dict[str, float] = {
    counter_name(t, w): tau for t in EventType for w, tau in COUNT_WINDOWS.items()
}
TOTAL_NAMES: dict[str, str] = {t.value: f"total_{t.value}" for t in EventType}
TAUS = frozenset([*COUNT_WINDOWS.values(), CATEGORY_TAU_S, INTEREST_TAU_S])


def decay_factors(gap: float) -> dict[float, float]:
    """``exp(-gap/τ)`` per time constant: what moving ``ref`` on by ``gap`` multiplies the
    sums of each τ by (one ``exp`` per τ, not per counter)."""
    return {tau: math.exp(-gap / tau) for tau in TAUS}


COUNTERS_OF_TYPE: dict[EventType, tuple[tuple[str, float], ...]] = {
    t: tuple((counter_name(t, w), tau) for w, tau in COUNT_WINDOWS.items()) for t in EventType
}


@dataclass
class UserProfile:
    """Per-user state. ``as_of`` is the newest event time seen (epoch seconds).

    Decayed sums (``decayed``, ``categories``, ``interest_*``) are held relative to ``ref``
    while in memory (see ``streams/decay.py``); ``to_row`` writes them as of ``as_of``.
    """

    user_id: str
    as_of: float = 0.0
    ref: float = 0.0
    totals: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in EventType})
    decayed: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTER_TAUS, 0.0))
    recent: dict[str, Recent] = field(
        default_factory=lambda: {name: Recent() for name in RECENT_LISTS}
    )
    recent_queries: Recent = field(default_factory=Recent)
    seen_items: Recent = field(default_factory=Recent)
    """Every item of any event type, newest ``SEEN_N`` (what ``none`` never shows again)."""
    bought_items: Recent = field(default_factory=Recent)
    """Purchased items, newest ``SEEN_N`` (what ``unbought`` never shows again)."""
    categories: dict[str, float] = field(default_factory=dict)
    _interest_sum: np.ndarray | None = field(default=None, repr=False)
    interest_weight: float = 0.0
    session_id: str = ""
    session_start: float = 0.0
    session_events: int = 0
    sessions: int = 0
    applied_offsets: dict[int, int] = field(default_factory=dict)
    recent_event_ids: dict[str, None] = field(default_factory=dict)  # oldest first
    outbox: list[ItemEffect] = field(default_factory=list)  # see streams/outbox.py
    opted_out: bool = False
    """A tombstone: the user opted out, nothing else is kept (``streams/privacy.py``)."""
    _unsummed: PendingTerms | None = field(default=None, repr=False)
    """Terms of the interest sum not added yet (see ``interest_sum``); None when there are
    none, which costs a cached profile nothing."""

    @property
    def interest_sum(self) -> np.ndarray | None:
        """The decayed, weighted sum of engaged items' vectors (relative to ``ref``).

        Terms are gathered as events are folded and added in one matrix product when the
        sum is read (a write, a rebase, features): one small numpy operation per event was
        a fifth of the fold's time. The order of float32 additions changes with it, so two
        runs that read at other moments agree within float32 rounding, not bit for bit
        (``streams/consistency.py`` compares the vector with a tolerance)."""
        if self._unsummed is not None:
            self._add_unsummed()
        return self._interest_sum

    @interest_sum.setter
    def interest_sum(self, value: np.ndarray | None) -> None:
        self._interest_sum, self._unsummed = value, None

    def _add_unsummed(self) -> None:
        pending, self._unsummed = self._unsummed, None
        if pending is None:
            return
        total = pending.total()
        if self._interest_sum is None:
            self._interest_sum = np.zeros(total.shape[0], dtype=np.float32)
        self._interest_sum += total

    @classmethod
    def tombstone(cls, user_id: str) -> UserProfile:
        return cls(user_id=user_id, opted_out=True)

    @property
    def event_count(self) -> int:
        return sum(self.totals.values())

    # --- decayed sums --------------------------------------------------------------------
    def rebase(self, new_ref: float) -> None:
        """Re-express every decayed sum relative to ``new_ref`` (rare: see decay.py)."""
        gap = new_ref - self.ref
        if gap == 0:
            return
        factor = decay_factors(gap)
        decayed = self.decayed
        for name, tau in COUNTER_TAUS.items():
            decayed[name] *= factor[tau]
        weight = factor[CATEGORY_TAU_S]
        for cat in self.categories:
            self.categories[cat] *= weight
        interest = self.interest_sum  # adds the pending terms first
        if interest is not None:
            interest *= factor[INTEREST_TAU_S]
        self.interest_weight *= factor[INTEREST_TAU_S]
        self.ref = new_ref

    # --- online-store row (one Feast entity row; see feature_repo/definitions.py) ---------
    def to_row(self) -> dict[str, Any]:
        """The state as a flat row, every decayed value as of ``as_of``: the values a
        ``rebase(as_of)`` would hold, bit for bit, computed without changing the state."""
        interest = self.interest_sum  # adds the pending terms first
        factor = decay_factors(self.as_of - self.ref)
        decayed = self.decayed
        row: dict[str, Any] = {"user_id": self.user_id, "as_of": self.as_of}
        for kind, count in self.totals.items():
            row[TOTAL_NAMES[kind]] = count
        for name, tau in COUNTER_TAUS.items():
            row[name] = decayed[name] * factor[tau]
        for name, entries in self.recent.items():
            row[f"recent_{name}"] = entries.keys_newest_first()
            row[f"recent_{name}_ts"] = list(reversed(entries.values()))
        row["recent_queries"] = self.recent_queries.keys_newest_first()
        row["recent_queries_ts"] = list(reversed(self.recent_queries.values()))
        for name in MEMORY_LISTS:
            entries = getattr(self, name)
            row[name] = entries.keys_newest_first()
            row[f"{name}_ts"] = list(reversed(entries.values()))
        weight = factor[CATEGORY_TAU_S]
        ranked = sorted(
            [(c, w * weight) for c, w in self.categories.items()], key=lambda kv: -kv[1]
        )
        row["top_categories"] = [c for c, _ in ranked]
        row["category_weights"] = [w for _, w in ranked]
        weight = factor[INTEREST_TAU_S]
        row["interest_sum"] = [] if interest is None else (interest * weight).tolist()
        row["interest_weight"] = self.interest_weight * weight
        row["session_id"] = self.session_id
        row["session_start"] = self.session_start
        row["session_events"] = self.session_events
        row["sessions"] = self.sessions
        row["applied_offsets"] = json.dumps({str(p): o for p, o in self.applied_offsets.items()})
        row["recent_event_ids"] = list(self.recent_event_ids)
        row["outbox"] = encode_outbox(self.outbox)
        row["opted_out"] = int(self.opted_out)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], worker_state: bool = True) -> UserProfile:
        """Rebuild the state written by ``to_row``; missing values give an empty profile.
        ``worker_state=False`` leaves out what only the stream's own fold reads (applied
        offsets, recent event ids, the outbox): serving reads a profile at every request
        and never folds it."""
        profile = cls(user_id=str(row["user_id"]), opted_out=bool(row.get("opted_out")))
        if row.get("as_of") is None:
            return profile
        profile.as_of = profile.ref = float(row["as_of"])
        for t in EventType:
            profile.totals[t.value] = int(row.get(f"total_{t.value}") or 0)
        for name in profile.decayed:
            profile.decayed[name] = float(row.get(name) or 0.0)
        for name in RECENT_LISTS:
            profile.recent[name] = _pairs(row, f"recent_{name}")
        profile.recent_queries = _pairs(row, "recent_queries")
        for name in MEMORY_LISTS:
            setattr(profile, name, _pairs(row, name))
        profile.categories = dict(
            zip(
                map(str, row.get("top_categories") or []),
                map(float, row.get("category_weights") or []),
                strict=True,
            )
        )
        interest = row.get("interest_sum") or []
        profile.interest_sum = np.asarray(interest, dtype=np.float32) if len(interest) else None
        profile.interest_weight = float(row.get("interest_weight") or 0.0)
        profile.session_id = str(row.get("session_id") or "")
        profile.session_start = float(row.get("session_start") or 0.0)
        profile.session_events = int(row.get("session_events") or 0)
        profile.sessions = int(row.get("sessions") or 0)
        if worker_state:
            offsets = json.loads(row.get("applied_offsets") or "{}")
            profile.applied_offsets = {int(p): int(o) for p, o in offsets.items()}
            profile.recent_event_ids = dict.fromkeys(map(str, row.get("recent_event_ids") or []))
            profile.outbox = decode_outbox(row.get("outbox"))
        return profile


def _pairs(row: Mapping[str, Any], name: str) -> Recent:
    return Recent.from_newest_first(
        zip(map(str, row.get(name) or []), map(float, row.get(f"{name}_ts") or []), strict=True)
    )


def _update_session(profile: UserProfile, event: Event, ts: float) -> None:
    """Called before ``as_of`` moves to ``ts``. Only an in-order event opens a session."""
    if event.session_id is not None:
        joins = event.session_id == profile.session_id
    elif ts >= profile.as_of:
        joins = ts - profile.as_of <= SESSION_GAP_S
    else:
        joins = ts >= profile.session_start - SESSION_GAP_S
    if profile.sessions and joins:
        profile.session_events += 1
        profile.session_start = min(profile.session_start, ts)
    elif not profile.sessions or ts >= profile.as_of:
        profile.sessions += 1
        profile.session_id = event.session_id or f"s{profile.sessions}"
        profile.session_start = ts
        profile.session_events = 1


def apply_event(profile: UserProfile, event: Event, items: ItemLookup) -> bool:
    """Fold one event into ``profile`` (in place). Returns False for a duplicate event.

    In place rather than copy-on-write because the live agent folds tens of thousands of
    events a second; the transition is still deterministic: same state + same event ->
    same state, whatever process runs it.
    """
    seen = profile.recent_event_ids
    if event.event_id in seen:
        return False
    seen[event.event_id] = None
    if len(seen) > RECENT_EVENT_IDS_N:
        del seen[next(iter(seen))]

    ts = event.epoch
    if not profile.ref:
        profile.ref = ts
    elif needs_rebase(ts, profile.ref, SHORTEST_TAU_S):
        profile.rebase(ts)
    ref = profile.ref
    _update_session(profile, event, ts)
    if ts > profile.as_of:
        profile.as_of = ts

    kind = event.type
    profile.totals[kind] += 1  # a StrEnum member finds the entry of its value
    decayed = profile.decayed
    for name, tau in COUNTERS_OF_TYPE[kind]:
        decayed[name] += exp((ts - ref) / tau)  # growth(ts, ref, tau), inlined: hottest loop

    if kind is EventType.SEARCH:
        assert event.query is not None
        profile.recent_queries.add(event.query, ts, RECENT_QUERIES_N)
        return True

    item = event.item_id
    assert item is not None
    profile.recent[LIST_OF_TYPE[kind]].add(item, ts, RECENT_N)
    profile.seen_items.add(item, ts, SEEN_N)
    if kind is EventType.PURCHASE:
        profile.bought_items.add(item, ts, SEEN_N)

    weight = TYPE_WEIGHTS[kind]
    categories = items.categories(item)
    if categories:
        share = weight * growth(ts, ref, CATEGORY_TAU_S) / len(categories)
        affinity = profile.categories
        for cat in categories:
            affinity[cat] = affinity.get(cat, 0.0) + share
        if len(affinity) > 2 * MAX_CATEGORIES:
            ranked = sorted(affinity.items(), key=lambda kv: -kv[1])
            profile.categories = dict(ranked[:MAX_CATEGORIES])

    found = items.embedding_row(item)
    if found is not None:
        matrix, row = found
        w = weight * growth(ts, ref, INTEREST_TAU_S)
        pending = profile._unsummed
        if pending is None or pending.matrix is not matrix:  # (a reloaded catalog)
            profile._add_unsummed()
            pending = profile._unsummed = PendingTerms(matrix)
        pending.weights.append(w)  # added when read (``interest_sum``)
        pending.rows.append(row)
        if len(pending.rows) >= MAX_UNSUMMED:
            profile._add_unsummed()
        profile.interest_weight += w
    return True


LIST_OF_TYPE: dict[EventType, str] = {t: name for name, t in RECENT_LISTS.items()}


# --- features derived from the state, as of a point in time ----------------------------------
@dataclass(frozen=True)
class ProfileFeatures:
    """What serving and training read: decayed values brought to ``now``."""

    user_id: str
    event_count: int
    counts: dict[str, float]
    top_categories: list[tuple[str, float]]
    interest: np.ndarray | None
    recent_viewed: list[str]
    recent_clicked: list[str]
    recent_carted: list[str]
    purchased: list[str]
    recent_queries: list[str]
    last_event_at: float
    session_events: int
    sessions: int
    history: list[tuple[str, EventType]] = field(default_factory=list)
    """Engaged items in time order (oldest first), each with its strongest event type: the
    sequence the ranking model reads. At most ``RECENT_N`` per type survive in the state."""
    seen: list[str] = field(default_factory=list)
    """Every item the user engaged with, newest ``SEEN_N`` first."""
    bought: list[str] = field(default_factory=list)
    """Every item the user bought, newest ``SEEN_N`` first."""

    @property
    def engaged(self) -> list[str]:
        """Recently engaged items, strongest signal first (cart, click, view)."""
        seen: dict[str, None] = {}
        for item in self.recent_carted + self.recent_clicked + self.recent_viewed:
            seen.setdefault(item, None)
        return list(seen)


def derive_features(
    profile: UserProfile, now: float, top_k: int = 5, memories: bool = True
) -> ProfileFeatures:
    """The features as of ``now``. ``memories=False`` leaves out the long item memories
    (``seen``, ``bought``): only the show-again rule reads them, and a training set holding
    a copy of them per example would be hundreds of megabytes for nothing."""
    now = max(now, profile.as_of)
    counts = {
        name: value_at(profile.decayed[name], profile.ref, tau, now)
        for name, tau in COUNTER_TAUS.items()
    }
    total = sum(profile.categories.values())
    ranked = sorted(profile.categories.items(), key=lambda kv: -kv[1])[:top_k]
    top = [(c, w / total) for c, w in ranked] if total > 0 else []
    interest = None
    if profile.interest_sum is not None and profile.interest_weight > 0:
        norm = float(np.linalg.norm(profile.interest_sum))
        if norm > 0:
            interest = (profile.interest_sum / norm).astype(np.float32)
    return ProfileFeatures(
        user_id=profile.user_id,
        event_count=profile.event_count,
        counts=counts,
        top_categories=top,
        interest=interest,
        recent_viewed=profile.recent["viewed"].keys_newest_first(),
        recent_clicked=profile.recent["clicked"].keys_newest_first(),
        recent_carted=profile.recent["carted"].keys_newest_first(),
        purchased=profile.recent["purchased"].keys_newest_first(),
        recent_queries=profile.recent_queries.keys_newest_first(),
        seen=profile.seen_items.keys_newest_first() if memories else [],
        bought=profile.bought_items.keys_newest_first() if memories else [],
        last_event_at=profile.as_of,
        session_events=profile.session_events,
        sessions=profile.sessions,
        history=engagement_history(profile),
    )


def engagement_history(profile: UserProfile) -> list[tuple[str, EventType]]:
    """The recent lists merged into one time line. An item in several lists appears once,
    at its newest time, with its strongest type (purchase > cart > click > view); ties in
    time keep a fixed order, so training and serving see the same sequence."""
    newest: dict[str, tuple[float, EventType]] = {}
    for name, event_type in RECENT_LISTS.items():  # weakest type first
        for item, ts in profile.recent[name].newest_first():
            known = newest.get(item)
            newest[item] = (ts, event_type) if known is None else (max(ts, known[0]), event_type)
    ordered = sorted(newest.items(), key=lambda kv: (kv[1][0], STRENGTH[kv[1][1]], kv[0]))
    return [(item, event_type) for item, (_, event_type) in ordered]


STRENGTH: dict[EventType, int] = {t: i for i, t in enumerate(RECENT_LISTS.values())}
