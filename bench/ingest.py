"""Ingest benchmark: how fast events become profiles, and what bounds it.

    python -m bench.ingest [--events 200000] [--out bench/results/ingest.json]

Everything runs in one go on the same machine, so the ratios are comparable:
- ceiling: a raw confluent-kafka consumer + ``json.loads`` over the same topic;
- worker: a real Faust worker process (full profile, popularity, co-visitation, online
  writes), events/s from its first to its last applied event; with its item rows in a
  process beside it (the default, ``streams/item_process.py``) and, as the baseline, in the
  worker's own process;
- in-process: the same ``ProfileProcessor`` without Kafka, batched through the store's
  direct write path and through ``FeatureStore.push``, against a naive path that pushes
  every event on its own (one Feast call per event); and on a stream of many users with
  few events each, our one-row-per-entity SQLite store against Feast's stock layout;
- freshness: produce → visible in the online store, p50/p99 over a probe every 0.1 s, at
  a fixed 5k events/s, in both worker layouts;
- memory: the worker's RSS (with its item process) after it has seen 100k distinct users.
Streams are MovieLens 100K replayed with shifted user ids and times (never invented).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import psutil
from confluent_kafka import Consumer
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import build_definitions
from feature_repo.store import apply_repo, open_store, repo_yaml
from infra.broker import EmbeddedBroker, ensure_topics
from infra.kafka_admin import wait_until_consumed
from infra.probes import applied_events
from infra.processes import free_port, stop_process
from streamrank.catalog import Catalog, copy_catalog
from streamrank.datasets import iter_events, load_dataset
from streamrank.demo import start_worker, stream_events
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.events import Event, encode_events
from streams.messages import RawMessage
from streams.processor import ProfileProcessor
from streams.producer import EventProducer, partition_for
from streams.profile import UserProfile, apply_event
from streams.pseudonyms import RAW_IDS
from streams.sink import FeastProfileStore
from streams.state import ProfileState

RESULTS = Path(__file__).parent / "results"


def replicated(events: pd.DataFrame, copies: int, per_user: int | None = None) -> pd.DataFrame:
    """``copies`` of the stream with user ids shifted per copy, interleaved in time
    (copy k is k seconds later), optionally only each user's first ``per_user`` events."""
    base = events if per_user is None else events.groupby("user_id", sort=False).head(per_user)
    parts = []
    for k in range(copies):
        part = base.copy()
        part["user_id"] = part["user_id"] + f"-c{k}"
        part["event_id"] = part["event_id"] + f"-c{k}"
        part["ts"] = part["ts"] + k
        parts.append(part)
    return pd.concat(parts).sort_values("ts", kind="stable").reset_index(drop=True)


def recent(events: pd.DataFrame) -> pd.DataFrame:
    """Move a historical stream to end a minute ago (the worker rejects future events)."""
    return events.assign(ts=events["ts"] + (time.time() - 60 - events["ts"].max()))


def fresh_settings(
    root: Path, catalog_home: Path, bootstrap: str, tag: str, **overrides: object
) -> Settings:
    home = root / tag
    shutil.rmtree(home, ignore_errors=True)  # a new broker restarts offsets: old rows would skip
    copy_catalog(catalog_home, home)
    settings = Settings(
        home=home,
        kafka_bootstrap=bootstrap,
        events_topic=f"events-{tag}",
        dlq_topic=f"events-{tag}.dlq",
        consumer_group=f"bench-{tag}",
        worker_web_port=free_port(),
        **overrides,  # type: ignore[arg-type]
    )
    apply_repo(settings)
    ensure_topics(
        bootstrap, {settings.events_topic: settings.events_partitions, settings.dlq_topic: 1}
    )
    return settings


