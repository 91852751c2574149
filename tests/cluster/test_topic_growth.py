"""Growing the events topic from 4 to 8 partitions while a producer sends and a worker
folds: the producer follows the new count, the worker takes the new partitions once their
parents pass their fences, and every profile equals an offline fold of the events in order,
nothing lost or counted twice. On noida-db, which can add partitions (Tansu cannot)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feature_repo.namespaces import Namespace
from feature_repo.store import apply_repo, open_store
from infra.broker import ensure_topics
from infra.processes import stop_process
from streamrank.catalog import Catalog
from streamrank.demo import start_worker, worker_log
from streamrank.settings import Settings
from streams.events import Event
from streams.growth import grow_topics, partition_counts
from streams.impressions import Impression
from streams.producer import EventProducer
from streams.pseudonyms import RAW_IDS
from streams.replay import plan, replay
from streams.sink import FeastProfileStore
from tests.cluster.growable_broker import GrowableBroker
from tests.cluster.system import RESTARTED, SUPERVISOR, child_env
from tests.conftest import isolated_settings, make_home
from tests.integration.checks import (
    assert_items_equal,
    assert_profiles_equal,
    item_truth,
    offline_truth,
)
from tests.integration.experiment_checks import live_join_reaches, offline_report
from tests.integration.streaming import PacedSender, make_events, send, wait
from tests.integration.test_worker import send_keyed


@contextmanager
def growable_system(tmp_path: Path, catalog_home: Path) -> Iterator[Settings]:
    """noida-db with the topics at 4 partitions, and a store, for one test."""
    with GrowableBroker(tmp_path / "noida", tmp_path / "noida.log") as broker:
        settings = isolated_settings(
            make_home(tmp_path / "home", catalog_home),
            broker.bootstrap,
            topic_metadata_refresh_s=3.0,  # the worker's; the producers re-read every 1 s
        )
        compacted = settings.compacted_topics()
        ensure_topics(settings.bootstrap(), settings.topics(), compacted=compacted)
        apply_repo(settings)
        yield settings


def check_profiles(settings: Settings, events: list[Event], catalog: Catalog) -> None:
    """Every profile equals an offline fold of ``events`` in order; every event was counted
    once; every old partition's checkpoint is past its fence."""
    store = FeastProfileStore(open_store(settings))
    truth = offline_truth(events, catalog)
    assert_profiles_equal(store.read_profiles(sorted(truth)), truth)
    counted = store.read_partition_counts(list(range(8)))
    assert sum(c.events for c in counted.values()) == len(events)
    assert {p: c.partitions for p, c in counted.items()} == dict.fromkeys(range(8), 8)


def test_growing_the_events_topic_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, catalog_home: Path, catalog: Catalog
) -> None:
    with growable_system(tmp_path, catalog_home) as settings:
        worker = start_worker(settings)
        try:
            events = make_events(catalog, 3000, 300)
            # a burst from another producer, which starts after the growth and so sends to
            # all 8 partitions at once, while the worker's group is still on 4
            burst = [
                e.model_copy(update={"user_id": f"b{e.user_id}"})
                for e in make_events(catalog, 1000, 200, seed=1)
            ]
            with EventProducer(
                settings.bootstrap(),
                settings.events_topic,
                user_ids=RAW_IDS,
                partition_refresh_s=1.0,
            ) as producer:

                def send_chunk(chunk: list[Event]) -> dict[int, int]:
                    producer.send_many(chunk)
                    producer.flush()
                    return dict(producer.delivered_offsets)

                sender = PacedSender(send_chunk, events, chunk=200, pause_s=0.4)
                deadline = time.monotonic() + 60
                while sum(o + 1 for o in sender.delivered.values()) < 8:  # 2 chunks or more
                    assert time.monotonic() < deadline, "the first chunks were not sent"
                    time.sleep(0.1)
                assert grow_topics(settings, 8) == {
                    settings.events_topic: 4,
                    settings.impressions_topic: 4,
                    settings.privacy_topic: 4,
                }
                assert sender.sending  # mid-stream: the last chunk is held back until now
                later = send(settings, burst)
                deadline = time.monotonic() + 30
                while producer.partitions != 8:
                    assert time.monotonic() < deadline, "the producer kept the old count"
                    time.sleep(0.2)
                delivered = sender.finish()
            assert set(delivered) == set(range(8))  # later events went to new partitions too
            assert set(later) == set(range(8))
            delivered = {p: max(delivered[p], later[p]) for p in range(8)}
            assert set(partition_counts(settings).values()) == {8}
            wait(settings, delivered, timeout=120)
            check_profiles(settings, events + burst, catalog)
        finally:
            stop_process(worker, "faust worker", timeout=30)
            print(worker_log(settings).read_text(errors="replace")[-4000:])  # shown on failure


