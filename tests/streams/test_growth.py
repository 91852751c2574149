"""Growing the topics: the partition count serving follows (read in the background, never
waited for), the fences and gates that keep a moved user's events in order, and the
refusal of a growth that would move users between old partitions."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_repo.namespaces import ReplayRange
from feature_repo.store import apply_repo
from streamrank.catalog import Catalog
from streamrank.failures import UsageError
from streamrank.settings import Settings
from streams.events import Event, encode_events
from streams.growth import Lineage, PartitionCount, grow_topics, partition_counts, read_lineage
from streams.messages import RawMessage
from streams.privacy import PrivacyRegistry, PrivacyState
from streams.processor import ProfileProcessor
from streams.producer import partition_for
from streams.profile import UserProfile, apply_event
from streams.replay import partition_families
from streams.sink import FeastProfileStore, PartitionCounts
from streams.state import ProfileState
from tests.polling import until


def test_the_count_is_read_in_the_background_at_once_then_after_the_refresh_interval(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, events_partitions=4, topic_metadata_refresh_s=0.5)
    counts = iter([8, 16])
    reading = threading.Event()
    reads: list[float] = []

    def read() -> int:
        reads.append(time.monotonic())
        reading.wait(5)  # a slow broker: callers are not held
        return next(counts)

    follower = PartitionCount(settings, read)
    assert follower() == 4  # the setting's count while the first read runs
    time.sleep(0.05)
    assert follower() == 4 and len(reads) == 1  # started at once, one at a time
    reading.set()

    until(lambda: follower() == 8, 5, "the first read's count was not taken", poll_s=0.01)
    until(lambda: follower() == 16, 5, "the count was not read again", poll_s=0.01)
    assert reads[1] - reads[0] >= 0.5  # the second read waited for the refresh interval


def test_a_failed_read_keeps_the_last_count(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, events_partitions=4, topic_metadata_refresh_s=0.05)

    def read() -> int:
        raise ConnectionError("broker down")

    follower = PartitionCount(settings, read)
    time.sleep(0.06)
    assert follower() == 4
    time.sleep(0.1)
    assert follower() == 4


# --- the fence and the gate: two workers on one store, as the live group runs them --------

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def moved_and_staying(parent: int, child: int) -> tuple[str, str]:
    """A user who moves from ``parent`` (of 4) to ``child`` (of 8), and one who stays."""
    moved = next(f"m{i}" for i in range(1000) if partition_for(f"m{i}", 8) == child)
    stays = next(f"s{i}" for i in range(1000) if partition_for(f"s{i}", 8) == parent)
    assert partition_for(moved, 4) == parent == partition_for(stays, 4)
    return moved, stays


def views(user: str, n: int, start: int = 0) -> list[Event]:
    return [
        Event(
            event_id=f"{user}-{start + i}",
            user_id=user,
            type="view",  # type: ignore[arg-type]
            item_id=str(1 + (start + i) % 7),  # distinct recent items: their order shows
            ts=datetime.fromtimestamp(NOW - 1000 + start + i, UTC),
        )
        for i in range(n)
    ]


def worker(store: FeastProfileStore, catalog: Catalog, live: bool = True) -> ProfileProcessor:
    return ProfileProcessor(ProfileState(store), catalog, clock=lambda: NOW, live=live)


@pytest.fixture
def grown_store(home: Path) -> FeastProfileStore:
    """A store whose topic grew from 4 to 8: partition 5's row names 1 as its parent."""
    store = FeastProfileStore(apply_repo(Settings(home=home)))
    store.write_checkpoints({5: -1}, {5: PartitionCounts(partitions=8, grown_from=1, grown_at=8)})
    return store


def test_a_new_partition_waits_for_its_parents_fence_then_folds_in_order(
    grown_store: FeastProfileStore, catalog: Catalog
) -> None:
    moved, _ = moved_and_staying(1, 5)
    old_owner, new_owner = worker(grown_store, catalog), worker(grown_store, catalog)
    assert old_owner.process([RawMessage(1, 0, encode_events(views(moved, 3)))]).applied == 3
    later = new_owner.process([RawMessage(5, 0, encode_events(views(moved, 2, start=3)))])
    assert later.applied == 0  # held: the old partition may still hold the user's events
    assert new_owner.next_offset(5) == 1  # taken, so not sought back as stalled
    assert new_owner.process([]).applied == 0  # still held: no fence folded yet

    fence = old_owner.process([RawMessage(1, 1, b"", fence=8)])
    assert (fence.fences, fence.dead_letters) == (1, [])
    assert grown_store.read_partition_counts([1])[1].partitions == 8  # with the checkpoint
    assert new_owner.process([]).applied == 2  # released
    truth = UserProfile(moved)
    for event in views(moved, 5):
        apply_event(truth, event, catalog)
    stored = grown_store.read_profiles([moved])[moved]
    assert stored.recent["viewed"].keys_newest_first() == truth.recent["viewed"].keys_newest_first()
    assert stored.totals == truth.totals
    assert stored.applied_offsets == {1: 0, 5: 0}


