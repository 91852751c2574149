"""The Faust app: one agent that turns ``events`` into profiles. Deliberately thin.

Exactly-once effect, step by step:
1. ``take_events`` hands the agent a batch and acks it only when the agent asks for the
   next one, so Faust commits a batch's offsets only after the body below has returned;
2. the body writes every changed profile (with the offsets it applied) to the online store
   and waits for the dead letters' delivery, retrying until both succeed;
3. after a crash, the uncommitted tail is redelivered and ``ProfileProcessor`` skips, per
   user, what the stored profile says it has already applied.
The blocking work (validation, fold, store I/O) runs on one dedicated thread so the event
loop keeps heartbeating to the broker while a batch is written.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from prometheus_client import generate_latest

from streamrank.catalog import Catalog
from streamrank.settings import Settings, get_settings
from streams.processor import (
    BatchResult,
    ProfileProcessor,
    RawMessage,
    ValidationLimits,
)
from streams.sink import FeastProfileStore
from streams.state import ProfileState

log = logging.getLogger(__name__)


def build_processor(settings: Settings) -> ProfileProcessor:
    from feature_repo.store import open_store

    catalog = Catalog.load(settings.home_dir)
    state = ProfileState(FeastProfileStore(open_store(settings)))
    limits = ValidationLimits(
        max_future_skew_s=settings.max_future_skew_s,
        max_event_bytes=settings.max_event_bytes,
        max_message_bytes=settings.max_message_bytes,
    )
    return ProfileProcessor(state, catalog, limits)


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.bootstrap()}",
        store="memory://",
        topic_partitions=settings.events_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
    )
    events_topic = app.topic(
        settings.events_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.events_partitions,
    )
    dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profiles")
    holder: dict[str, ProfileProcessor] = {}

    async def processor() -> ProfileProcessor:
        if "p" not in holder:
            loop = asyncio.get_running_loop()
            holder["p"] = await loop.run_in_executor(executor, build_processor, settings)
        return holder["p"]

    async def send_dead_letters(result: BatchResult) -> None:
        pending = []
        for msg, dead in result.dead_letters:
            headers = {
                "reason": dead.reason.encode(),
                "source_partition": str(msg.partition).encode(),
                "source_offset": str(msg.offset).encode(),
            }
            pending.append(await dlq_topic.send(value=dead.raw, headers=headers))
        if pending:
            await asyncio.gather(*pending)  # delivered before the batch may be acked
            log.warning("%d dead letters sent to %s", len(pending), settings.dlq_topic)

    @app.agent(events_topic)
    async def profiles(stream: faust.StreamT[Any]) -> None:
        worker = await processor()
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(
            settings.worker_batch_max, within=settings.worker_batch_within_s
        ):
            messages = [
                RawMessage(e.message.partition, e.message.offset, e.message.value) for e in batch
            ]
            result = await loop.run_in_executor(executor, worker.process, messages)
            await send_dead_letters(result)
            log.debug(
                "batch: %d messages, %d applied, %d profiles written",
                result.messages,
                result.applied,
                result.profiles_written,
            )

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        if "p" in holder and revoked:
            state = holder["p"].state
            parts = {tp.partition for tp in revoked if tp.topic == settings.events_topic}
            await asyncio.get_running_loop().run_in_executor(executor, state.forget, parts)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain")

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "ready": "p" in holder})

    return app


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run one profile worker in the foreground until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
