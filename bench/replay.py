"""Replay benchmark: events/s of ``streamrank replay``, and what bounds it.

    python -m bench.replay [--events 400000] [--out bench/results/replay.json]

One run, one topic, so the rows compare:
- read: the replay's own reader (``streams.replay.read_messages``), messages only;
- read + validate: the same plus ``decode_message`` (every event through the schema);
- read + validate + fold: plus ``apply_event`` into in-memory profiles, nothing stored
  (the ceiling of the one profile definition in one process);
- replay, 1 process / N processes: the real command path (processor, item rows,
  namespace writes, checkpoints), at the default batch;
- replay, 1 and N processes, profiles only (``--profiles-only``: no item rows, what
  backtests need), so the scaling shows within one run;
- replay at the live worker's batch size: the same with 10-message batches, each written
  at once, i.e. writes as often as the live worker makes them (the baseline that batched,
  deferred writes are measured against).
Every replay row is the median of ``--repeat`` runs, each in a fresh interpreter.
Streams are MovieLens 100K replicated with shifted user ids (never invented).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench.ingest import replicated
from feature_repo.namespaces import Namespace
from feature_repo.store import repo_config
from infra.broker import EmbeddedBroker, ensure_topics
from streamrank.catalog import Catalog, copy_catalog
from streamrank.datasets import load_dataset
from streamrank.demo import stream_events
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.events import decode_message
from streams.memory import gc_pace
from streams.profile import UserProfile, apply_event
from streams.replay import plan, read_messages, replay

RESULTS = Path(__file__).parent / "results"


def read_rate(settings: Settings, planned, events: int, fold: str) -> float:  # type: ignore[no-untyped-def]
    """``fold``: "none", "validate" or "profile". At replay's collector pace, as a ceiling."""
    with gc_pace(settings.replay_gc_thresholds):
        return _read_rate(settings, planned, events, fold)


def _read_rate(settings: Settings, planned, events: int, fold: str) -> float:  # type: ignore[no-untyped-def]
    catalog = Catalog.load(settings.home_dir) if fold == "profile" else None
    profiles: dict[str, UserProfile] = {}
    started = time.perf_counter()
    for p in sorted(planned.start):
        for batch in read_messages(settings, p, planned.start[p], planned.stop[p], 1000):
            if fold == "none":
                continue
            for msg in batch:
                for event in decode_message(msg.value, now=msg.timestamp or time.time()).events:
                    if catalog is not None:
                        profile = profiles.get(event.user_id)
                        if profile is None:
                            profile = profiles[event.user_id] = UserProfile(event.user_id)
                        apply_event(profile, event, catalog)
    return events / (time.perf_counter() - started)


def replay_rate(  # type: ignore[no-untyped-def]
    settings: Settings,
    planned,
    name: str,
    workers: int,
    profiles_only: bool = False,
    repeat: int = 1,
) -> dict[str, object]:
    """The median of ``repeat`` runs by events/s (identical runs on this box differ by up
    to ±15 % in wall time), with every run's rate beside it.

    Each run is a fresh interpreter, as ``streamrank replay`` is, so that no row inherits
    what the rows before it left in the process (caches, a grown heap)."""
    spawn = multiprocessing.get_context("spawn")
    runs = []
    for i in range(repeat):
        with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
            run = fresh.submit(
                _replay_once, settings, planned, f"{name}{i}", workers, profiles_only
            )
            runs.append(run.result())
    median = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]
    return {**median, "runs_events_per_s": [r["events_per_s"] for r in runs]}


def _replay_once(  # type: ignore[no-untyped-def]
    settings: Settings, planned, name: str, workers: int, profiles_only: bool
) -> dict[str, float]:
    """Wall time and the CPU time of this process and its replay processes (a figure that
    the box's noise moves less than the wall time). Imports come before the clock, as in
    the command, whose start-up they are: Feast imports its offline store's modules (dask)
    on the first repository config a process builds, ~1 s, counted apart."""
    started = time.perf_counter()
    repo_config(settings)
    imports_s = time.perf_counter() - started
    namespace = Namespace(settings, name)
    started, cpu = time.perf_counter(), _cpu_seconds()
    manifest = replay(
        settings, namespace, planned, workers=workers, progress=False, profiles_only=profiles_only
    )
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    namespace.delete()
    return {
        "events": manifest.events,
        "seconds": seconds,
        "events_per_s": manifest.events / seconds,
        "cpu_seconds": cpu,
        "cpu_us_per_event": cpu / manifest.events * 1e6,
        "imports_s": imports_s,
    }


