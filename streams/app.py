"""The Faust app: one agent that turns ``events`` into state, plus the HTTP collector and
the worker's metrics on Faust's web server. Deliberately thin.

Exactly-once effect, step by step:
1. ``take_events`` hands the agent a batch and acks it only when the agent asks for the
   next one, so Faust commits a batch's offsets only after the body below has returned;
2. the body writes every changed row (each with the offsets it applied) and waits for the
   delivery of the dead letters and of the users' new privacy states (``streams/privacy.py``),
   retrying until all succeed;
3. after a crash, the uncommitted tail is redelivered and ``ProfileProcessor`` skips what
   the stored rows say they already contain. A batch that fails (judging never does: any
   exception is the machinery's) ends the process unacknowledged, as a crash would
   (``streams/supervision.py``), never an agent restarted past it;
4. Faust acks (and so may commit) messages it *skips* around a rebalance. So that no
   committed offset can run ahead of what is written, every rebalance ends by committing
   each partition's own checkpoint + 1, just before Faust seeks to the committed offsets.
The blocking work (validation, folds, store I/O) runs on one dedicated thread so the event
loop keeps heartbeating to the broker while a batch is written. The item rows and the
checkpoints are written by a process beside the worker (``streams/item_process.py``),
which gets each batch's item effects once the batch's profiles are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import faust
from prometheus_client import generate_latest

from feature_repo.redis_store import ReplicationLost
from infra.private_apis import commit_offsets
from streamrank.settings import Settings, get_settings
from streams import metrics
from streams.access import AccessPolicy, RateLimiter, credential_from_headers
from streams.collector import COLLECTOR_PRODUCER_CONFIG, Collector
from streams.events import dead_letter_value, encode_events
from streams.growth import fence_of
from streams.item_process import ItemProcess, ItemProcessDied
from streams.memory import HeapTrimmer, gc_pace
from streams.messages import RawMessage
from streams.privacy import encode_state, erase_from_namespaces
from streams.processor import BatchResult, ProfileProcessor, build_processor
from streams.producer import EventProducer
from streams.pseudonyms import Pseudonymizer
from streams.sink import open_profile_store
from streams.stalls import StallWatch
from streams.store_errors import StoreFailed, retry_store
from streams.supervision import exit_unfinished, stopping
from streams.transport import stream_app

log = logging.getLogger(__name__)

FORWARD_CHUNK = 500
"""Moved users' events per forwarded message (well under the message size limit)."""


def build_live_processor(settings: Settings) -> ProfileProcessor:
    items = (
        ItemProcess(
            partial(open_profile_store, settings),
            settings.worker_max_covisits,
            settings.worker_item_flush_s,
            settings.gc_thresholds,
        )
        if settings.worker_item_process
        else None
    )
    return build_processor(
        settings,
        open_profile_store(settings),
        live=True,
        on_wiped=lambda users: erase_from_namespaces(settings, users),
        items=items,
    )


