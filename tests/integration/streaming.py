"""Driving the event stream in a test: events like a shop's, sent for real, waited for
until every effect is written, and checked against an offline fold of the same events.
Shared by the worker tests on one host and the multi-host test bed."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from feature_repo.store import open_store
from infra.kafka_admin import wait_until_consumed
from infra.probes import wait_until_checkpointed
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.events import Event
from streams.producer import EventProducer
from streams.pseudonyms import RAW_IDS
from streams.sink import FeastProfileStore
from tests.integration.checks import (
    assert_items_equal,
    assert_profiles_equal,
    item_truth,
    offline_truth,
)


def make_events(catalog: Catalog, n: int, users: int, seed: int = 0) -> list[Event]:
    """Real item ids, every event type, some users far more active than others."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(seconds=n + 3600)
    types = ("view", "click", "add_to_cart", "purchase", "search")
    out = []
    for i in range(n):
        kind = rng.choices(types, weights=(50, 25, 12, 8, 5))[0]
        user = f"u{int(rng.paretovariate(1.2)) % users}"
        fields: dict[str, object] = {"event_id": f"e{seed}-{i}", "user_id": user, "type": kind}
        fields["ts"] = start + timedelta(seconds=i + rng.uniform(-30, 0))  # a little disorder
        if kind == "search":
            fields["query"] = rng.choice(["space", "love story", "horror", "cartoon"])
        else:
            fields["item_id"] = rng.choice(catalog.ids[:400])
        out.append(Event.model_validate(fields))
    return out


def send(
    settings: Settings, events: list[Event], delivered: dict[int, int] | None = None
) -> dict[int, int]:
    delivered = dict(delivered or {})
    with EventProducer(settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS) as producer:
        producer.send_many(events)
        producer.flush()
        for part, off in producer.delivered_offsets.items():
            delivered[part] = max(delivered.get(part, -1), off)
    return delivered


def wait(settings: Settings, delivered: dict[int, int], timeout: float = 240) -> None:
    """Consumed (offsets committed), then checkpointed (item rows written too)."""
    wait_until_consumed(
        settings.bootstrap(), settings.consumer_group, settings.events_topic, delivered, timeout
    )
    wait_until_checkpointed(FeastProfileStore(open_store(settings)), delivered, timeout=60)


class PacedSender:
    """Sends ``events`` in small chunks with a pause between them, in a thread, so that a
    test can act while the stream is still arriving; ``delivered`` grows as it goes.
    ``send_chunk`` sends a list of events and returns their last offsets per partition.

    The last chunk is held back until ``finish``: a test that acts before calling it acts
    mid-stream by construction, however slowly the machine under test starts up."""

    def __init__(
        self,
        send_chunk: Callable[[list[Event]], dict[int, int]],
        events: list[Event],
        chunk: int,
        pause_s: float,
    ):
        assert len(events) > chunk, "nothing would be left to hold back"
        self.delivered: dict[int, int] = {}
        self._release = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(send_chunk, events, chunk, pause_s), daemon=True
        )
        self._thread.start()

    def _run(
        self,
        send_chunk: Callable[[list[Event]], dict[int, int]],
        events: list[Event],
        chunk: int,
        pause_s: float,
    ) -> None:
        starts = range(0, len(events), chunk)
        for start in starts:
            if start == starts[-1]:
                self._release.wait()
            for part, offset in send_chunk(events[start : start + chunk]).items():
                self.delivered[part] = max(self.delivered.get(part, -1), offset)
            if start != starts[-1]:
                time.sleep(pause_s)

    @property
    def sending(self) -> bool:
        """Whether part of the stream is still to come (always, until ``finish``)."""
        return self._thread.is_alive()

    def finish(self) -> dict[int, int]:
        """Send the held-back chunk, wait for every delivery, return the offsets."""
        self._release.set()
        self._thread.join()
        return self.delivered


def checkpoints_moved(store: FeastProfileStore, since: dict[int, int]) -> bool:
    """Whether any partition's checkpoint is past ``since`` (partition -> checkpoint)."""
    now = store.read_checkpoints(sorted(since))
    return any(now[p] > since[p] for p in since)


def checkpointed(store: FeastProfileStore, partitions: list[int]) -> int:
    """How many messages of ``partitions`` the store's checkpoints cover (all their effects
    written)."""
    return sum(offset + 1 for offset in store.read_checkpoints(partitions).values())


def check(settings: Settings, events: list[Event], catalog: Catalog) -> None:
    """Profiles, popularity and co-visitation all equal an offline fold of ``events``."""
    truth = offline_truth(events, catalog)
    store = FeastProfileStore(open_store(settings))
    assert_profiles_equal(store.read_profiles(sorted(truth)), truth)
    partitions = list(range(settings.events_partitions))
    assert_items_equal(store, partitions, item_truth(events, catalog, partitions))