def _cpu_seconds() -> float:
    """This process and its ended children (the replay pool's processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--workers", type=int, default=psutil.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per replay row (median)")
    parser.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    args = parser.parse_args()

    root = Path(".streamrank") / "bench-replay"
    base = Settings(home=root / "catalog")
    dataset = load_dataset(base)
    prepare(base, dataset)
    copies = max(1, -(-args.events // len(dataset.events)))
    stream = replicated(dataset.events, copies).head(args.events)
    home = root / "home"
    shutil.rmtree(home, ignore_errors=True)
    copy_catalog(base.home_dir, home)
    results: dict[str, object] = {"machine": f"{psutil.cpu_count()} cpus", "events": len(stream)}
    with EmbeddedBroker(log_path=root / "broker.log") as broker:
        s = Settings(home=home, kafka_bootstrap=broker.bootstrap)
        ensure_topics(s.bootstrap(), s.topics(), compacted=s.compacted_topics())
        stream_events(s, stream)
        started = time.perf_counter()
        planned = plan(s, None)
        results["plan_s"] = time.perf_counter() - started
        results["messages"] = planned.messages
        n = len(stream)
        results["read_events_per_s"] = read_rate(s, planned, n, "none")
        results["read_validate_events_per_s"] = read_rate(s, planned, n, "validate")
        results["read_validate_fold_events_per_s"] = read_rate(s, planned, n, "profile")
        n_runs = {"repeat": args.repeat}
        results["replay_1"] = replay_rate(s, planned, "bench1_", 1, **n_runs)
        results[f"replay_{args.workers}"] = replay_rate(
            s, planned, "benchn_", args.workers, **n_runs
        )
        results["replay_1_profiles_only"] = replay_rate(
            s, planned, "benchlean1_", 1, profiles_only=True, **n_runs
        )
        results[f"replay_{args.workers}_profiles_only"] = replay_rate(
            s, planned, "benchlean_", args.workers, profiles_only=True, **n_runs
        )
        small = s.model_copy(update={"replay_batch_messages": 10, "replay_flush_s": 0.0})
        results["replay_1_live_batches"] = replay_rate(small, planned, "benchsmall_", 1, **n_runs)

    runs: dict[str, dict[str, Any]] = {  # type: ignore[assignment]
        k: v for k, v in results.items() if k.startswith("replay_")
    }
    results["batched_vs_live_batches"] = (
        runs["replay_1"]["events_per_s"] / runs["replay_1_live_batches"]["events_per_s"]
    )
    # (measure, events/s, the replay run behind it for its CPU time, target)
    rows: list[tuple[str, float, dict[str, Any] | None, str]] = [
        ("read (replay reader, no decoding)", results["read_events_per_s"], None, ""),  # type: ignore[list-item]
        ("read + validate", results["read_validate_events_per_s"], None, ""),  # type: ignore[list-item]
        (
            "read + validate + profile fold (no store)",
            results["read_validate_fold_events_per_s"],  # type: ignore[arg-type]
            None,
            "",
        ),
    ]
    for key, name, target in (
        ("replay_1", "replay, 1 process", ""),
        (f"replay_{args.workers}", f"replay, {args.workers} processes", ">= 100,000"),
        ("replay_1_profiles_only", "replay, 1 process, profiles only", ""),
        (
            f"replay_{args.workers}_profiles_only",
            f"replay, {args.workers} processes, profiles only",
            ">= 100,000",
        ),
        ("replay_1_live_batches", "replay, 1 process, a write per 10 messages (as live)", ""),
    ):
        rows.append((name, runs[key]["events_per_s"], runs[key], target))
    width = max(len(r[0]) for r in rows)
    print(f"\n{len(stream):,} events in {planned.messages:,} messages; {results['machine']}")
    print(f"\nreplay rows: the median of {args.repeat} runs, and the slowest and fastest")
    print(f"{'measure':{width}}  {'events/s':>10}  {'CPU µs/ev':>9}  {'runs':>15}  target")
    for name, value, run, target in rows:
        spent = f"{run['cpu_us_per_event']:9.1f}" if run else " " * 9
        rates = run["runs_events_per_s"] if run else []
        spread = f"{min(rates) / 1e3:.0f}k-{max(rates) / 1e3:.0f}k" if rates else ""
        print(f"{name:{width}}  {float(value):>10,.0f}  {spent}  {spread:>15}  {target}")
    print(f"{'batched vs live-sized writes':{width}}  {results['batched_vs_live_batches']:>9.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
