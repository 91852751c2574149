"""Serving benchmark: closed-loop clients against the real Ray Serve application.

    python -m bench.serving [--seconds 20] [--concurrency 1 8 32] [--model DIR]

Profiles come from folding real MovieLens events into the online store (SQLite) with the
stream's own processor. Each request asks ``/v1/recommendations`` to rank 100 candidate
items for a user with a profile. Every configuration runs in this one process, one after
another: ``@serve.batch`` with the configured batch size against a batch size of 1, so
the ratio is measured under the same conditions. The clients share the machine with Serve,
so on 2 cores the figures are a floor. Writes a table and ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import httpx
import psutil

from bench.ingest import percentile, recent, wire_messages
from feature_repo.store import open_store
from infra.processes import free_port
from streamrank.catalog import Catalog
from streamrank.datasets import iter_events, load_dataset
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.processor import ProfileProcessor
from streams.sink import FeastProfileStore
from streams.state import ProfileState

RESULTS = Path(__file__).parent / "results"


def load_profiles(settings: Settings, catalog: Catalog, events: int) -> list[str]:
    """Fold the last ``events`` real events into the store; returns the users."""
    dataset = load_dataset(settings)
    window = recent(dataset.events.tail(events))
    sample = list(iter_events(window))
    state = ProfileState(FeastProfileStore(open_store(settings)))
    processor = ProfileProcessor(state, catalog, clock=time.time)
    messages = wire_messages(sample, settings.events_partitions, 200)
    for i in range(0, len(messages), 50):
        processor.process(messages[i : i + 50])
    state.flush(items=True)
    return sorted({e.user_id for e in sample})


async def closed_loop(
    url: str, bodies: list[dict], concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                reply = await http.post("/v1/recommendations", json=rng.choice(bodies))
                if reply.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1000 * percentile(latencies, 0.95) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else float("nan"),
    }


def run_config(
    settings: Settings, bodies: list[dict], levels: list[int], seconds: float
) -> list[dict[str, float]]:
    from serving import app as serve_app

    url = serve_app.start(settings)
    try:
        asyncio.run(closed_loop(url, bodies, 4, 3.0))  # warm-up: replicas, JIT, caches
        return [asyncio.run(closed_loop(url, bodies, c, seconds)) for c in levels]
    finally:
        serve_app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--model", type=Path, help="trained model directory (default: none)")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()

    root = Path(".streamrank") / "bench-serving"
    shutil.rmtree(root, ignore_errors=True)
    settings = Settings(home=root, serve_port=free_port(), model_dir=args.model)
    catalog = prepare(settings)
    users = load_profiles(settings, catalog, args.events)
    rng = random.Random(7)
    bodies = [
        {"user_id": u, "k": 10, "candidate_ids": rng.sample(catalog.ids, 100)}
        for u in rng.sample(users, min(500, len(users)))
    ]
    results: dict[str, object] = {
        "machine": f"{psutil.cpu_count()} cpus",
        "model": str(args.model) if args.model else "pretrained MiniLM cosine",
        "candidates": 100,
    }
    configs = {
        f"batched (max {settings.scorer_max_batch_size})": settings,
        "unbatched (max 1)": settings.model_copy(update={"scorer_max_batch_size": 1}),
    }
    for name, config in configs.items():
        results[name] = run_config(config, bodies, args.concurrency, args.seconds)

    print(
        f"\n{'configuration':28} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}"
    )
    for name in configs:
        for row in results[name]:  # type: ignore[attr-defined]
            print(
                f"{name:28} {row['concurrency']:7d} {row['rps']:8.1f} {row['p50_ms']:8.1f} "
                f"{row['p95_ms']:8.1f} {row['p99_ms']:8.1f} {row['errors']:6d}"
            )
    top = max(args.concurrency)
    batched = next(r for r in results[next(iter(configs))] if r["concurrency"] == top)  # type: ignore[attr-defined]
    single = next(r for r in results["unbatched (max 1)"] if r["concurrency"] == top)  # type: ignore[attr-defined]
    results["batched_vs_unbatched_rps"] = batched["rps"] / single["rps"]
    print(
        f"\nbatched / unbatched throughput at {top} clients: "
        f"{results['batched_vs_unbatched_rps']:.2f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