def create_app(settings: Settings) -> faust.App:
    app = stream_app(settings, settings.consumer_group, settings.worker_web_port)
    events_topic = app.topic(
        settings.events_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.events_partitions,
    )
    dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    privacy_topic = app.topic(settings.privacy_topic, key_serializer="raw", value_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profiles")
    holder: dict[str, Any] = {}

    async def on_thread(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except ItemProcessDied:
            # Unwritten item effects live on only in the profiles' outboxes, which a
            # restart (rewinding to the checkpoints) applies again.
            await exit_unfinished(app, "the item process died")
        except ReplicationLost as lost:  # a store failover may have lost rows
            await exit_unfinished(app, str(lost), expected=True)
        except StoreFailed as failure:
            if "failed" not in holder:
                holder["failed"] = str(failure)
                metrics.STORE_FAILED.set(1)
                log.critical(
                    "%s. This worker takes no more events until the store is fixed and it "
                    "is restarted; its checkpoints stay where they are.",
                    failure,
                )
            raise

    async def halt(what: str) -> None:
        """After a lasting store error: keep the batch in hand unacknowledged (so nothing
        past the checkpoints is committed) and the web server up (``/healthz`` says why),
        until the worker is stopped."""
        while not await stopping(app, within_s=1.0):
            pass
        await exit_unfinished(app, what)

    building = asyncio.Lock()

    async def processor() -> ProfileProcessor:
        """Built once, by whichever comes first: the agent or the first rebalance."""
        async with building:
            if "processor" not in holder:
                holder["processor"] = await on_thread(build_live_processor, settings)
        return holder["processor"]

    async def send_dead_letters(result: BatchResult) -> None:
        pending = []
        for msg, dead in result.dead_letters:
            headers = {
                "reason": dead.reason.encode(),
                "source_partition": str(msg.partition).encode(),
                "source_offset": str(msg.offset).encode(),
            }
            value = dead_letter_value(dead.raw, headers)
            pending.append(await dlq_topic.send(value=value, headers=headers))
        if pending:
            await asyncio.gather(*pending)  # delivered before the batch may be acked
            log.warning("%d dead letters sent to %s", len(pending), settings.dlq_topic)

    async def publish_privacy(result: BatchResult) -> None:
        """Each changed user's state on the compacted privacy topic, on the user's
        partition, delivered before the batch may be acked (the restore reads it back)."""
        pending = []
        for state in result.privacy:
            key, value = encode_state(state)
            pending.append(
                await privacy_topic.send(key=key, value=value, partition=state.partition)
            )
        if pending:
            await asyncio.gather(*pending)
            for state in result.privacy:
                metrics.PRIVACY_SECONDS.observe(max(0.0, time.time() - state.requested_at))

    @app.agent(events_topic)
    async def profiles(stream: faust.StreamT[Any]) -> None:
        worker = await processor()
        async for batch in stream.take_events(
            settings.worker_batch_max, within=settings.worker_batch_within_s
        ):
            try:
                if "failed" in holder:  # seen outside a batch (a flush, a rebalance)
                    raise StoreFailed("taking events", "halted", RuntimeError(holder["failed"]))
                await handle(worker, batch)
            except StoreFailed:
                await halt(f"a batch of {len(batch)} messages not written")
            except Exception:  # within the loop, so that the batch is never acknowledged
                await exit_unfinished(app, f"a batch of {len(batch)} messages failed")
            finally:
                holder["idle_since"] = time.monotonic()

    async def send_forwards(result: BatchResult) -> None:
        """Moved users' events found past their old partition's fence, to the users'
        partitions (``streams/growth.py``), delivered before the batch may be acked."""
        pending = []
        for partition, records in result.forwards.items():
            for start in range(0, len(records), FORWARD_CHUNK):
                value = encode_events(records[start : start + FORWARD_CHUNK])
                pending.append(await events_topic.send(value=value, partition=partition))
        if pending:
            await asyncio.gather(*pending)
            log.info("%d events of moved users forwarded", sum(map(len, result.forwards.values())))

    async def fold(worker: ProfileProcessor, messages: list[RawMessage]) -> None:
        """Messages judged and folded (every one ends as applied events, dead letters or
        forwards; or held, ``streams/growth.py``), the state written, the dead letters,
        forwards and privacy states delivered."""
        result = await on_thread(worker.process, messages)
        log.debug("batch of %d messages: %s", len(messages), result)
        await send_dead_letters(result)
        await send_forwards(result)
        await publish_privacy(result)

    async def handle(worker: ProfileProcessor, batch: list[Any]) -> None:
        """One batch from the agent's stream."""
        holder["idle_since"] = None  # busy
        messages = [
            RawMessage(
                e.message.partition,
                e.message.offset,
                e.message.value,
                e.message.timestamp,
                fence_of(e.message.headers),
            )
            for e in batch
        ]
        await fold(worker, messages)
        last: dict[Any, int] = {}
        for e in batch:
            last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
        for tp, offset in last.items():
            high = app.consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(str(tp.partition)).set(max(0, high - offset - 1))

    trim_heap = HeapTrimmer()
    stalls = StallWatch(after_s=max(5.0, 10 * settings.worker_batch_within_s))

    async def resume_stalled() -> None:
        """Seek back to partitions whose messages stopped arriving (``streams/stalls.py``);
        only between batches, when the state's next offsets are settled."""
        worker = holder.get("processor")
        idle_since = holder.get("idle_since", 0.0)
        if worker is None or idle_since is None:
            return
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic]
        rewound = holder.get("rewound", {})  # for partitions no batch has loaded yet
        positions = {}
        for tp in assigned:
            taken = worker.next_offset(tp.partition)
            expected = rewound.get(tp) if taken is None else taken
            positions[tp] = (expected, app.consumer.highwater(tp))
        for tp, offset in stalls.stalled(positions, time.monotonic()).items():
            log.warning(
                "partition %d: messages from offset %d were not delivered; seeking back",
                tp.partition,  # type: ignore[attr-defined]
                offset,
            )
            metrics.STALLED_SEEKS.inc()
            await app.consumer.seek(tp, offset)

    @app.timer(interval=max(0.1, settings.worker_item_flush_s / 2))
    async def flush_item_rows() -> None:
        """A quiet stream still gets its item rows and checkpoints written; the memory of
        evicted cache entries goes back to the system (``streams/memory.py``)."""
        if "failed" in holder:
            return
        if "processor" in holder:
            worker = holder["processor"]
            with contextlib.suppress(StoreFailed):  # marked; the agent halts on its next batch
                await on_thread(worker.state.flush_items_if_due)
                if worker.gates is not None and worker.gates.holding and holder.get("idle_since"):
                    await fold(worker, [])  # a quiet stream: held ones whose parent passed
        await on_thread(trim_heap)
        await resume_stalled()

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        if "processor" in holder and revoked:
            parts = {tp.partition for tp in revoked if tp.topic == settings.events_topic}
            await on_thread(holder["processor"].forget, parts)

    @app.on_rebalance_complete.connect
    async def rewind_to_checkpoints(sender: Any, **_: Any) -> None:
        """Make the group's committed offsets equal to what is written (step 4 above)."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic]
        if not assigned:
            return
        worker = await processor()
        parts = [tp.partition for tp in assigned]
        try:
            checkpoints = await on_thread(
                retry_store, lambda: worker.state.store.read_checkpoints(parts), "checkpoints"
            )
        except StoreFailed:
            return  # marked: the agent halts before it takes a batch
        # no checkpoint (-1) means nothing is fully written yet: start from the beginning
        offsets = {tp: checkpoints[tp.partition] + 1 for tp in assigned}
        holder["rewound"] = offsets
        # Commit, so that Faust's own seek to the committed offsets lands there too, and
        # seek, because without it a partition was seen not to be re-read (Tansu).
        await commit_offsets(app.consumer, offsets)
        for tp, offset in offsets.items():
            await app.consumer.seek(tp, offset)
        log.info("resuming from checkpoints %s", {tp.partition: o for tp, o in offsets.items()})

    def collector() -> Collector:
        if "collector" not in holder:
            producer = EventProducer(
                settings.kafka_client_config(),
                settings.events_topic,
                user_ids=Pseudonymizer.from_settings(settings),
                batch_events=settings.producer_batch_events,
                linger_ms=settings.producer_linger_ms,
                config=COLLECTOR_PRODUCER_CONFIG,
                partition_refresh_s=settings.topic_metadata_refresh_s,
            )
            holder["collector"] = Collector(
                producer,
                max_event_bytes=settings.max_event_bytes,
                max_future_skew_s=settings.max_future_skew_s,
                access=AccessPolicy.from_settings(settings),
                limiter=RateLimiter(settings.collector_rate_per_s, settings.collector_burst),
                max_pending=settings.collector_max_pending,
            )
        return holder["collector"]

    # Browsers post beacons from the shop's own pages, another origin than the collector's:
    # CORS (aiohttp-cors under Faust's web server) answers their preflight requests.
    beacons_from = {
        origin: faust.web.ResourceOptions(
            allow_credentials=False,
            allow_headers=("Content-Type", "Authorization", "X-API-Key"),
            allow_methods=("POST",),
            max_age=600,
        )
        for origin in settings.collector_cors_origins
    }

    @app.page("/v1/events", cors_options=beacons_from)
    class Events(faust.web.View):
        """Browser beacons: one event or a JSON array of events."""

        async def post(self, request: Any) -> Any:
            credential = credential_from_headers(
                request.headers.get("Authorization"), request.headers.get("X-API-Key")
            )
            reply = collector().accept(await request.read(), request.remote or "", credential)
            headers = {}
            if "retry_after_s" in reply.body:  # 429 (rate limits), 503 (stream unavailable)
                headers["Retry-After"] = str(reply.body["retry_after_s"])
            return self.json(reply.body, status=reply.status, headers=headers)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain")

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        """Readiness: 503 once a lasting store error has halted the worker."""
        if "failed" in holder:
            return web.json(
                {"status": "failed", "ready": False, "error": holder["failed"]}, status=503
            )
        return web.json({"status": "ok", "ready": "processor" in holder})

    @app.on_before_shutdown.connect
    async def close_clients(sender: Any, **_: Any) -> None:
        """After the consumer stopped: the collector's producer, and the item process once
        any batch still on the thread is done."""
        if "collector" in holder:
            holder["collector"].producer.close()
        if "processor" in holder:
            await on_thread(holder["processor"].state.items.close)

    return app


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run one profile worker in the foreground until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    with gc_pace(settings.gc_thresholds):
        worker.execute_from_commandline()
