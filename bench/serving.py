"""Serving benchmark: closed-loop clients against the real Ray Serve application.

    python -m bench.serving [--seconds 8] [--concurrency 1 2 4 8 16 32 64] [--model DIR]

Profiles come from folding real MovieLens events into the online store (SQLite) with the
stream's own processor. Each request asks ``/v1/recommendations`` to rank 100 candidate
items for a user with a profile, or, in the page-request rows, for the user's own page
(no candidates given: the recommender finds them). Every configuration runs in this one
process, one after another, at every concurrency level, so ratios are measured under the
same conditions:

- the framework's ceiling: a no-op ingress parsing the same request (``bench/noop_app.py``),
  run first and again last, the better of the two taken (the box's speed drifts); the
  page requests have their own no-op run, and their shares are against the better of it
  and the other;
- the model inside the ingress replica, ``@serve.batch`` on and off (batch size 1), and
  the unbatched default asked for pages;
- requests from a product page (the item in view named) with no user state kept, as
  when every request follows an event of its user (the new event changes the profile,
  so its state is built again): the real call's dearest common case;
- the page requests through FastAPI's own path, without the lean route
  (``serving/lean_routes.py``), and with a shallower queue bound (2 ongoing, 2 queued
  requests, against the default 8 and 8);
- the model in its own scorer deployment (the GPU topology), batched;
- Serve's classic Python HTTP proxy instead of HAProxy + direct ingress;
- int8 against float32 when the model is a trained one;
- the queue unbounded (no shedding).

The default configurations, the shallower bound and the unbounded queue are then offered
requests in an open loop (``open_loop``: Poisson arrivals, as independent shoppers send
them) at ``OVERLOAD`` times their own knee's rate: what a replica sheds, and what its
accepted requests wait, when more comes than it can serve.

Next to the end-to-end runs, the scorer alone (no Ray, no HTTP) is timed at batch sizes 1
and 32 in float32 and int8: the model's own batching gain. The clients share the machine
with Serve, so on 2 cores the figures are a floor. Writes a table and
``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import platform
import random
import shutil
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import psutil
from prometheus_client import REGISTRY

from bench.ingest import percentile, recent, wire_messages
from feature_repo.store import open_store
from infra.processes import free_port
from serving.config import APP_NAME
from streamrank.catalog import Catalog
from streamrank.datasets import iter_events, load_dataset
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.processor import ProfileProcessor
from streams.profile import derive_features
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore
from streams.state import ProfileState

JSON = {"Content-Type": "application/json"}
RESULTS = Path(__file__).parent / "results"
CANDIDATES = 100
P99_TARGET_MS = 50.0
NOOP = "no-op ingress (ceiling)"
NOOP_AGAIN = "no-op ingress, again"
NOOP_PAGES = "no-op ingress, page requests"
NEW_STATE = "found, a new user state each time"
"""The in-process row of a request whose user state is not kept: the user's first request
in ``user_state_max_age_s``, or the first after a new event of theirs."""


def load_profiles(settings: Settings, catalog: Catalog, events: int) -> list[str]:
    """Fold the last ``events`` real events into the store; returns the users."""
    dataset = load_dataset(settings)
    window = recent(dataset.events.tail(events))
    pseudonym = Pseudonymizer.from_settings(settings)  # as the SDK sends them
    raw = list(iter_events(window))
    sample = [e.model_copy(update={"user_id": pseudonym(e.user_id)}) for e in raw]
    state = ProfileState(FeastProfileStore(open_store(settings)))
    processor = ProfileProcessor(state, catalog, clock=time.time)
    messages = wire_messages(sample, settings.events_partitions, 200)
    for i in range(0, len(messages), 50):
        processor.process(messages[i : i + 50])
    state.flush(force_items=True)
    return sorted({e.user_id for e in raw})  # requests carry raw ids


async def closed_loop(
    url: str, bodies: list[dict], concurrency: int, seconds: float
) -> dict[str, float]:
    """``concurrency`` clients, each sending its next request when the last one returns.
    A 503 (shed: the replica's queue is full) counts apart from errors, and its client
    waits what its ``Retry-After`` says before the next request, as a page shows its
    fallback and asks again when told; latencies are those of the accepted requests.

    The clients are aiohttp's, each body encoded once: on a machine they share with Serve,
    a client's CPU is taken from the replicas (httpx's async client cost ~1.4 ms of CPU a
    request, more than the no-op replica's own; aiohttp's ~0.2 ms). ``client_cpu_ms``
    reports what they still took."""
    latencies: list[float] = []
    shed_latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(url, timeout=timeout) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                body = rng.choice(encoded)
                async with http.post("/v1/recommendations", data=body, headers=JSON) as reply:
                    await reply.read()
                if reply.status == 200:
                    latencies.append(time.perf_counter() - started)
                elif reply.status == 503 and reply.headers.get("retry-after"):
                    shed_latencies.append(time.perf_counter() - started)
                    await asyncio.sleep(float(reply.headers["retry-after"]))
                else:
                    errors += 1

    encoded = [json.dumps(b).encode() for b in bodies]
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    answered = max(1, len(latencies) + len(shed_latencies))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "shed": len(shed_latencies),
        "shed_share": len(shed_latencies) / max(1, len(latencies) + len(shed_latencies)),
        "shed_p99_ms": 1000 * percentile(shed_latencies, 0.99) if shed_latencies else 0.0,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1000 * percentile(latencies, 0.95) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else float("nan"),
        "client_cpu_ms": 1000 * cpu / answered,
    }


async def open_loop(url: str, bodies: list[dict], rate: float, seconds: float) -> dict[str, float]:
    """Requests arriving at ``rate`` a second (Poisson), each sent when it is due whatever
    became of those before it: many independent shoppers, none of whom waits for another's
    page. A closed loop offers less as the server slows (and its shed clients wait
    ``Retry-After``); this one keeps offering, as a shop's traffic does, so it shows what
    a replica does with more than it can serve: shed the rest and keep the accepted
    requests' latency, or queue them until every answer is late.

    A shed request (503) is not sent again: its page shows the fallback. Latency runs from
    when a request was due, not when the client got round to sending it, so a client that
    falls behind does not hide the server's delays (coordinated omission). Requests still
    open at the end are awaited, and counted in the rate over the whole time taken. On a
    machine shared with Serve the client falls behind when the box is saturated: its own
    lag (``client_lag_p99_ms``: due to sent) tells that apart from the server's delay."""
    latencies: list[float] = []
    lags: list[float] = []  # how late the client itself sent each request
    shed = errors = 0
    rng = random.Random(11)
    encoded = [json.dumps(b).encode() for b in bodies]
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=512)

    async def send(http: aiohttp.ClientSession, due: float, body: bytes) -> None:
        nonlocal shed, errors
        lags.append(time.perf_counter() - due)
        try:
            async with http.post("/v1/recommendations", data=body, headers=JSON) as reply:
                await reply.read()
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
            return
        if reply.status == 200:
            latencies.append(time.perf_counter() - due)
        elif reply.status == 503:
            shed += 1
        else:
            errors += 1

    async with aiohttp.ClientSession(url, timeout=timeout, connector=connector) as http:
        started, cpu = time.perf_counter(), time.process_time()
        deadline, due, sent = started + seconds, started, 0
        pending: set[asyncio.Task[None]] = set()
        while due < deadline:
            now = time.perf_counter()
            while due <= now and due < deadline:  # every request due by now, late ones too
                task = asyncio.create_task(send(http, due, rng.choice(encoded)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
                due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if pending:
            await asyncio.wait(pending)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    answered = max(1, len(latencies) + shed)
    return {
        "rate": rate,
        "offered_rps": sent / seconds,
        "requests": len(latencies),
        "errors": errors,
        "shed": shed,
        "shed_share": shed / answered,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else float("nan"),
        "client_lag_p99_ms": 1000 * percentile(lags, 0.99) if lags else float("nan"),
        "client_cpu_ms": 1000 * cpu / max(1, sent),
    }


OVERLOAD = (0.75, 1.5, 2.0)
"""Open-loop arrival rates, as multiples of the configuration's own closed-loop knee: below
it, the bound's false sheds under bursty arrivals; past it, what is shed and what the
accepted requests wait. (Much past 2x, on a box the clients share, the client falls behind.)"""


@dataclass
class Config:
    name: str
    settings: Settings
    noop: bool = False
    pages: bool = False
    """Requests for the user's own page (no candidates given) instead of 100 candidates."""
    item_in_view: bool = False
    """Page requests from a product page: the request names the item in view
    (``product_pages``), so its page is scored afresh each time."""
    overload: bool = False
    """Also offered ``OVERLOAD`` times its knee's rate in an open loop (``open_loop``)."""

    @property
    def ceiling(self) -> str:
        """The no-op run that parses the same requests (the shares are taken against it,
        or against a faster no-op run: ``ceiling_rows``)."""
        return NOOP_PAGES if self.pages else NOOP


def run_config(
    config: Config, bodies: list[dict], levels: list[int], seconds: float
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """The closed-loop rows at each level of clients, and the open-loop rows at
    ``OVERLOAD`` times the knee they found (none unless ``config.overload``)."""
    from bench.noop_app import noop_app
    from serving import app as serve_app

    app = noop_app(config.settings.serve_num_cpus) if config.noop else None
    url = serve_app.start(config.settings, app=app)
    if config.pages:
        bodies = product_pages(bodies) if config.item_in_view else own_pages(bodies)
    try:
        asyncio.run(closed_loop(url, bodies, 4, 3.0))  # warm-up: replicas, caches
        rows = [measured_closed_loop(url, bodies, clients, seconds) for clients in levels]
        top = knee(rows)
        overload = []
        for multiple in OVERLOAD if config.overload and top else ():
            row = measured(open_loop(url, bodies, multiple * top["rps"], seconds))
            overload.append({**row, "of_knee": multiple})
        return rows, overload
    finally:
        serve_app.stop()


def measured(clients: Coroutine[None, None, dict[str, float]]) -> dict[str, float]:
    """The clients' row, with the replica's CPU per answered request and the box's idle
    share over the same time.

    The clients run with Python's garbage collector off, and it collects after. This
    process holds the catalog, the profiles and the store's clients besides them: a full
    collection during a measurement took 60-400 ms, growing with the objects a level
    makes, and stalled every client at once, which counted as the server's latency (p99,
    and an open loop's client falling behind)."""
    before, box = replica_cpu_s(), box_cpu()
    gc.collect()
    gc.disable()
    try:
        row = asyncio.run(clients)
    finally:
        gc.enable()
        gc.collect()
    answered = row["requests"] + row["shed"]
    row["replica_cpu_ms"] = 1000 * (replica_cpu_s() - before) / max(1, answered)
    row["box_idle_share"] = idle_share(box, box_cpu())
    return row


def measured_closed_loop(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """A ``measured`` closed loop, with the share of its requests that found their user's
    state kept (none for the no-op)."""
    states = user_states(url)
    row = measured(closed_loop(url, bodies, clients, seconds))
    if states is not None:
        row["user_state_hit_share"] = hit_share(states, user_states(url) or states)
    return row


def user_states(url: str) -> tuple[float, float] | None:
    """The replica's (hits, misses) of kept user states (``serving/user_state.py``), from
    its ``/metrics``; None where the application has none (the no-op)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except urllib.error.HTTPError:
        return None
    counts = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "streamrank_serve_user_states_total":
                counts[sample.labels["outcome"]] += sample.value
    return counts["hit"], counts["miss"]


def ingress_replicas() -> list[psutil.Process]:
    """The application's ingress replica processes running now."""
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(f"ServeReplica:{APP_NAME}:api" in part for part in process.info["cmdline"] or [])
    ]


def replica_cpu_s() -> float:
    """CPU seconds used so far by the application's ingress replicas (every thread: the
    event loop, the model's and the store's threads, librdkafka's)."""
    total = 0.0
    for process in ingress_replicas():
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def box_cpu() -> tuple[float, float]:
    """The machine's (idle, total) CPU seconds so far, every core."""
    times = psutil.cpu_times()
    return times.idle, sum(times)


def idle_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time left idle between two ``box_cpu`` readings. A
    replica that sheds sends its clients away for ``Retry-After``: where the accepted rate
    falls while the box idles, the clients offered less, not that the replica could do
    less."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def knee(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The most requests/s reached with p99 under the target: the load the box sustains."""
    within = [r for r in rows if r["p99_ms"] < P99_TARGET_MS and not r["errors"]]
    return max(within, key=lambda r: r["rps"]) if within else None


def scorer_alone(settings: Settings, users: list[str], batch_sizes: list[int]) -> list[dict]:
    """Tasks/s of the scorer's own ``score_batch`` (no Ray, no HTTP), float32 and int8."""
    from serving.scorer import ScorerModel, ScoreTask, model_directory

    store = FeastProfileStore(open_store(settings))
    now = time.time()
    profiles = [derive_features(p, now) for p in store.read_profiles(users[:256]).values()]
    rng = np.random.default_rng(3)
    rows = []
    variants = {"float32": settings}
    if settings.model_dir is not None:
        variants["int8"] = settings.model_copy(update={"scorer_int8": True})
    for variant, variant_settings in variants.items():
        directory = model_directory(variant_settings)
        model = ScorerModel(variant_settings, directory, device="cpu")
        n_items = len(model.catalog)
        tasks = [
            ScoreTask(rng.choice(n_items, CANDIDATES, replace=False), profile)
            for profile in profiles
        ]
        for size in batch_sizes:
            batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
            model.score_batch(batches[0])  # warm-up
            started = time.perf_counter()
            for batch in batches:
                model.score_batch(batch)
            elapsed = time.perf_counter() - started
            rows.append(
                {
                    "variant": variant,
                    "batch_size": size,
                    "tasks_per_s": len(tasks) / elapsed,
                    "ms_per_batch": 1000 * elapsed / len(batches),
                }
            )
    return rows


def in_process(settings: Settings, bodies: list[dict], seconds: float) -> list[dict]:
    """CPU time per request of the whole request path without Ray and HTTP: the request
    body validated, profile and stream reads, candidates, the scorer called directly (no
    batching), ranking and the response's JSON. As the HTTP runs ask (100 given
    candidates); as a page asks (the candidates found by the recommender), with the
    users' states kept and with none kept (``NEW_STATE``); as a product page asks (the
    item in view named), with none kept; and with co-visitation rows read from the store
    at every request."""
    from serving.api import RecommendationRequest
    from serving.experiments import arm_model_dir
    from serving.recommender import Arm, Recommender
    from serving.scorer import ScorerModel, model_directory, use_scorer_threads

    use_scorer_threads(settings)  # as in a replica
    catalog = Catalog.load(settings.home_dir)
    directory = model_directory(settings, arm_model_dir(settings, "main"))
    model = ScorerModel(settings, directory, device="cpu", catalog=catalog)

    async def score(task):  # type: ignore[no-untyped-def]
        return model.score_batch([task])[0]

    async def search(query: str, n: int) -> np.ndarray:
        return model.search(query, n)

    arm = Arm(score, model.version, search, model.trained)
    pages = own_pages(bodies)

    def counted(metric: str) -> tuple[float, float]:
        name = f"streamrank_serve_{metric}_total"
        return tuple(  # type: ignore[return-value]
            REGISTRY.get_sample_value(name, {"outcome": o}) or 0.0 for o in ("hit", "miss")
        )

    async def run(requests: list[dict], variant: Settings) -> dict[str, float]:
        recommender = Recommender.from_settings(variant, catalog, {"main": arm})
        for body in requests[:20]:  # warm-up: popularity read, first passes
            await recommender.recommend(RecommendationRequest.model_validate(body))
        anchors, states = counted("covisit_anchors"), counted("user_states")
        done, cpu, wall = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - wall < seconds:
            body = requests[done % len(requests)]
            response = await recommender.recommend(RecommendationRequest.model_validate(body))
            response.model_dump_json()
            done += 1
        return {
            "requests": done,
            "cpu_ms_per_request": 1000 * (time.process_time() - cpu) / done,
            "wall_ms_per_request": 1000 * (time.perf_counter() - wall) / done,
            "covisit_hit_share": hit_share(anchors, counted("covisit_anchors")),
            "user_state_hit_share": hit_share(states, counted("user_states")),
        }

    uncached = settings.model_copy(update={"covisit_refresh_s": 0.0})
    stateless = settings.model_copy(update={"user_state_cache": 0})
    out = []
    for name, requests, variant in (
        ("100 given candidates", bodies, settings),
        ("candidates found", pages, settings),
        (NEW_STATE, pages, stateless),
        ("a product page, a new user state each time", product_pages(bodies), stateless),
        ("found, co-visits read each time", pages, uncached),
    ):
        row = asyncio.run(run(requests, variant))
        out.append({"requests_as": name, **row})
    return out


def hit_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of hits between two (hits, misses) readings of a counter."""
    hits, misses = after[0] - before[0], after[1] - before[1]
    return hits / max(1.0, hits + misses)


def print_in_process(rows: list[dict]) -> None:
    print(
        f"\n{'in process (no Ray, no HTTP)':44} {'CPU ms/req':>10} {'wall ms/req':>11} "
        f"{'user states kept':>16} {'co-visits kept':>14}"
    )
    for row in rows:
        print(
            f"{row['requests_as']:44} {row['cpu_ms_per_request']:10.2f} "
            f"{row['wall_ms_per_request']:11.2f} {row.get('user_state_hit_share', 0.0):16.0%} "
            f"{row.get('covisit_hit_share', 0.0):14.0%}"
        )


def workload(
    name: str, model: Path | None, gpus: float, events: int
) -> tuple[Settings, list[str], list[dict]]:
    """A fresh home ``.streamrank/<name>`` (the model stays outside it) with the catalog
    prepared and the last ``events`` real events folded into its store: the settings, the
    users, and one request body for each of up to 500 of them (100 candidates given)."""
    root = Path(".streamrank") / name
    shutil.rmtree(root, ignore_errors=True)
    base = Settings(home=root, serve_port=free_port(), model_dir=model, scorer_num_gpus=gpus)
    catalog = prepare(base)
    users = load_profiles(base, catalog, events)
    rng = random.Random(7)
    bodies = [
        {"user_id": u, "k": 10, "candidate_ids": rng.sample(catalog.ids, CANDIDATES)}
        for u in rng.sample(users, min(500, len(users)))
    ]
    return base, users, bodies


def own_pages(bodies: list[dict]) -> list[dict]:
    """The same users' requests for their own page: no candidates given."""
    return [{k: v for k, v in b.items() if k != "candidate_ids"} for b in bodies]


def product_pages(bodies: list[dict]) -> list[dict]:
    """The same users' requests from a product page: no candidates given, one of the
    request's candidates in view."""
    return [
        {"user_id": b["user_id"], "k": b["k"], "context": {"item_id": b["candidate_ids"][0]}}
        for b in bodies
    ]


def ceiling_rows(results: dict, config: Config) -> list[dict]:
    """The no-op rows a configuration's shares are taken against, level by level. For page
    requests, the better of the two no-op runs: the one parsing the same requests, and the
    one parsing 100 candidates besides (more work, yet often faster on a drifting box): the
    stricter ceiling."""
    runs = results["runs"]
    if not config.pages or NOOP_PAGES not in runs:
        return runs[NOOP]
    return [
        max(a, b, key=lambda r: r["rps"]) for a, b in zip(runs[NOOP_PAGES], runs[NOOP], strict=True)
    ]


def shares(results: dict, configs: list[Config]) -> dict[str, dict[str, float]]:
    """Each real configuration's req/s as a share of its ceiling's: at every level, and
    at the knee (its knee against the ceiling's knee)."""
    out = {}
    for config in configs:
        if config.noop:
            continue
        ceiling = ceiling_rows(results, config)
        rows = results["runs"][config.name]
        by_level = {
            str(row["concurrency"]): row["rps"] / base["rps"]
            for row, base in zip(rows, ceiling, strict=True)
        }
        mine, theirs = knee(rows), knee(ceiling)
        if mine and theirs:
            by_level["knee"] = mine["rps"] / theirs["rps"]
        out[config.name] = by_level
    return out


def print_tables(results: dict, configs: list[Config]) -> None:
    print(
        f"\n{'configuration':50} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'err':>4} {'shed':>5} {'of no-op':>8} {'replica CPU ms/req':>18} "
        f"{'client CPU':>10} {'box idle':>8} {'states kept':>11}"
    )
    for config in configs:
        of_noop = results["shares"].get(config.name, {})
        for row in results["runs"][config.name]:
            share = of_noop.get(str(row["concurrency"]))
            print(
                f"{config.name:50} {row['concurrency']:7d} {row['rps']:8.1f} {row['p50_ms']:8.1f} "
                f"{row['p95_ms']:8.1f} {row['p99_ms']:8.1f} {row['errors']:4d} "
                f"{row.get('shed_share', 0.0):5.0%} "
                + (f"{share:8.0%} " if share is not None else f"{'':8} ")
                + f"{row['replica_cpu_ms']:18.2f} "
                f"{row.get('client_cpu_ms', float('nan')):10.2f} "
                f"{row.get('box_idle_share', float('nan')):8.0%} "
                + (f"{row['user_state_hit_share']:11.0%}" if "user_state_hit_share" in row else "")
            )
    if results.get("overload"):
        print(
            f"\n{'open loop: arrivals at a rate':50} {'× knee':>7} {'offered':>8} "
            f"{'req/s':>8} {'of knee':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} {'shed':>5} "
            f"{'replica CPU ms/req':>18} {'box idle':>8} {'client lag p99':>14}"
        )
    for name, rows in results.get("overload", {}).items():
        top = results["knee"][name]
        for row in rows:
            print(
                f"{name:50} {row['of_knee']:7.2f} {row['offered_rps']:8.1f} {row['rps']:8.1f} "
                f"{row['rps'] / top['rps']:8.0%} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
                f"{row['errors']:4d} {row['shed_share']:5.0%} {row['replica_cpu_ms']:18.2f} "
                f"{row['box_idle_share']:8.0%} {row['client_lag_p99_ms']:14.1f}"
            )
    print(f"\nload sustained with p99 < {P99_TARGET_MS:g} ms (the knee):")
    for name, row in results["knee"].items():
        share = results["shares"].get(name, {}).get("knee")
        print(
            f"  {name:34} "
            + (f"{row['rps']:.1f} req/s at {row['concurrency']} clients" if row else "none")
            + (f" ({share:.0%} of its no-op's knee)" if share is not None else "")
        )
    print(f"\n{'scorer alone':12} {'batch':>6} {'tasks/s':>10} {'ms/batch':>9}")
    for row in results["scorer_alone"]:
        print(
            f"{row['variant']:12} {row['batch_size']:6d} {row['tasks_per_s']:10.0f} "
            f"{row['ms_per_batch']:9.2f}"
        )
    print_in_process(results["in_process"])
    for key, value in results["ratios"].items():
        print(f"{key}: {value:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--model", type=Path, help="trained model directory (default: none)")
    parser.add_argument("--device", default=None, help="scorer device, e.g. cuda")
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument(
        "--in-process-only", action="store_true", help="the in-process row alone (no Ray)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()

    gpus = 1.0 if args.device == "cuda" else 0.0
    base, users, bodies = workload("bench-serving", args.model, gpus, args.events)

    if args.in_process_only:
        rows = in_process(base, bodies, args.seconds)
        print_in_process(rows)
        return

    def variant(**update: object) -> Settings:
        return base.model_copy(update=update)

    placement = "deployment" if gpus else "ingress"
    batch_size = "scorer_max_batch_size" if gpus else "api_scorer_max_batch_size"

    def unbatched(**update: object) -> Settings:
        """The model where this run places it, unbatched, with ``update`` on top."""
        return variant(scorer_placement=placement, **{batch_size: 1}, **update)

    configs = [
        Config(NOOP, base, noop=True),
        Config(
            f"model in {placement}, batched",
            variant(scorer_placement=placement, **{batch_size: 32}),
        ),
        Config(f"model in {placement}, unbatched", unbatched(), overload=True),
        Config(NOOP_PAGES, base, noop=True, pages=True),
        Config(f"model in {placement}, page requests", unbatched(), pages=True, overload=True),
        Config(
            f"model in {placement}, page requests, queue 2 and 2",
            unbatched(api_max_ongoing_requests=2, api_max_queued_requests=2),
            pages=True,
            overload=True,
        ),
        Config(
            f"model in {placement}, product pages, no state kept",
            unbatched(user_state_cache=0),
            pages=True,
            item_in_view=True,
        ),
        Config(
            f"model in {placement}, page requests, FastAPI's path",
            unbatched(serve_lean_routes=False),
            pages=True,
        ),
    ]
    if not gpus:
        configs.append(Config("scorer deployment, batched", variant(scorer_placement="deployment")))
        configs.append(
            Config(
                "model in ingress, 2 replicas",
                variant(scorer_placement="ingress", api_replicas=2, api_max_replicas=2),
            )
        )
        configs.append(
            Config(
                "model in ingress, Python proxy",
                variant(scorer_placement="ingress", serve_high_throughput=False),
            )
        )
        if args.model is not None:
            configs.append(
                Config(
                    "model in ingress, int8", variant(scorer_placement="ingress", scorer_int8=True)
                )
            )
    configs.append(
        Config(
            f"model in {placement}, unbounded queue",
            variant(
                scorer_placement=placement, api_max_ongoing_requests=256, api_max_queued_requests=-1
            ),
            overload=True,
        )
    )
    if args.only:
        chosen = [c for c in configs if c.name in args.only]
        ceilings = {NOOP} | {c.ceiling for c in chosen}
        configs = [c for c in configs if c in chosen or c.name in ceilings]
    # the ceiling again at the end: the box's speed drifts over a run of minutes, and the
    # shares are taken against the better of the two no-op runs (the stricter ceiling)
    configs.append(Config(NOOP_AGAIN, base, noop=True))

    results: dict = {
        "machine": f"{psutil.cpu_count()} cpus, {platform.processor() or platform.machine()}",
        "model": str(args.model) if args.model else "pretrained MiniLM cosine",
        "device": args.device or "cpu",
        "candidates": CANDIDATES,
        "seconds_per_level": args.seconds,
        "runs": {},
        "overload": {},
    }
    for config in configs:
        rows, overload = run_config(config, bodies, args.concurrency, args.seconds)
        results["runs"][config.name] = rows
        if overload:
            results["overload"][config.name] = overload
    again = results["runs"].pop(NOOP_AGAIN)
    results["noop_runs_rps"] = {
        "first": [r["rps"] for r in results["runs"][NOOP]],
        "last": [r["rps"] for r in again],
    }
    results["runs"][NOOP] = [
        max(first, last, key=lambda r: r["rps"])
        for first, last in zip(results["runs"][NOOP], again, strict=True)
    ]
    configs = [c for c in configs if c.name != NOOP_AGAIN]
    results["knee"] = {name: knee(rows) for name, rows in results["runs"].items()}
    results["shares"] = shares(results, configs)
    results["scorer_alone"] = scorer_alone(base, users, [1, 32])
    results["in_process"] = in_process(base, bodies, args.seconds)

    top = max(args.concurrency)

    def at_top(name: str) -> float:
        rows = results["runs"].get(name, [])
        return next((r["rps"] for r in rows if r["concurrency"] == top), float("nan"))

    alone = {(r["variant"], r["batch_size"]): r["tasks_per_s"] for r in results["scorer_alone"]}
    results["ratios"] = {
        f"end to end, batched / unbatched req/s at {top} clients": at_top(
            f"model in {placement}, batched"
        )
        / at_top(f"model in {placement}, unbatched"),
        "scorer alone, batch 32 / batch 1 tasks/s": alone[("float32", 32)] / alone[("float32", 1)],
    }
    # the request path's own CPU in units of what Serve + FastAPI cost a request on the
    # same box in the same run: comparable across machines and days, unlike milliseconds
    noop_cpu = results["runs"][NOOP][0]["replica_cpu_ms"]
    for row in results["in_process"]:
        results["ratios"][f"in process ({row['requests_as']}) / no-op replica CPU"] = (
            row["cpu_ms_per_request"] / noop_cpu
        )
    if ("int8", 32) in alone:
        results["ratios"]["scorer alone, int8 / float32 tasks/s at batch 32"] = (
            alone[("int8", 32)] / alone[("float32", 32)]
        )
    print_tables(results, configs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
