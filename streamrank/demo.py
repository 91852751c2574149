"""``streamrank demo``: the whole system on embedded defaults, end to end, then shut down.

broker (Tansu, unless STREAMRANK_KAFKA_BOOTSTRAP names one) -> Faust worker (subprocess)
-> Feast SQLite online store -> Ray Serve; a slice of real events goes in through the
producer SDK, and recommendations for a few users come out. With ``--ui`` it stays up
(with the experiment worker too) and prints the storefront's and the platform page's
addresses, until Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pandas as pd
from confluent_kafka import Producer
from tqdm.auto import tqdm

from infra.broker import EmbeddedBroker, ensure_topics
from infra.kafka_admin import read_topic, wait_until_consumed
from infra.probes import wait_until_checkpointed
from infra.processes import free_port, sigterm_as_interrupt, stop_process
from streamrank.datasets import iter_events, load_dataset
from streamrank.settings import Settings
from streams.producer import EventProducer
from streams.pseudonyms import Pseudonymizer

log = logging.getLogger(__name__)

MALFORMED_EXAMPLES: list[bytes] = [
    b"{not json",
    json.dumps(
        {
            "event_id": "bad-1",
            "user_id": "u1",
            "type": "teleport",
            "item_id": "1",
            "ts": "2026-01-01T00:00:00Z",
        }
    ).encode(),
    json.dumps({"event_id": "bad-2", "type": "view", "item_id": "1"}).encode(),
]


def stream_events(
    settings: Settings, events: pd.DataFrame, shift_to_now: bool = False
) -> tuple[int, dict[int, int]]:
    """Send ``events`` through the producer SDK with a progress bar.
    Returns (events sent, last delivered offset per partition)."""
    shift = time.time() - float(events["ts"].max()) if shift_to_now and len(events) else 0.0
    with EventProducer(
        settings.kafka_client_config(),
        settings.events_topic,
        user_ids=Pseudonymizer.from_settings(settings),
        batch_events=settings.producer_batch_events,
        linger_ms=settings.producer_linger_ms,
    ) as producer:
        for event in tqdm(iter_events(events, shift), total=len(events), desc="events", unit="ev"):
            producer.send(event)
        producer.flush()
        return producer.sent_events, dict(producer.delivered_offsets)


def send_raw(settings: Settings, values: list[bytes]) -> dict[int, int]:
    """Messages as any other producer might send them (here: broken ones, for the DLQ)."""
    delivered: dict[int, int] = {}

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is None:
            delivered[msg.partition()] = max(delivered.get(msg.partition(), -1), msg.offset())

    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random"})
    for value in values:
        producer.produce(settings.events_topic, key=b"demo", value=value, on_delivery=on_delivery)
    producer.flush(10)
    return delivered


def start_worker(settings: Settings, command: str = "worker") -> subprocess.Popen[bytes]:
    """``streamrank worker`` (or ``experiment-worker``) as a child, logging to
    ``<home>/logs/<command>.log``."""
    logs = settings.home_dir / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, **settings.as_env(), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out = open(worker_log(settings, command), "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "streamrank", command],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class WorkerStopped(RuntimeError):
    """A worker the demo waits for has exited (its log's last lines are in the message)."""


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a child's log, for an error message that says why without a search."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    | {line}" for line in text)


def worker_log(settings: Settings, command: str = "worker") -> Path:
    return settings.home_dir / "logs" / f"{command}.log"


def check_running(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    """Raise at once when the worker has exited, instead of waiting out a timeout."""
    code = worker.poll()
    if code is not None:
        raise WorkerStopped(
            f"the Faust worker exited with code {code}; the end of "
            f"{worker_log(settings)}:\n{log_tail(worker_log(settings))}"
        )


def reset_embedded_state(settings: Settings) -> None:
    """A new in-memory broker starts its offsets at 0 again, so profiles (which record the
    offsets they applied) from an earlier demo run are discarded with it."""
    for name in ("online.db", "registry.db", "offline"):
        path = settings.home_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def print_user(payload: Mapping[str, object]) -> None:
    profile = payload.get("profile") or {}
    strategy, version = payload["strategy"], payload["model_version"]
    print(f"\n=== user {payload['user_id']}  ({strategy}, model {version})")
    if profile:
        cats = ", ".join(f"{c} {w:.0%}" for c, w in profile["top_categories"])  # type: ignore[index]
        print(f"    profile: {profile['events']} events; top categories: {cats}")  # type: ignore[index]
        print(f"    recently: {'; '.join(profile['recent_items'][:3])}")  # type: ignore[index]
    for rank, item in enumerate(payload["items"], 1):  # type: ignore[arg-type]
        cats = "/".join(item["categories"][:2])
        title, score, reason = item["title"][:44], item["score"], item["reason"]
        print(f"    {rank:2d}. {title:44s} {cats[:22]:22s} {score:.3f}  {reason}")


ON_SITE_S = 24 * 3600.0
"""The demo asks for the users seen within this long of the stream's end: a
personalization call is made while its user is on the site."""


def users_on_site(window: pd.DataFrame, n: int) -> list[str]:
    """The demo's users: the most active of those whose newest event is within
    ``ON_SITE_S`` of the stream's end, then the most active of the rest. A user last seen
    weeks ago is ranked as a returning visitor (on MovieLens: the season's new releases,
    much the same for everyone), which is not what a call during a visit shows."""
    counts = window["user_id"].value_counts()
    newest = window.groupby("user_id")["ts"].max()
    recent = set(newest.index[newest >= float(window["ts"].max()) - ON_SITE_S])
    ordered = [u for u in counts.index if u in recent] + [
        u for u in counts.index if u not in recent
    ]
    return [str(u) for u in ordered[:n]]


def run_demo(
    settings: Settings,
    events: int = 20_000,
    users: int = 3,
    ui: bool = False,
    train: bool = True,
    train_users: int | None = None,
) -> int:
    """The whole system end to end. ``train``: serve a model trained on the data set (the
    fast configuration, reused while the data stays the same), else the no-model default;
    ``train_users`` trains on that many users only (a quicker, weaker model)."""
    from serving import app as serve_app
    from streamrank.prepare import prepare

    started = time.monotonic()
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    experiments: subprocess.Popen[bytes] | None = None
    serving = False
    with sigterm_as_interrupt():
        try:
            if settings.kafka_bootstrap is None:
                reset_embedded_state(settings)
                broker = EmbeddedBroker(log_path=settings.home_dir / "broker.log").start()
                settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
            settings = settings.model_copy(
                update={"serve_port": free_port(), "worker_web_port": free_port()}
            )
            print(f"[1/6] data and catalog ({settings.home_dir})")
            dataset = load_dataset(settings)
            catalog = prepare(settings, dataset)
            if train:
                from streamrank.demo_model import demo_model

                print("[2/6] ranking model (fast configuration)")
                model_dir = demo_model(settings, dataset, catalog, train_users)
                settings = settings.model_copy(update={"model_dir": model_dir})
            else:
                print("[2/6] no model: users are ranked from the stream (co-visitation)")
            ensure_topics(
                settings.kafka_client_config(),
                settings.topics(),
                compacted=settings.compacted_topics(),
            )
            print(f"[3/6] Faust worker and Ray Serve (broker {settings.bootstrap()})")
            worker = start_worker(settings)
            if ui:
                experiments = start_worker(settings, "experiment-worker")
            url = serve_app.start(settings)
            serving = True

            window = dataset.events.tail(events)
            print(f"[4/6] streaming the last {len(window)} real events of {dataset.name}")
            sent, delivered = stream_events(settings, window, shift_to_now=True)
            for part, offset in send_raw(settings, MALFORMED_EXAMPLES).items():
                delivered[part] = max(delivered.get(part, -1), offset)
            try:
                waited = wait_until_consumed(
                    settings.kafka_client_config(),
                    settings.consumer_group,
                    settings.events_topic,
                    delivered,
                    check=lambda: check_running(settings, worker),
                )
                from feature_repo.store import open_store
                from streams.sink import FeastProfileStore

                waited += wait_until_checkpointed(  # item rows (co-visitation) written too
                    FeastProfileStore(open_store(settings)), delivered, timeout=60
                )
            except TimeoutError as exc:
                logs = [worker_log(settings), settings.home_dir / "broker.log"]
                tails = "\n".join(f"the end of {p}:\n{log_tail(p, 25)}" for p in logs)
                raise WorkerStopped(f"{exc}\n{tails}") from exc
            print(
                f"      {sent} events + {len(MALFORMED_EXAMPLES)} malformed messages processed "
                f"({waited:.1f}s after the last send)"
            )
            for record in read_topic(
                settings.kafka_client_config(), settings.dlq_topic, len(MALFORMED_EXAMPLES)
            ):
                print(f"      {settings.dlq_topic}: {record.headers.get('reason', '?')[:90]}")

            print(f"[5/6] recommendations from {url} (the most active users of the last day)")
            active = users_on_site(window, users)
            with httpx.Client(base_url=url, timeout=30) as client:
                for user in [*active, "new-visitor"]:
                    reply = client.post("/v1/recommendations", json={"user_id": user, "k": 10})
                    reply.raise_for_status()
                    print_user(reply.json())
            if ui:
                print(
                    f"\n[6/6] up in {time.monotonic() - started:.0f}s\n"
                    f"      storefront:    {url}/\n"
                    f"      platform page: {url}/platform\n"
                    f"      API docs:      {url}/docs\n"
                    "      Ctrl-C stops everything"
                )
                while True:
                    check_running(settings, worker)
                    time.sleep(1)
            print(f"\n[6/6] done in {time.monotonic() - started:.0f}s; shutting down")
            return 0
        except KeyboardInterrupt:
            print("\ninterrupted; shutting down")
            return 130
        except WorkerStopped as exc:
            print(f"\n{exc}\nshutting down", file=sys.stderr)
            return 1
        finally:
            if serving:
                serve_app.stop()
            if worker is not None:
                stop_process(worker, "faust worker")
            if experiments is not None:
                stop_process(experiments, "experiment worker")
            if broker is not None:
                broker.stop()
