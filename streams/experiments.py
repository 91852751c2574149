"""The experiment join: impressions with the same user's later clicks and purchases.

An impression (one recommendation response) counts as *clicked* when the user clicks or
carts one of its items, and as *converted* when they buy one, within ``window_s`` after it
was shown (views do not count: browsing makes them anyway). A click is credited to the
newest impression that showed the item, so two pages showing the same item do not both
collect it. Per arm this gives CTR (clicked / impressions) and CVR (converted /
impressions), each with a 95 % Wilson interval so that a small difference between arms is
not read as a win.

Pure and deterministic (seed ``003``: experiment with data, not opinions): the same
inputs in event-time order always give the same table. Redelivered impressions (same
request id) and events (same event id) are counted once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.events import Event, EventType
from streams.impressions import Impression

CLICKS = {EventType.CLICK, EventType.ADD_TO_CART}
CONVERSIONS = {EventType.PURCHASE}


@dataclass
class ArmResult:
    impressions: int = 0
    clicked: int = 0
    converted: int = 0

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0

    @property
    def cvr(self) -> float:
        return self.converted / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "impressions": self.impressions,
            "clicked": self.clicked,
            "converted": self.converted,
            "ctr": self.ctr,
            "ctr_95": wilson(self.clicked, self.impressions),
            "cvr": self.cvr,
            "cvr_95": wilson(self.converted, self.impressions),
        }


@dataclass
class _Shown:
    impression: Impression
    epoch: float
    items: frozenset[str]
    clicked: bool = False
    converted: bool = False


@dataclass
class _UserState:
    shown: deque[_Shown] = field(default_factory=lambda: deque(maxlen=50))
    requests: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)


class ExperimentJoin:
    def __init__(self, window_s: float = 1800.0):
        self.window_s = window_s
        self.arms: dict[str, ArmResult] = {}
        self._users: dict[str, _UserState] = {}

    def add_impression(self, impression: Impression) -> None:
        user = self._users.setdefault(impression.user_id, _UserState())
        if impression.request_id in user.requests:
            return
        user.requests.add(impression.request_id)
        user.shown.append(
            _Shown(impression, impression.ts.timestamp(), frozenset(impression.items))
        )
        self.arms.setdefault(impression.arm, ArmResult()).impressions += 1

    def add_event(self, event: Event) -> None:
        if event.item_id is None or event.type not in CLICKS | CONVERSIONS:
            return
        user = self._users.get(event.user_id)
        if user is None or event.event_id in user.events:
            return
        user.events.add(event.event_id)
        for shown in reversed(user.shown):  # newest impression first
            if event.item_id in shown.items and 0 <= event.epoch - shown.epoch <= self.window_s:
                result = self.arms[shown.impression.arm]
                if event.type in CLICKS and not shown.clicked:
                    shown.clicked = True
                    result.clicked += 1
                if event.type in CONVERSIONS and not shown.converted:
                    shown.converted = True
                    result.converted += 1
                    if not shown.clicked:  # bought straight from the list
                        shown.clicked = True
                        result.clicked += 1
                return

    def table(self) -> dict[str, dict[str, object]]:
        return {arm: result.as_dict() for arm, result in sorted(self.arms.items())}


def join_in_time_order(
    impressions: Iterable[Impression], events: Iterable[Event], window_s: float = 1800.0
) -> ExperimentJoin:
    """The batch join (``streamrank experiments``): both inputs merged by event time,
    impressions before events at equal times."""
    timeline: list[tuple[float, int, Impression | Event]] = [
        (i.ts.timestamp(), 0, i) for i in impressions
    ]
    timeline += [(e.epoch, 1, e) for e in events]
    timeline.sort(key=lambda t: (t[0], t[1]))
    join = ExperimentJoin(window_s)
    for _, _, item in timeline:
        if isinstance(item, Impression):
            join.add_impression(item)
        else:
            join.add_event(item)
    return join


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound at small counts, unlike p ± 2σ)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))
