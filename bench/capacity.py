"""Per-core figures for the capacity model (docs/capacity.md), and the sizing they give.

Measured here, on a Redis of the bench's own (one process: one shard, one core):
- the worker's fold and writes, in process, on Redis: events per CPU-second of the worker,
  and the Redis CPU and commands they cost (a stream with heavy users, and one of many
  users with three events each, where a profile row is written every few events);
- serving's store reads: a user's profile read as a request reads it (Feast's async Redis
  client), CPU per read on both sides.
Taken from the serving benchmark's last run (``bench/results/serving.json``): the ingress
replica's CPU per request at the knee, HTTP included.

Then the sizing for a target (default 100k events/s and 10k requests/s): worker cores,
Serve cores, Redis shards, Kafka partitions, at a utilisation the operator picks (default
60 %, the headroom a node loss or a burst needs).

    python -m bench.capacity [--events 40000] [--out bench/results/capacity.json]
    python -m bench.capacity --serving-only   # the serving figure and sizing redone from
                                              # the last serving run, the rest kept
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from bench.ingest import RESULTS, recent, replicated, wire_messages
from feature_repo.store import apply_repo, open_store
from infra.redis import RedisServer
from streamrank.catalog import Catalog, copy_catalog
from streamrank.datasets import iter_events, load_dataset
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.events import Event
from streams.processor import ProfileProcessor
from streams.sink import FeastProfileStore
from streams.state import ProfileState


class RedisMeter:
    """CPU seconds (Redis's own ``INFO cpu``: getrusage, to the microsecond) and commands of
    one redis-server between ``start`` and ``stop``."""

    def __init__(self, server: RedisServer):
        self.client = server.client()

    def _now(self) -> tuple[float, int]:
        cpu = self.client.info("cpu")
        stats = self.client.info("commandstats")
        calls = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls

    def start(self) -> None:
        self._cpu, self._calls = self._now()

    def memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> tuple[float, int]:
        cpu, calls = self._now()
        return cpu - self._cpu, calls - self._calls


def fold_on_redis(
    settings: Settings, catalog: Catalog, events: list[Event], meter: RedisMeter
) -> dict[str, float]:
    """The worker's batches, in process, written to Redis: what one event costs the worker's
    CPU and the shard's."""
    state = ProfileState(FeastProfileStore(open_store(settings)), item_flush_s=2.0)
    processor = ProfileProcessor(state, catalog, clock=time.time)
    messages = wire_messages(events, settings.events_partitions, 200)
    memory = meter.memory()
    meter.start()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in tqdm(range(0, len(messages), 50), desc="fold", unit="batch", leave=False):
        processor.process(messages[i : i + 50])
    state.flush(force_items=True)
    worker_cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    redis_cpu, commands = meter.stop()
    n, users = len(events), len({e.user_id for e in events})
    return {
        "events": n,
        "users": users,
        "events_per_worker_cpu_s": n / worker_cpu,
        "events_per_s": n / wall,
        "events_per_redis_cpu_s": n / redis_cpu,
        "redis_commands_per_event": commands / n,
        "redis_bytes_per_user": (meter.memory() - memory) / users,  # item rows included
    }


def profile_reads(
    settings: Settings, users: list[str], reads: int, meter: RedisMeter
) -> dict[str, float]:
    """One profile read per request, as serving reads it (async, the served columns)."""
    store = FeastProfileStore(open_store(settings))

    async def run() -> float:
        await store.read_profiles_async(users[:1], worker_state=False)  # connect first
        meter.start()
        cpu = time.process_time()
        for i in range(reads):
            await store.read_profiles_async([users[i % len(users)]], worker_state=False)
        return time.process_time() - cpu

    client_cpu = asyncio.run(run())
    redis_cpu, commands = meter.stop()
    return {
        "reads": reads,
        "reads_per_client_cpu_s": reads / client_cpu,
        "reads_per_redis_cpu_s": reads / redis_cpu,
        "redis_commands_per_read": commands / reads,
    }


def serve_cpu_ms(serving_json: Path) -> dict[str, float]:
    """The ingress replica's CPU per page request at the knee (HTTP included), with the
    users' states kept, and the same request when its user's state is not kept (a user's
    first request in ``user_state_max_age_s``, or the first after a new event): the
    in-process difference between the two added to the HTTP figure."""
    serving = json.loads(serving_json.read_text())
    knee = serving["knee"]["model in ingress, page requests"]
    rows = {row["requests_as"]: row for row in serving["in_process"]}
    kept = rows["candidates found"]["cpu_ms_per_request"]
    new = rows["found, a new user state each time"]["cpu_ms_per_request"]
    return {
        "replica_cpu_ms_page_request": knee["replica_cpu_ms"],
        "replica_cpu_ms_page_request_new_state": knee["replica_cpu_ms"] + new - kept,
    }


def size(figures: dict[str, Any], events_per_s: float, requests_per_s: float, use: float) -> dict:
    """Cores and shards for the target at utilisation ``use``."""
    worker = figures["fold_many_users"]
    reads = figures["profile_reads"]
    # a shop's page view is itself an event, so the page's first call finds a new profile:
    # sized on the call without a kept state; the kept figure is a floor
    serve_ms = figures["serve"]["replica_cpu_ms_page_request_new_state"]
    kept_ms = figures["serve"]["replica_cpu_ms_page_request"]
    worker_cores = events_per_s / worker["events_per_worker_cpu_s"] / use
    serve_cores = requests_per_s * serve_ms / 1000 / use
    redis_cpu_s = events_per_s / worker["events_per_redis_cpu_s"] + (
        requests_per_s / reads["reads_per_redis_cpu_s"]
    )
    shards = math.ceil(redis_cpu_s / use)
    # a partition is consumed by one worker process (one core busy folding): at least one
    # per worker core, and a multiple of the current count so that it can grow again
    partitions = 2 ** math.ceil(math.log2(max(1.0, worker_cores)))
    return {
        "target_events_per_s": events_per_s,
        "target_requests_per_s": requests_per_s,
        "utilisation": use,
        "worker_cores": math.ceil(worker_cores),
        "serve_cores": math.ceil(serve_cores),
        "serve_cores_all_states_kept": math.ceil(requests_per_s * kept_ms / 1000 / use),
        "redis_shards": shards,
        "redis_nodes_with_a_replica_each": 2 * shards,
        "events_partitions": partitions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--target-events", type=float, default=100_000)
    parser.add_argument("--target-requests", type=float, default=10_000)
    parser.add_argument("--utilisation", type=float, default=0.6)
    parser.add_argument("--serving", type=Path, default=RESULTS / "serving.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "capacity.json")
    parser.add_argument(
        "--serving-only",
        action="store_true",
        help="keep the worker and Redis figures of --out; take the serving figure again",
    )
    args = parser.parse_args()
    if args.serving_only:
        finish(json.loads(args.out.read_text()), args)
        return

    root = Path(".streamrank") / "bench-capacity"
    base = Settings(home=root / "catalog")
    dataset = load_dataset(base)
    prepare(base, dataset)
    catalog = Catalog.load(base.home_dir)
    copies = max(1, -(-args.events // len(dataset.events)))
    heavy = list(iter_events(recent(replicated(dataset.events, copies).head(args.events))))
    many = list(iter_events(recent(replicated(dataset.events, 107, per_user=3)).head(args.events)))
    figures: dict[str, Any] = {"machine": f"{psutil.cpu_count()} cpus"}
    shutil.rmtree(root / "redis", ignore_errors=True)  # a fresh shard: no rows to skip
    with RedisServer(root / "redis") as server:
        meter = RedisMeter(server)
        for name, events in (("fold_heavy_users", heavy), ("fold_many_users", many)):
            home = root / name
            copy_catalog(base.home_dir, home)
            settings = Settings(
                home=home, online_store="redis", redis_url=server.url, feast_project=name
            )
            apply_repo(settings)
            figures[name] = fold_on_redis(settings, catalog, events, meter)
        users = sorted({e.user_id for e in many})
        figures["profile_reads"] = profile_reads(settings, users, args.reads, meter)
    finish(figures, args)


def finish(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """The serving figure from the last serving run, the sizing from all figures; written
    to ``--out`` and printed."""
    figures["serve"] = serve_cpu_ms(args.serving)
    figures["sizing"] = size(figures, args.target_events, args.target_requests, args.utilisation)
    args.out.write_text(json.dumps(figures, indent=2))
    print_table(figures)


def print_table(figures: dict[str, Any]) -> None:
    heavy, many = figures["fold_heavy_users"], figures["fold_many_users"]
    reads, serve, sizing = figures["profile_reads"], figures["serve"], figures["sizing"]
    rows = [
        ("worker: events per worker CPU-second, heavy users", heavy["events_per_worker_cpu_s"]),
        ("worker: the same, many users x 3 events", many["events_per_worker_cpu_s"]),
        ("Redis: events per shard CPU-second, heavy users", heavy["events_per_redis_cpu_s"]),
        ("Redis: the same, many users", many["events_per_redis_cpu_s"]),
        ("Redis: commands per event, many users", many["redis_commands_per_event"]),
        ("Redis: bytes per user, many users", many["redis_bytes_per_user"]),
        ("Redis: profile reads per shard CPU-second", reads["reads_per_redis_cpu_s"]),
        ("serving: client CPU per profile read (reads/s)", reads["reads_per_client_cpu_s"]),
        (
            "Serve: page requests per core, user state kept",
            1000 / serve["replica_cpu_ms_page_request"],
        ),
        (
            "Serve: page requests per core, a new user state",
            1000 / serve["replica_cpu_ms_page_request_new_state"],
        ),
    ]
    print(f"\n{'per-core figure':56} {'value':>12}")
    for name, value in rows:
        print(f"{name:56} {value:>12,.1f}")
    print(
        f"\nfor {sizing['target_events_per_s']:,.0f} events/s and "
        f"{sizing['target_requests_per_s']:,.0f} requests/s at "
        f"{100 * sizing['utilisation']:.0f} % utilisation:"
    )
    for key in (
        "worker_cores",
        "serve_cores",
        "serve_cores_all_states_kept",
        "redis_shards",
        "events_partitions",
    ):
        print(f"  {key.replace('_', ' '):32} {sizing[key]:>6}")


if __name__ == "__main__":
    main()
