"""The experiment join: impressions with the same user's later clicks and purchases.

An impression (one recommendation response) counts as *clicked* when the user clicks or
carts one of its items, and as *converted* when they buy one, within ``window_s`` after it
was shown (views do not count: browsing makes them anyway). A click is credited to the
newest impression that showed the item, so two pages showing the same item do not both
collect it. Per arm this gives CTR (clicked / impressions) and CVR (converted /
impressions), each with a 95 % Wilson interval so that a small difference between arms is
not read as a win.

Deterministic (seed ``003``: experiment with data, not opinions), and the same code runs
in batch (``streamrank experiments``) and live (the experiment agent,
``streams/experiment_app.py``):
- Each user's join state is one JSON-able record (recent impressions, recent clicks, and
  the user's own per-arm counts) in a mapping: a dict in batch, a Faust table live. One
  record per user is one changelog write, so counts and the ids they were counted from
  are restored together after a crash; redelivered impressions (same request id) and
  events (same event id) are then recognised and counted once.
- The join is symmetric: a click that reaches the agent before its impression (the two
  topics are read side by side) is kept and credited when the impression arrives.
- Per-arm totals are the sum of the users' counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from streams.events import Event, EventType
from streams.impressions import Impression

CLICKS = {EventType.CLICK, EventType.ADD_TO_CART}
CONVERSIONS = {EventType.PURCHASE}
MAX_SHOWN = 50  # impressions remembered per user
MAX_EVENTS = 100  # clicks and purchases remembered per user

# A user's record (JSON-able, short keys: it is one changelog message per update):
#   shown:  [{"r": request id, "a": arm, "t": epoch, "i": items, "c": clicked, "v": converted}]
#   events: [{"e": event id, "i": item, "p": is purchase, "t": epoch, "x": credited}]
#   counts: {arm: [impressions, clicked, converted]}
UserRecord = dict[str, Any]


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


def _new_record() -> UserRecord:
    return {"shown": [], "events": [], "counts": {}}


def _credit(record: UserRecord, shown: dict[str, Any], purchase: bool) -> None:
    counts = record["counts"].setdefault(shown["a"], [0, 0, 0])
    if not shown["c"]:  # a purchase straight from the list is also a click
        shown["c"] = True
        counts[1] += 1
    if purchase and not shown["v"]:
        shown["v"] = True
        counts[2] += 1


class ExperimentJoin:
    def __init__(
        self, window_s: float = 1800.0, users: MutableMapping[str, UserRecord] | None = None
    ):
        self.window_s = window_s
        self.users: MutableMapping[str, UserRecord] = {} if users is None else users

    def _matches(self, shown: dict[str, Any], event: dict[str, Any]) -> bool:
        return event["i"] in shown["i"] and 0 <= event["t"] - shown["t"] <= self.window_s

    def add_impression(self, impression: Impression) -> None:
        record = self.users.get(impression.user_id) or _new_record()
        if any(s["r"] == impression.request_id for s in record["shown"]):
            return
        shown = {
            "r": impression.request_id,
            "a": impression.arm,
            "t": impression.ts.timestamp(),
            "i": list(impression.items),
            "c": False,
            "v": False,
        }
        record["counts"].setdefault(impression.arm, [0, 0, 0])[0] += 1
        record["shown"] = self._recent(record["shown"] + [shown], MAX_SHOWN, shown["t"])
        for event in record["events"]:  # clicks that reached the agent before this impression
            if not event["x"] and self._matches(shown, event):
                event["x"] = True
                _credit(record, shown, event["p"])
        self.users[impression.user_id] = record

    def add_event(self, event: Event) -> None:
        if event.item_id is None or event.type not in CLICKS | CONVERSIONS:
            return
        record = self.users.get(event.user_id)
        if record is None:
            record = _new_record()
        elif any(e["e"] == event.event_id for e in record["events"]):
            return
        seen = {
            "e": event.event_id,
            "i": event.item_id,
            "p": event.type in CONVERSIONS,
            "t": event.epoch,
            "x": False,
        }
        record["events"] = self._recent(record["events"] + [seen], MAX_EVENTS, event.epoch)
        for shown in sorted(record["shown"], key=lambda s: s["t"], reverse=True):
            if self._matches(shown, seen):  # the newest impression that showed the item
                seen["x"] = True
                _credit(record, shown, seen["p"])
                break
        self.users[event.user_id] = record

    def forget(self, user_id: str) -> None:
        """An opt-out or erasure: the user's record goes (and with it their share of the
        per-arm counts, which were kept in it)."""
        self.users.pop(user_id, None)

    def _recent(self, entries: list[dict[str, Any]], keep: int, now: float) -> list[dict[str, Any]]:
        """Entries still inside the window of the time just seen, at most ``keep``."""
        horizon = now - self.window_s
        return [e for e in entries if e["t"] >= horizon][-keep:]

    @property
    def arms(self) -> dict[str, ArmResult]:
        return arm_totals(self.users.values())

    def table(self) -> dict[str, dict[str, object]]:
        return {arm: result.as_dict() for arm, result in sorted(self.arms.items())}


def arm_totals(records: Iterable[UserRecord]) -> dict[str, ArmResult]:
    totals: dict[str, list[int]] = {}
    for record in records:
        for arm, counts in record["counts"].items():
            total = totals.setdefault(arm, [0, 0, 0])
            for i in range(3):
                total[i] += counts[i]
    return {arm: ArmResult(*counts) for arm, counts in totals.items()}


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
