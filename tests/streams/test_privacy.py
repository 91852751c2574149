"""Opt-outs, opt-ins and erasures: the states, the processor against a real Feast SQLite
store, and the compacted privacy topic on the real broker."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from feature_repo.store import apply_repo
from infra.broker import EmbeddedBroker, ensure_topics
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.events import Event, PrivacyAction, PrivacyRequest, decode_message, encode_events
from streams.messages import RawMessage
from streams.privacy import (
    PrivacyLog,
    PrivacyRegistry,
    PrivacyState,
    encode_state,
    kept_events,
    wait_applied,
)
from streams.processor import ProfileProcessor
from streams.sink import FeastProfileStore
from streams.state import ProfileState

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def view(user: str, n: int, item: str = "1") -> Event:
    return Event(
        event_id=f"{user}-{n}",
        user_id=user,
        type="view",  # type: ignore[arg-type]
        item_id=item,
        ts=datetime.fromtimestamp(NOW - 1000 + n, UTC),
    )


def request(user: str, action: str, n: int = 0) -> PrivacyRequest:
    return PrivacyRequest(
        event_id=f"{user}-{action}-{n}",
        user_id=user,
        type=action,  # type: ignore[arg-type]
        ts=datetime.fromtimestamp(NOW - 500 + n, UTC),
    )


def message(partition: int, offset: int, *records: Event | PrivacyRequest) -> RawMessage:
    return RawMessage(partition, offset, encode_events(records), NOW)


@pytest.fixture
def store(home: Path) -> FeastProfileStore:
    return FeastProfileStore(apply_repo(Settings(home=home)))


def processor(
    store: FeastProfileStore, catalog: Catalog, states: list[PrivacyState] = ()
) -> ProfileProcessor:
    """A fresh worker whose privacy states are restored from ``states`` (the topic)."""
    registry = PrivacyRegistry(lambda parts: [s for s in states if s.partition in parts])
    return ProfileProcessor(ProfileState(store, privacy=registry), catalog, clock=lambda: NOW)


def test_states_follow_the_requests_and_withhold_by_offset() -> None:
    state = PrivacyState.initial("u", 2)
    assert not state.withholds(2, 10)
    out = state.after(request("u", "opt_out"), 2, 10)
    assert out.opted_out and out.wiped_through == 10
    assert out.withholds(2, 11)  # opted out: everything
    back = out.after(request("u", "opt_in", 1), 2, 20)
    assert not back.opted_out and back.wiped_through == 10
    assert back.withholds(2, 10) and not back.withholds(2, 21)  # only what was wiped
    erased = back.after(request("u", "erase", 2), 2, 30)
    assert not erased.opted_out and erased.wiped_through == 30
    assert erased.withholds(2, 29) and not erased.withholds(2, 31)
    assert erased.withholds_at(erased.requested_at) and not erased.withholds_at(NOW + 1)


def test_the_registry_withholds_records_of_other_topics_by_time() -> None:
    """Impressions carry no offset of the events topic: a user's are withheld while opted
    out and, after an erasure or an opt-out, up to its time, whichever topic is read first."""
    registry = PrivacyRegistry()
    assert not registry.withholds_at("u", NOW)  # nothing known: kept
    registry.apply(request("u", "opt_out"), 2, 10)
    shown_before, shown_after = NOW - 600, NOW
    assert registry.withholds_at("u", shown_before) and registry.withholds_at("u", shown_after)
    registry.apply(request("u", "opt_in", 1), 2, 20)
    assert registry.withholds_at("u", shown_before)  # wiped by the opt-out
    assert not registry.withholds_at("u", shown_after)  # shown after the user came back
    assert not registry.withholds_at("v", shown_before)  # another user


def test_requests_travel_in_order_among_events_and_are_validated() -> None:
    body = json.dumps(
        [
            view("u", 1).to_wire(),
            {"event_id": "x", "user_id": "u", "type": "opt_out", "ts": "2026-01-01T00:00:00"},
            view("u", 2).to_wire(),
            {"event_id": "y", "type": "erase", "ts": "2026-01-01T00:00:00"},  # no user
        ]
    ).encode()
    out = decode_message(body, now=NOW)
    assert [type(r).__name__ for r in out.records] == ["Event", "PrivacyRequest", "Event"]
    assert out.records[1].type is PrivacyAction.OPT_OUT  # type: ignore[union-attr]
    assert [d.reason.split(":")[0] for d in out.dead] == ["schema"]
    assert [e.event_id for e in out.events] == ["u-1", "u-2"]


def test_opting_out_leaves_a_tombstone_and_withholds_later_events(
    store: FeastProfileStore, catalog: Catalog
) -> None:
    proc = processor(store, catalog)
    first = proc.process([message(0, 0, view("u", 1), view("u", 2), view("v", 1))])
    assert first.applied == 3
    result = proc.process(
        [
            message(0, 1, view("u", 3), request("u", "opt_out"), view("u", 4)),
            message(0, 2, view("u", 5)),
        ]
    )
    assert result.withheld == 2
    assert [(s.user_id, s.opted_out, s.wiped_through) for s in result.privacy] == [("u", True, 1)]
    stored = store.read_profiles(["u", "v"])
    assert stored["u"].opted_out and stored["u"].event_count == 0  # nothing but the flag
    assert stored["u"].recent["viewed"] == {} and stored["u"].interest_sum is None
    assert stored["v"].event_count == 1  # others are untouched

    back = proc.process([message(0, 3, request("u", "opt_in", 1)), message(0, 4, view("u", 6))])
    assert back.applied == 1
    fresh = store.read_profiles(["u"])["u"]
    assert not fresh.opted_out and fresh.totals["view"] == 1  # a fresh start, no old data


def test_an_erased_profile_is_deleted_and_a_restart_does_not_bring_it_back(
    home: Path, store: FeastProfileStore, catalog: Catalog
) -> None:
    batch = [
        message(1, 0, view("u", 1), view("w", 1)),
        message(1, 1, view("u", 2)),
        message(1, 2, request("u", "erase")),
        message(1, 3, view("u", 3)),  # the user is back after the erasure
    ]
    result = processor(store, catalog).process(batch[:3])
    published = result.privacy
    assert [(s.user_id, s.wiped_through, s.opted_out) for s in published] == [("u", 2, False)]
    assert store.read_profiles(["u"])["u"].event_count == 0
    with sqlite3.connect(home / "online.db") as db:  # the rows are gone, not just emptied
        table = f"{store.store.project}_user_profile"
        keys = {row[0] for row in db.execute(f'SELECT entity_key FROM "{table}"')}
    assert len(keys) == 1  # only w's

    # a crash before the checkpoint: a new worker restores the state from the topic and
    # gets everything again; the erased messages stay erased, later ones count
    store.write_checkpoints({1: -1})
    again = processor(store, catalog, published).process(batch)
    assert (again.withheld, again.applied, again.redelivered) == (2, 1, 1)  # w's is stored
    profile = store.read_profiles(["u"])["u"]
    assert profile.totals["view"] == 1 and profile.recent["viewed"].keys_newest_first()[0] == "1"


def test_an_opted_out_user_stays_out_when_the_registry_is_lost(
    store: FeastProfileStore, catalog: Catalog
) -> None:
    """The tombstone in the store is enough on its own (a lost privacy record)."""
    processor(store, catalog).process([message(0, 0, request("u", "opt_out"))])
    result = processor(store, catalog).process([message(0, 1, view("u", 1))])
    assert (result.withheld, result.applied) == (1, 0)


def test_readers_leave_out_what_a_later_request_wiped() -> None:
    """A backtest starts from the state now: an erasure after the range still wipes."""
    erased_later = PrivacyState.initial("u", 0).after(request("u", "erase"), 0, 9)
    registry = PrivacyRegistry(lambda parts: [erased_later])
    registry.ensure_partitions([0])
    kept = [
        e.event_id
        for offset, records in [(3, [view("u", 1), view("v", 1)]), (10, [view("u", 2)])]
        for e in kept_events(registry, 0, offset, records)
    ]
    assert kept == ["v-1", "u-2"]
    # within the range: an opt-out withholds what follows, an opt-in lets it in again
    registry = PrivacyRegistry()
    records = [view("x", 1), request("x", "opt_out"), view("x", 2)]
    assert [e.event_id for e in kept_events(registry, 0, 20, records)] == ["x-1"]
    assert [e.event_id for e in kept_events(registry, 0, 21, [view("x", 3)])] == []
    kept_events_after = kept_events(registry, 0, 22, [request("x", "opt_in"), view("x", 4)])
    assert [e.event_id for e in kept_events_after] == ["x-4"]


def test_the_privacy_topic_keeps_the_latest_state_per_user(broker: EmbeddedBroker) -> None:
    topic = "privacy-test-latest"
    ensure_topics(broker.bootstrap, {topic: 2}, compacted={topic})
    log = PrivacyLog(broker.bootstrap, topic)
    assert log.read() == {}
    assert PrivacyLog(broker.bootstrap, "no-such-topic").read() == {}
    out = PrivacyState.initial("u", 1).after(request("u", "opt_out"), 1, 5)
    back = out.after(request("u", "opt_in", 1), 1, 8)
    other = PrivacyState.initial("v", 0).after(request("v", "erase"), 0, 3)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for state in (out, other, back):
        key, value = encode_state(state)
        producer.produce(topic, key=key, value=value, partition=state.partition)
    producer.flush(10)
    assert log.read() == {"u": back, "v": other}
    assert log.read([0]) == {"v": other}
    assert wait_applied(log, "u", 1, 8, 5) == back
    assert wait_applied(log, "u", 1, 9, 0.5) is None