def test_past_its_fence_a_moved_users_event_is_forwarded_and_a_staying_users_folded(
    grown_store: FeastProfileStore, catalog: Catalog
) -> None:
    moved, stays = moved_and_staying(1, 5)
    owner = worker(grown_store, catalog)
    late = encode_events(views(moved, 1, start=9) + views(stays, 2))
    result = owner.process([RawMessage(1, 0, b"", fence=8), RawMessage(1, 1, late)])
    assert result.applied == 2
    assert {p: [e.event_id for e in r] for p, r in result.forwards.items()} == {5: [f"{moved}-9"]}
    assert grown_store.read_profiles([moved])[moved].event_count == 0  # not folded here
    owner.flush()
    assert grown_store.read_partition_counts([1])[1].events == 2  # counted where it is folded

    replay = worker(grown_store, catalog, live=False)  # one reader: folded in place
    replayed = replay.process([RawMessage(1, 0, b"", fence=8), RawMessage(1, 1, late)])
    assert (replayed.forwards, replayed.skipped_messages) == ({}, 2)  # the live one wrote them


def test_a_growth_that_is_not_a_multiple_of_the_count_is_refused_before_any_change(
    settings: Settings,
) -> None:
    with pytest.raises(UsageError, match="multiple of 4"):
        grow_topics(settings, 6)
    assert set(partition_counts(settings).values()) == {4}


# --- privacy states and replays follow the moved users ----------------------------------------


def opted_out(user: str, partition: int, offset: int, at: float) -> PrivacyState:
    return PrivacyState(
        user_id=user,
        partition=partition,
        opted_out=True,
        wiped_through=offset,
        offset=offset,
        requested_at=at,
    )


def test_a_new_partitions_owner_restores_its_moved_users_states_from_its_parent(
    grown_store: FeastProfileStore, catalog: Catalog
) -> None:
    """An opt-out published on partition 1 before the growth: the user's later events land
    on 5, and their profile row (the tombstone) has long expired from the store. The owner
    of 5 still withholds them; a user who stayed on 1 is not 5's to know."""
    moved, stays = moved_and_staying(1, 5)
    topic = [opted_out(moved, 1, 3, NOW - 90 * 86400), opted_out(stays, 1, 4, NOW - 86400)]
    read: list[list[int]] = []

    def load(partitions: list[int]) -> list[PrivacyState]:
        read.append(partitions)
        return [s for s in topic if s.partition in partitions]

    registry = PrivacyRegistry(load, lambda parts: read_lineage(grown_store, parts))
    owner = ProfileProcessor(
        ProfileState(grown_store, privacy=registry), catalog, clock=lambda: NOW, live=True
    )
    grown_store.write_checkpoints({1: 0}, {1: PartitionCounts(offset=0, partitions=8)})  # fenced
    result = owner.process([RawMessage(5, 0, encode_events(views(moved, 2)))])
    assert read == [[1, 5]]  # its own partition and its parent, in one read
    assert (result.applied, result.withheld) == (0, 2)
    assert grown_store.read_profiles([moved])[moved].event_count == 0
    assert registry.opted_out(moved) and not registry.opted_out(stays)


def test_the_newest_state_wins_and_a_moved_users_state_outlives_its_old_partition() -> None:
    moved, _ = moved_and_staying(1, 5)
    came_back = PrivacyState(user_id=moved, partition=5, offset=0, requested_at=NOW)
    topic = [opted_out(moved, 1, 3, NOW - 3600), came_back]
    registry = PrivacyRegistry(
        lambda parts: [s for s in topic if s.partition in parts],
        lambda parts: {5: Lineage((1,), 8)} if 5 in parts else {},
    )
    registry.ensure_partitions([1, 5])
    assert registry.states[moved] == came_back  # opted in again after the move
    registry.forget([1])
    assert registry.states[moved] == came_back  # 5 is still read here
    registry.forget([5])
    assert moved not in registry.states

    old_only = PrivacyRegistry(
        lambda parts: [s for s in topic[:1] if s.partition in parts],
        lambda parts: {5: Lineage((1,), 8)} if 5 in parts else {},
    )
    old_only.ensure_partitions([1, 5])
    old_only.forget([1])
    assert old_only.opted_out(moved)  # a state of partition 1 that 5, still read here, needs
    old_only.forget([5])
    assert not old_only.opted_out(moved)


def test_a_replay_folds_a_grown_partition_in_the_process_of_its_ancestors(
    grown_store: FeastProfileStore, home: Path
) -> None:
    """Grown 4 -> 8 -> 16: 13 was split from 5, 5 from 1. A replay task holds a family,
    parents first; the largest family goes first."""
    grown_store.write_checkpoints(
        {13: -1}, {13: PartitionCounts(partitions=16, grown_from=5, grown_at=16)}
    )
    assert read_lineage(grown_store, [1, 5, 13]) == {5: Lineage((1,), 8), 13: Lineage((5, 1), 16)}
    parts = (1, 2, 5, 13)
    replayed = ReplayRange(
        topic="events",
        start_time=None,
        end_time=NOW,
        first=dict.fromkeys(parts, 0),
        start=dict.fromkeys(parts, 0),
        stop={1: 10, 2: 20, 5: 10, 13: 5},
    )
    families = partition_families(Settings(home=home), replayed)
    assert families == [[(1, 0, 10), (5, 0, 10), (13, 0, 5)], [(2, 0, 20)]]