# --- the ceiling: a raw consumer ----------------------------------------------------------
def raw_consumer_rate(settings: Settings, expected_events: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap(),
            "group.id": f"raw-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.events_topic])
    seen = 0
    started = None
    deadline = time.monotonic() + 120
    while seen < expected_events and time.monotonic() < deadline:
        for msg in consumer.consume(5000, timeout=0.5):
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            body = json.loads(msg.value())
            seen += len(body) if isinstance(body, list) else 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed if elapsed else 0.0


# --- the real worker ------------------------------------------------------------------------
def worker_ready(settings: Settings) -> bool:
    url = f"http://127.0.0.1:{settings.worker_web_port}/healthz"
    try:
        return bool(httpx.get(url, timeout=2).json().get("ready"))
    except (httpx.HTTPError, ValueError):
        return False


def worker_rate(settings: Settings, events: pd.DataFrame) -> dict[str, float]:
    """Events already in the topic; the clock runs from the worker's agent being ready
    (catalog and store open) to its last commit, so start-up is not counted."""
    _, delivered = stream_events(settings, events)
    worker = start_worker(settings)
    try:
        while not worker_ready(settings):
            time.sleep(0.05)
        started = time.perf_counter()
        wait_until_consumed(
            settings.bootstrap(),
            settings.consumer_group,
            settings.events_topic,
            delivered,
            900,
            0.1,
        )
        elapsed = time.perf_counter() - started
        tree = psutil.Process(worker.pid)  # the worker, its item process and spawn's tracker
        own = tree.memory_info().rss / 2**20
        children = sum(p.memory_info().rss for p in tree.children(recursive=True)) / 2**20
        total = applied_events(settings.worker_web_port)
        return {
            "events": total,
            "events_per_s": total / elapsed,
            "rss_mb": own + children,
            "rss_worker_process_mb": own,
            "rss_child_processes_mb": children,
        }
    finally:
        stop_process(worker, "faust worker")


# --- in-process: batched vs naive -----------------------------------------------------------
def wire_messages(events: list[Event], partitions: int, per_message: int) -> list[RawMessage]:
    buffers: dict[int, list[Event]] = {}
    offsets: dict[int, int] = {}
    out = []
    for event in events:
        p = partition_for(event.user_id, partitions)
        buffers.setdefault(p, []).append(event)
        if len(buffers[p]) == per_message:
            out.append(RawMessage(p, offsets.get(p, 0), encode_events(buffers.pop(p))))
            offsets[p] = offsets.get(p, 0) + 1
    return out


def feast_layout_store(settings: Settings) -> FeatureStore:
    """The same repository on Feast's stock SQLite store (a row per entity and feature,
    value protos): the layout ``feature_repo/sqlite_store.py`` replaced, as a baseline."""
    config = repo_yaml(settings)
    config["online_store"] = {"type": "sqlite", "path": str(settings.home_dir / "feast.db")}
    store = FeatureStore(config=RepoConfig(repo_path=settings.home_dir, **config))
    store.apply(build_definitions(settings.home_dir, timedelta(days=settings.profile_ttl_days)))
    return store


def in_process_rate(
    settings: Settings,
    catalog: Catalog,
    events: list[Event],
    path: str,
    feast_layout: bool = False,
) -> float:
    feast = feast_layout_store(settings) if feast_layout else open_store(settings)
    store = FeastProfileStore(feast, path)  # type: ignore[arg-type]
    state = ProfileState(store, item_flush_s=settings.worker_item_flush_s)
    processor = ProfileProcessor(state, catalog, clock=time.time)
    messages = wire_messages(events, settings.events_partitions, 200)
    started = time.perf_counter()
    for i in range(0, len(messages), 50):  # 50 messages = 10k events per batch
        processor.process(messages[i : i + 50])
    state.flush(force_items=True)  # the last item rows count too
    return len(messages) * 200 / (time.perf_counter() - started)


def naive_rate(settings: Settings, catalog: Catalog, events: list[Event]) -> float:
    """The path to beat: fold and push every event on its own, one Feast call each."""
    store = FeastProfileStore(open_store(settings), "push")
    profiles: dict[str, UserProfile] = {}
    started = time.perf_counter()
    for event in events:
        profile = profiles.setdefault(event.user_id, UserProfile(event.user_id))
        apply_event(profile, event, catalog)
        store.write_profiles([profile])
    return len(events) / (time.perf_counter() - started)


# --- freshness at a fixed rate --------------------------------------------------------------
def freshness(
    settings: Settings, events: pd.DataFrame, rate: float, seconds: float, probe_every_s: float
) -> list[float]:
    """Latency of probe events sent every ``probe_every_s`` while a load runs at ``rate``:
    from just before the send to the first read that sees the probe's profile (all pending
    probes are read in one call every 5 ms). A probe never seen within 30 s counts as 30 s."""
    worker = start_worker(settings)
    store = FeastProfileStore(open_store(settings))
    stop = threading.Event()

    def load() -> None:
        with EventProducer(
            settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, linger_ms=5
        ) as producer:
            started = time.perf_counter()
            for i, event in enumerate(iter_events(events)):
                if stop.is_set():
                    break
                due = started + i / rate
                if (lag := due - time.perf_counter()) > 0:
                    time.sleep(lag)
                producer.send(event)

    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        _probe_ready(settings, store)
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        with EventProducer(
            settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=1
        ) as probe:
            end = time.perf_counter() + seconds
            next_probe = time.perf_counter()
            while time.perf_counter() < end + 30:
                now = time.perf_counter()
                if now >= next_probe and now < end:
                    user = f"probe-{len(sent)}"
                    sent[user] = now
                    probe.send(
                        Event(
                            event_id=user,
                            user_id=user,
                            type="view",  # type: ignore[arg-type]
                            item_id="1",
                            ts=datetime.now(UTC),
                        )
                    )
                    probe.flush()
                    next_probe += probe_every_s
                pending = [u for u in sent if u not in seen]
                if pending:
                    found = store.read_profiles(pending)
                    read_at = time.perf_counter()
                    seen.update((u, read_at) for u in pending if found[u].event_count)
                elif now >= end:
                    break
                time.sleep(0.005)
        stop.set()
        loader.join(10)
    finally:
        stop_process(worker, "faust worker")
    return [seen.get(u, t + 30.0) - t for u, t in sent.items()]


def _probe_ready(settings: Settings, store: FeastProfileStore) -> bool:
    """Warm-up: one probe event must get through before timing starts."""
    with EventProducer(
        settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS, batch_events=1
    ) as probe:
        probe.send(
            Event(event_id="warm", user_id="warm", type="view", item_id="1", ts=datetime.now(UTC))
        )  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.read_profiles(["warm"])["warm"].event_count:
            return True
        time.sleep(0.1)
    raise TimeoutError("worker never wrote the warm-up profile")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=500)
    parser.add_argument("--freshness-seconds", type=float, default=30.0)
    parser.add_argument("--probe-every-s", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    args = parser.parse_args()

    root = Path(".streamrank") / "bench-ingest"
    base = Settings(home=root / "catalog")
    dataset = load_dataset(base)
    prepare(base, dataset)
    catalog = Catalog.load(base.home_dir)
    copies = max(1, -(-args.events // len(dataset.events)))
    stream = recent(replicated(dataset.events, copies).head(args.events))
    users_100k = recent(replicated(dataset.events, 107, per_user=3))
    results: dict[str, object] = {"machine": f"{psutil.cpu_count()} cpus", "events": len(stream)}

    with EmbeddedBroker(log_path=root / "broker.log") as broker:
        s = fresh_settings(root, base.home_dir, broker.bootstrap, "worker")
        results["worker"] = worker_rate(s, stream)
        results["raw_consumer_events_per_s"] = raw_consumer_rate(s, len(stream))
        s = fresh_settings(
            root, base.home_dir, broker.bootstrap, "one-process", worker_item_process=False
        )
        results["worker_one_process"] = worker_rate(s, stream)

        s = fresh_settings(root, base.home_dir, broker.bootstrap, "users100k")
        big = worker_rate(s, users_100k)
        results["users_100k"] = {"users": users_100k["user_id"].nunique(), **big}

        sample = list(iter_events(stream.head(40_000)))
        for path in ("direct", "push"):
            s = fresh_settings(root, base.home_dir, broker.bootstrap, f"inproc-{path}")
            results[f"in_process_{path}_events_per_s"] = in_process_rate(s, catalog, sample, path)
        # many users, few events each (a profile written per ~3 events): where the store's
        # layout shows most; ours against Feast's own, same events, same run
        many = list(iter_events(users_100k.head(60_000)))
        for key, feast_layout in (("entity_rows", False), ("feast_layout", True)):
            s = fresh_settings(root, base.home_dir, broker.bootstrap, f"inproc-many-{key}")
            results[f"in_process_many_users_{key}_events_per_s"] = in_process_rate(
                s, catalog, many, "direct", feast_layout=feast_layout
            )
        s = fresh_settings(root, base.home_dir, broker.bootstrap, "naive")
        results["naive_per_event_push_events_per_s"] = naive_rate(
            s, catalog, sample[: args.naive_events]
        )

        for key, apart in (("freshness_s", True), ("freshness_one_process_s", False)):
            s = fresh_settings(
                root, base.home_dir, broker.bootstrap, key, worker_item_process=apart
            )
            lat = freshness(s, stream, 5000, args.freshness_seconds, args.probe_every_s)
            results[key] = {
                "rate_events_per_s": 5000,
                "probes": len(lat),
                "p50": statistics.median(lat),
                "p99": percentile(lat, 0.99),
                "max": max(lat),
            }

    worker = results["worker"]
    one_process = results["worker_one_process"]
    fresh, fresh_one = results["freshness_s"], results["freshness_one_process_s"]
    batched = float(results["in_process_direct_events_per_s"])  # type: ignore[arg-type]
    naive = float(results["naive_per_event_push_events_per_s"])  # type: ignore[arg-type]
    results["batched_vs_naive"] = batched / naive
    rows = [
        ("raw consumer (ceiling)", f"{results['raw_consumer_events_per_s']:,.0f} ev/s", ""),
        (
            "Faust worker, full profile + online writes",
            f"{worker['events_per_s']:,.0f} ev/s",
            ">= 20,000",
        ),  # type: ignore[index]
        (
            "  the same, item rows in the worker's process",
            f"{one_process['events_per_s']:,.0f} ev/s",
            "",
        ),  # type: ignore[index]
        ("in-process, batched, direct writes", f"{batched:,.0f} ev/s", ""),
        (
            "in-process, batched, FeatureStore.push",
            f"{float(results['in_process_push_events_per_s']):,.0f} ev/s",
            "",
        ),  # type: ignore[arg-type]
        (
            "in-process, 20k users x 3 events, one row per entity",
            f"{float(results['in_process_many_users_entity_rows_events_per_s']):,.0f} ev/s",
            "",
        ),  # type: ignore[arg-type]
        (
            "  the same on Feast's stock layout (row per feature)",
            f"{float(results['in_process_many_users_feast_layout_events_per_s']):,.0f} ev/s",
            "",
        ),  # type: ignore[arg-type]
        ("naive: one Feast push per event", f"{naive:,.0f} ev/s", ""),
        ("batched / naive", f"{results['batched_vs_naive']:.1f}x", ">= 10x"),
        (
            f"freshness p50 at 5k ev/s ({fresh['probes']} probes)",  # type: ignore[index]
            f"{fresh['p50'] * 1000:.0f} ms",  # type: ignore[index]
            "",
        ),
        ("freshness p99 at 5k ev/s", f"{fresh['p99'] * 1000:.0f} ms", "< 1000 ms"),  # type: ignore[index]
        ("  p50, item rows in the worker's process", f"{fresh_one['p50'] * 1000:.0f} ms", ""),  # type: ignore[index]
        ("  p99, item rows in the worker's process", f"{fresh_one['p99'] * 1000:.0f} ms", ""),  # type: ignore[index]
        ("worker RSS, 100k users", f"{results['users_100k']['rss_mb']:.0f} MB", "< 1024 MB"),  # type: ignore[index]
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':{width}}  {'value':>14}  target")
    for name, value, target in rows:
        print(f"{name:{width}}  {value:>14}  {target}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
