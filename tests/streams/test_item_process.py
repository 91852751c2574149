"""The item half in its own process, against real SQLite stores: the same rows as in one
process, writes on its own clock, and it never outlives (or silently loses) its worker."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from feature_repo.redis_store import ReplicationLost
from feature_repo.store import apply_repo
from infra.redis import RedisClusterServers
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.events import Event, encode_events
from streams.item_process import ItemProcess, ItemProcessDied
from streams.messages import RawMessage
from streams.processor import ProfileProcessor
from streams.producer import partition_for
from streams.sink import FeastProfileStore, open_profile_store
from streams.state import ProfileState

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
PARTITIONS = 3


def stream(catalog: Catalog, n: int = 3000, users: int = 60) -> list[RawMessage]:
    """Messages of 20 events each, per partition in offset order, users keyed as live."""
    rng = random.Random(7)
    events = [
        Event(
            event_id=f"e{i}",
            user_id=f"u{rng.randrange(users)}",
            type=rng.choice(["view", "view", "click", "add_to_cart", "purchase"]),  # type: ignore[arg-type]
            item_id=rng.choice(catalog.ids[:150]),
            ts=datetime.fromtimestamp(NOW - n + i, UTC),
        )
        for i in range(n)
    ]
    by_partition: dict[int, list[Event]] = {}
    for event in events:
        by_partition.setdefault(partition_for(event.user_id, PARTITIONS), []).append(event)
    messages = []
    for part, evs in by_partition.items():
        for offset, start in enumerate(range(0, len(evs), 20)):
            messages.append(RawMessage(part, offset, encode_events(evs[start : start + 20])))
    return sorted(messages, key=lambda m: (m.offset, m.partition))


def store_at(base: Path, catalog_home: Path, name: str) -> Settings:
    from streamrank.catalog import copy_catalog

    home = base / name
    copy_catalog(catalog_home, home)
    settings = Settings(home=home)
    apply_repo(settings)
    return settings


@pytest.fixture
def item_process(tmp_path: Path, catalog_home: Path) -> Iterator[tuple[Settings, ItemProcess]]:
    settings = store_at(tmp_path, catalog_home, "apart")
    items = ItemProcess(partial(open_profile_store, settings), 50_000, flush_s=3600.0)
    yield settings, items
    items.close()


def run(store: FeastProfileStore, catalog: Catalog, messages: list[RawMessage], **kw: object):
    state = ProfileState(store, **kw)  # type: ignore[arg-type]
    processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
    for start in range(0, len(messages), 15):
        processor.process(messages[start : start + 15])
    state.flush(force_items=True)
    return state


def snapshot(store: FeastProfileStore, catalog: Catalog) -> tuple[object, ...]:
    parts = list(range(PARTITIONS))
    keys = [(p, i) for p in parts for i in catalog.ids[:150]]
    covisits = {k: r.to_row() for k, r in store.read_covisits(keys).items() if r.as_of}
    popular = {p: r.to_row() for p, r in store.read_popularity(parts).items()}
    users = [f"u{i}" for i in range(60)]
    profiles = {u: p.to_row() for u, p in store.read_profiles(users).items()}
    return store.read_checkpoints(parts), popular, covisits, profiles


def test_the_item_process_writes_what_one_process_writes(
    tmp_path: Path,
    catalog_home: Path,
    catalog: Catalog,
    item_process: tuple[Settings, ItemProcess],
) -> None:
    messages = stream(catalog)
    inline = open_profile_store(store_at(tmp_path, catalog_home, "inline"))
    run(inline, catalog, messages, item_flush_s=0.5)

    settings, items = item_process
    apart = open_profile_store(settings)
    state = run(apart, catalog, messages, items=items)
    assert dict(items.written()) == inline.read_checkpoints(list(range(PARTITIONS)))
    want, got = snapshot(inline, catalog), snapshot(apart, catalog)
    assert got[0] == want[0]  # checkpoints
    assert got[1] == want[1]  # popularity, exactly
    assert got[2] == want[2]  # every co-visitation row, exactly
    assert len(got[2]) > 100
    for user, row in want[3].items():  # profiles; outboxes differ with the write timing
        assert {k: v for k, v in got[3][user].items() if k != "outbox"} == {
            k: v for k, v in row.items() if k != "outbox"
        }, user
    assert state.items is items


def test_it_writes_on_its_own_clock_and_the_outboxes_follow(
    tmp_path: Path, catalog_home: Path, catalog: Catalog
) -> None:
    settings = store_at(tmp_path, catalog_home, "clock")
    store = open_profile_store(settings)
    items = ItemProcess(partial(open_profile_store, settings), 50_000, flush_s=0.3)
    try:
        state = ProfileState(store, items=items)
        processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
        messages = stream(catalog, n=600)
        processor.process(messages)
        last = {m.partition: m.offset for m in messages}
        deadline = time.monotonic() + 30
        while store.read_checkpoints(list(last)) != last:  # no flush asked for
            assert time.monotonic() < deadline, store.read_checkpoints(list(last))
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while dict(items.written()) != last:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        user = next(iter(state.profiles))
        assert store.read_profiles([user])[user].outbox  # written before the item rows
        state.mark_user(user)
        state.flush()
        assert store.read_profiles([user])[user].outbox == []  # covered by the checkpoint now
    finally:
        items.close()
    assert not items._process.is_alive()


def test_forgotten_partitions_are_never_written(
    item_process: tuple[Settings, ItemProcess], catalog: Catalog
) -> None:
    settings, items = item_process
    store = open_profile_store(settings)
    state = ProfileState(store, items=items)
    processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
    messages = stream(catalog, n=600)
    processor.process(messages[:3])
    state.flush(force_items=True)
    first = store.read_checkpoints(list(range(PARTITIONS)))
    processor.process(messages[3:])  # the rest is not due for an hour
    state.forget([0])  # a rebalance took partition 0
    state.flush(force_items=True)
    last = {m.partition: m.offset for m in messages}
    checkpoints = store.read_checkpoints(list(range(PARTITIONS)))
    assert checkpoints == {0: first[0], 1: last[1], 2: last[2]}
    assert store.read_popularity([0])[0].applied_offset == first[0]
    assert 0 not in items.written()


def test_a_dead_item_process_stops_the_worker_instead_of_losing_effects(
    item_process: tuple[Settings, ItemProcess], catalog: Catalog
) -> None:
    settings, items = item_process
    state = ProfileState(open_profile_store(settings), items=items)
    processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
    messages = stream(catalog, n=600)
    processor.process(messages[:5])
    assert items.pid is not None
    os.kill(items.pid, signal.SIGKILL)
    items._process.join(10)
    with pytest.raises(ItemProcessDied):
        processor.process(messages[5:])
        state.flush(force_items=True)


def test_a_redis_failover_since_the_last_checkpoint_rewinds_the_worker(
    tmp_path: Path, catalog_home: Path, catalog: Catalog, redis_cluster: RedisClusterServers
) -> None:
    """The replica a failover promotes may lack rows the old master acknowledged: the item
    process writes no checkpoint over them and stops the worker, which restarts from the
    checkpoints (``streams/app.py``); a new item process checkpoints again."""
    from streamrank.catalog import copy_catalog

    home = tmp_path / "redis"
    copy_catalog(catalog_home, home)
    settings = Settings(home=home, online_store="redis_cluster", redis_url=redis_cluster.url)
    apply_repo(settings)
    store = open_profile_store(settings)
    messages = stream(catalog, n=600)
    items = ItemProcess(partial(open_profile_store, settings), 50_000, flush_s=0.2)
    try:
        state = ProfileState(store, items=items)
        processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
        processor.process(messages[:6])
        state.flush(force_items=True)
        first = store.read_checkpoints(list(range(PARTITIONS)))
        assert min(first.values()) >= 0
        masters = redis_cluster.masters()
        replica = next(n for n in redis_cluster.nodes if n not in masters and n.process)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        redis_cluster.wait_healthy()
        with pytest.raises(ReplicationLost):
            processor.process(messages[6:])
            # the stream then quiet: the worker's flush timer hears the child's rewind
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state.flush_items_if_due()
                time.sleep(0.1)
        assert store.read_checkpoints(list(range(PARTITIONS))) == first
    finally:
        items.close()
    restarted = ItemProcess(partial(open_profile_store, settings), 50_000, flush_s=3600.0)
    try:
        state = ProfileState(open_profile_store(settings), items=restarted)
        processor = ProfileProcessor(state, catalog, clock=lambda: NOW + 60)
        processor.process(messages)
        state.flush(force_items=True)
        last = {m.partition: m.offset for m in messages}
        assert store.read_checkpoints(list(range(PARTITIONS))) == last
    finally:
        restarted.close()


def test_the_item_process_dies_with_its_worker(tmp_path: Path, catalog_home: Path) -> None:
    """SIGKILL the worker: the item process must not live on and write behind the back of
    the partitions' next owner."""
    settings = store_at(tmp_path, catalog_home, "orphan")
    script = textwrap.dedent(
        f"""
        import threading, time
        from functools import partial
        from streamrank.settings import Settings
        from streams.item_process import ItemProcess
        from streams.sink import open_profile_store

        def start():  # as the worker does: on its long-lived processing thread
            items = ItemProcess(partial(open_profile_store, Settings(home={str(settings.home)!r})),
                                1000, 2.0)
            print(items.pid, flush=True)
            time.sleep(600)

        threading.Thread(target=start, daemon=True).start()
        time.sleep(600)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        child = int(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the item process outlived its worker"
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if sys.platform == "linux" else ""
    return status != "Z"  # a zombie is dead, waiting for its (dead) parent's reaper
