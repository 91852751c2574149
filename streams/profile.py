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

Idempotence. An event whose ``event_id`` is among the user's recent ids is ignored (client
retries, double beacons). Redelivery after a worker crash is handled one level up, by the
applied offsets that the stream processor keeps in the same state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streams.events import Event, EventType

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
MAX_CATEGORIES = 32
RECENT_N = 20
RECENT_QUERIES_N = 10
RECENT_EVENT_IDS_N = 64

RECENT_LISTS: dict[str, tuple[EventType, ...]] = {
    "viewed": (EventType.VIEW, EventType.CLICK),
    "carted": (EventType.ADD_TO_CART,),
    "purchased": (EventType.PURCHASE,),
}


class ItemLookup(Protocol):
    """What the profile needs to know about an item (the catalog provides it)."""

    def categories(self, item_id: str) -> Sequence[str]: ...

    def embedding(self, item_id: str) -> np.ndarray | None: ...


def counter_name(event_type: EventType, window: str) -> str:
    return f"{event_type.value}_{window}"


@dataclass
class UserProfile:
    """Per-user state. All decayed values refer to ``as_of`` (epoch seconds, event time)."""

    user_id: str
    as_of: float = 0.0
    totals: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in EventType})
    decayed: dict[str, float] = field(
        default_factory=lambda: {counter_name(t, w): 0.0 for t in EventType for w in COUNT_WINDOWS}
    )
    recent: dict[str, list[tuple[str, float]]] = field(
        default_factory=lambda: {name: [] for name in RECENT_LISTS}
    )
    recent_queries: list[tuple[str, float]] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
    interest_sum: np.ndarray | None = None
    interest_weight: float = 0.0
    applied_offsets: dict[int, int] = field(default_factory=dict)
    recent_event_ids: list[str] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return sum(self.totals.values())

    # --- online-store row (one Feast entity row; see feature_repo/definitions.py) ---------
    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"user_id": self.user_id, "as_of": self.as_of}
        row.update({f"total_{k}": v for k, v in self.totals.items()})
        row.update(self.decayed)
        for name, entries in self.recent.items():
            row[f"recent_{name}"] = [item for item, _ in entries]
            row[f"recent_{name}_ts"] = [ts for _, ts in entries]
        row["recent_queries"] = [q for q, _ in self.recent_queries]
        row["recent_queries_ts"] = [ts for _, ts in self.recent_queries]
        ranked = sorted(self.categories.items(), key=lambda kv: -kv[1])
        row["top_categories"] = [c for c, _ in ranked]
        row["category_weights"] = [w for _, w in ranked]
        row["interest_sum"] = (
            [] if self.interest_sum is None else self.interest_sum.astype(np.float32).tolist()
        )
        row["interest_weight"] = self.interest_weight
        row["applied_offsets"] = json.dumps({str(p): o for p, o in self.applied_offsets.items()})
        row["recent_event_ids"] = list(self.recent_event_ids)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UserProfile:
        """Rebuild the state written by ``to_row``; missing values give an empty profile."""
        profile = cls(user_id=str(row["user_id"]))
        if row.get("as_of") is None:
            return profile
        profile.as_of = float(row["as_of"])
        for t in EventType:
            profile.totals[t.value] = int(row.get(f"total_{t.value}") or 0)
        for name in profile.decayed:
            profile.decayed[name] = float(row.get(name) or 0.0)
        for name in RECENT_LISTS:
            items = row.get(f"recent_{name}") or []
            stamps = row.get(f"recent_{name}_ts") or []
            profile.recent[name] = list(zip(map(str, items), map(float, stamps), strict=True))
        profile.recent_queries = list(
            zip(
                map(str, row.get("recent_queries") or []),
                map(float, row.get("recent_queries_ts") or []),
                strict=True,
            )
        )
        profile.categories = dict(
            zip(
                map(str, row.get("top_categories") or []),
                map(float, row.get("category_weights") or []),
                strict=True,
            )
        )
        interest = row.get("interest_sum") or []
        profile.interest_sum = np.asarray(interest, dtype=np.float64) if len(interest) else None
        profile.interest_weight = float(row.get("interest_weight") or 0.0)
        offsets = json.loads(row.get("applied_offsets") or "{}")
        profile.applied_offsets = {int(p): int(o) for p, o in offsets.items()}
        profile.recent_event_ids = [str(e) for e in row.get("recent_event_ids") or []]
        return profile


