"""The experiment join on a scripted scenario whose CTR and CVR are known by hand."""

from datetime import UTC, datetime, timedelta

import pytest

from streams.events import Event
from streams.experiments import ExperimentJoin, join_in_time_order, wilson
from streams.impressions import Impression

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def shown(request: str, user: str, arm: str, items: list[str], minute: float) -> Impression:
    return Impression(
        request_id=request,
        user_id=user,
        arm=arm,
        model_version=f"model-{arm}",
        strategy="personalized",
        items=items,
        propensities=[0.95] * len(items),
        ts=T0 + timedelta(minutes=minute),
    )


def did(event_id: str, user: str, kind: str, item: str, minute: float) -> Event:
    return Event(
        event_id=event_id,
        user_id=user,
        type=kind,  # type: ignore[arg-type]
        item_id=item,
        ts=T0 + timedelta(minutes=minute),
    )


def test_ctr_and_cvr_per_arm_on_a_scripted_scenario() -> None:
    impressions = [
        shown("r1", "ann", "a", ["1", "2", "3"], 0),  # clicked (2), then bought (2)
        shown("r2", "bob", "a", ["4", "5"], 0),  # only a view: not a click
        shown("r3", "cat", "a", ["6"], 0),  # clicked 31 minutes later: outside the window
        shown("r4", "dan", "b", ["1", "7"], 0),  # bought straight away: clicked and converted
        shown("r5", "eve", "b", ["8"], 0),  # clicked twice: counted once
        shown("r6", "eve", "b", ["8", "9"], 5),  # ...and the click goes to the newest page
        shown("r7", "fay", "b", ["9"], 10),  # clicked BEFORE being shown: not credited
    ]
    events = [
        did("e1", "ann", "click", "2", 1),
        did("e2", "ann", "purchase", "2", 3),
        did("e3", "bob", "view", "4", 1),
        did("e4", "cat", "click", "6", 31),
        did("e5", "dan", "purchase", "7", 2),
        did("e6", "eve", "click", "8", 6),
        did("e7", "eve", "click", "8", 7),
        did("e8", "fay", "click", "9", 9),
        did("e9", "zed", "click", "1", 1),  # never shown anything
    ]
    table = join_in_time_order(impressions, events).table()
    assert {arm: (r["impressions"], r["clicked"], r["converted"]) for arm, r in table.items()} == {
        "a": (3, 1, 1),
        "b": (4, 2, 1),
    }
    assert table["a"]["ctr"] == pytest.approx(1 / 3)
    assert table["b"]["cvr"] == pytest.approx(1 / 4)
    low, high = table["b"]["ctr_95"]  # type: ignore[misc]
    assert low < 0.5 < high


def test_redelivered_impressions_and_events_count_once() -> None:
    join = ExperimentJoin()
    impression = shown("r1", "ann", "a", ["1"], 0)
    click = did("e1", "ann", "click", "1", 1)
    for _ in range(3):  # a worker restart replays both
        join.add_impression(impression)
        join.add_event(click)
    result = join.table()["a"]
    assert (result["impressions"], result["clicked"]) == (1, 1)


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_a_click_read_before_its_impression_is_still_credited() -> None:
    """Live, the two topics are read side by side: arrival order is not event order."""
    join = ExperimentJoin()
    join.add_event(did("e1", "ann", "click", "1", 2))
    join.add_event(did("e2", "ann", "purchase", "1", 3))
    join.add_impression(shown("r1", "ann", "a", ["1", "2"], 1))
    join.add_impression(shown("r2", "ann", "a", ["1"], 1.5))  # the click is already credited
    result = join.table()["a"]
    assert (result["impressions"], result["clicked"], result["converted"]) == (2, 1, 1)


def test_state_restored_from_its_records_keeps_counting_once() -> None:
    """What a worker restarted from the changelog sees: the records, not the objects."""
    import json

    first = ExperimentJoin()
    first.add_impression(shown("r1", "ann", "a", ["1"], 0))
    first.add_event(did("e1", "ann", "click", "1", 1))
    restored = ExperimentJoin(users=json.loads(json.dumps(dict(first.users))))
    restored.add_impression(shown("r1", "ann", "a", ["1"], 0))  # redelivered tail
    restored.add_event(did("e1", "ann", "click", "1", 1))
    restored.add_event(did("e2", "ann", "purchase", "1", 2))
    result = restored.table()["a"]
    assert (result["impressions"], result["clicked"], result["converted"]) == (1, 1, 1)