def test_a_worker_that_starts_after_a_growth_folds_each_users_events_in_order(
    tmp_path: Path, catalog_home: Path, catalog: Catalog
) -> None:
    """The worker finds a moved user's older events on the old partition and newer ones on
    the new partition at once: without the fence it would fold them in whichever order
    the partitions are fetched. A replay of the grown topic in two processes then folds the
    same profiles."""
    with growable_system(tmp_path, catalog_home) as settings:
        events = make_events(catalog, 2000, 100)
        before = send(settings, events[:1000])
        grow_topics(settings, 8, settle_s=0.5)  # no producer is running
        delivered = send(settings, events[1000:], before)
        assert set(delivered) == set(range(8))
        worker = start_worker(settings)
        try:
            fenced = {p: o + 1 for p, o in before.items()}  # each fence is one past the events
            wait(settings, {p: max(delivered[p], fenced.get(p, -1)) for p in range(8)}, 120)
            check_profiles(settings, events, catalog)
            # co-visitation links come from each user's profile before each event: in order
            partitions = list(range(8))
            store = FeastProfileStore(open_store(settings))
            assert_items_equal(store, partitions, item_truth(events, catalog, partitions))
            # a replay in two processes: each moved user's partitions are folded by one
            namespace = Namespace(settings, "grown")
            replay(settings, namespace, plan(settings, None), workers=2, progress=False)
            replayed = FeastProfileStore(namespace.open_store())
            truth = offline_truth(events, catalog)
            assert_profiles_equal(replayed.read_profiles(sorted(truth)), truth)
        finally:
            stop_process(worker, "faust worker", timeout=30)
            print(worker_log(settings).read_text(errors="replace")[-4000:])  # shown on failure


def show_and_click(settings: Settings, users: list[str], catalog: Catalog) -> None:
    """A page for each user (an impression, as a replica publishes it), and a click on its
    first item by every other user."""
    shown = datetime.now(UTC) - timedelta(seconds=2)
    pages = [
        Impression(
            request_id=f"page-{user}",
            user_id=user,
            arm="main",
            model_version="test",
            strategy="personalized",
            items=catalog.ids[i % 50 : i % 50 + 2],
            propensities=[1.0, 1.0],
            ts=shown,
        )
        for i, user in enumerate(users)
    ]
    send_keyed(
        settings,
        [(p.user_id.encode(), p.model_dump_json().encode()) for p in pages],
        settings.impressions_topic,
    )
    clicks = [
        Event(
            event_id=f"click-{p.user_id}",
            user_id=p.user_id,
            type="click",  # type: ignore[arg-type]
            item_id=p.items[0],
            ts=shown + timedelta(seconds=1),
        )
        for p in pages[::2]
    ]
    send(settings, clicks)


def test_the_experiment_join_starts_again_at_the_grown_count(
    tmp_path: Path, catalog_home: Path, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its Faust table cannot grow: the join exits (70), and started again by its
    supervisor it joins under the new count's group, built from the topics, and counts
    what the offline report counts."""
    with growable_system(tmp_path, catalog_home) as settings:
        log = worker_log(settings, "experiment-worker")
        log.parent.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "streamrank", "experiment-worker"]
        with open(log, "ab") as out:
            join = subprocess.Popen(
                ["bash", "-c", SUPERVISOR, "supervisor", *command],
                env=child_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        try:
            show_and_click(settings, [f"before{i}" for i in range(40)], catalog)
            before = offline_report(settings, capsys)["arms"]
            assert before["main"]["clicked"] == 20
            live_join_reaches(settings, before, 120)
            grow_topics(settings, 8, settle_s=0.5)
            show_and_click(settings, [f"after{i}" for i in range(40)], catalog)
            after = offline_report(settings, capsys)["arms"]
            assert after["main"]["clicked"] == 40
            live_join_reaches(settings, after, 120)
            text = log.read_text(errors="replace")
            assert "grew from 4 to 8 partitions" in text and RESTARTED in text, text[-3000:]
        finally:
            stop_process(join, "experiment join", timeout=30)
            print(log.read_text(errors="replace")[-4000:])  # shown on failure