def _decay(age_s: float, tau_s: float) -> float:
    return math.exp(-age_s / tau_s) if age_s > 0 else 1.0


def _insert_recent(
    entries: list[tuple[str, float]], key: str, ts: float, limit: int
) -> list[tuple[str, float]]:
    """Newest first, one entry per key (the newest time wins), at most ``limit`` entries."""
    kept = [(k, t) for k, t in entries if k != key]
    previous = next((t for k, t in entries if k == key), None)
    ts = max(ts, previous) if previous is not None else ts
    kept.append((key, ts))
    kept.sort(key=lambda kt: -kt[1])
    return kept[:limit]


def apply_event(profile: UserProfile, event: Event, items: ItemLookup) -> bool:
    """Fold one event into ``profile`` (in place). Returns False for a duplicate event.

    In place rather than copy-on-write because the live agent folds tens of thousands of
    events a second; the transition is still deterministic: same state + same event ->
    same state, whatever process runs it.
    """
    if event.event_id in profile.recent_event_ids:
        return False
    profile.recent_event_ids.append(event.event_id)
    if len(profile.recent_event_ids) > RECENT_EVENT_IDS_N:
        del profile.recent_event_ids[0]

    ts = event.epoch
    if ts > profile.as_of:
        # Move every decayed sum forward to the new reference time.
        gap = ts - profile.as_of if profile.as_of else 0.0
        if gap:
            for window, tau in COUNT_WINDOWS.items():
                factor = _decay(gap, tau)
                for t in EventType:
                    profile.decayed[counter_name(t, window)] *= factor
            cat_factor = _decay(gap, CATEGORY_TAU_S)
            for cat in profile.categories:
                profile.categories[cat] *= cat_factor
            interest_factor = _decay(gap, INTEREST_TAU_S)
            if profile.interest_sum is not None:
                profile.interest_sum *= interest_factor
            profile.interest_weight *= interest_factor
        profile.as_of = ts
    age = profile.as_of - ts  # > 0 only for a late event

    profile.totals[event.type.value] += 1
    for window, tau in COUNT_WINDOWS.items():
        profile.decayed[counter_name(event.type, window)] += _decay(age, tau)

    if event.type is EventType.SEARCH:
        assert event.query is not None
        profile.recent_queries = _insert_recent(
            profile.recent_queries, event.query, ts, RECENT_QUERIES_N
        )
        return True

    assert event.item_id is not None
    for name, types in RECENT_LISTS.items():
        if event.type in types:
            profile.recent[name] = _insert_recent(profile.recent[name], event.item_id, ts, RECENT_N)

    weight = TYPE_WEIGHTS[event.type]
    categories = items.categories(event.item_id)
    if categories:
        share = weight * _decay(age, CATEGORY_TAU_S) / len(categories)
        for cat in categories:
            profile.categories[cat] = profile.categories.get(cat, 0.0) + share
        if len(profile.categories) > MAX_CATEGORIES:
            ranked = sorted(profile.categories.items(), key=lambda kv: -kv[1])
            profile.categories = dict(ranked[:MAX_CATEGORIES])

    vector = items.embedding(event.item_id)
    if vector is not None:
        w = weight * _decay(age, INTEREST_TAU_S)
        if profile.interest_sum is None:
            profile.interest_sum = np.zeros(vector.shape[0], dtype=np.float64)
        profile.interest_sum += w * vector
        profile.interest_weight += w
    return True


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
    recent_carted: list[str]
    purchased: list[str]
    recent_queries: list[str]
    last_event_at: float


def derive_features(profile: UserProfile, now: float, top_k: int = 5) -> ProfileFeatures:
    gap = max(0.0, now - profile.as_of) if profile.as_of else 0.0
    counts = {
        counter_name(t, w): profile.decayed[counter_name(t, w)] * _decay(gap, tau)
        for t in EventType
        for w, tau in COUNT_WINDOWS.items()
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
        recent_viewed=[i for i, _ in profile.recent["viewed"]],
        recent_carted=[i for i, _ in profile.recent["carted"]],
        purchased=[i for i, _ in profile.recent["purchased"]],
        recent_queries=[q for q, _ in profile.recent_queries],
        last_event_at=profile.as_of,
    )
