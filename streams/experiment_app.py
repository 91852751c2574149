"""The live experiment join: a Faust agent over the impressions and events topics.

Both topics are keyed and partitioned by user with the same hash and partition count, so
one agent reads them side by side, partition by partition, and every user's impressions
and clicks meet in the same place. Each user's join record (``streams/experiments.py``)
lives in a Faust table backed by a changelog topic: one table write per message that
changes it, so a restarted worker gets back the counts together with the ids they were
counted from, and the redelivered tail is counted once.

It is a Faust app of its own (consumer group ``experiments_group`` and the topics' partition
count, ``join_group``), not a second agent in the profile worker: it reads every event
message too, and the profile worker's throughput is the system's ceiling, so it scales and
fails apart. When the topics grow (``streams/growth.py``) the process exits with 70; started
again by its supervisor, it joins under the new count's group, whose table it builds from
what the topics hold (a Faust table cannot change its partition count). Per-arm impressions,
clicks, conversions, CTR and CVR are Prometheus gauges on its ``/metrics`` page, summed
over the partitions this worker owns (across workers: ``sum by (arm)``).

Privacy (``streams/privacy.py``): an opt-out or erasure on the events topic removes the
user's record (a changelog tombstone), and the events of opted-out or wiped users are left
out, by the same rule as the profile worker's; so are their impressions, by time, also when
one is read after the request (as ``streamrank experiments`` leaves them out). A partition
that comes back after another worker owned it has its users' states restored afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import faust
from prometheus_client import REGISTRY, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.broker import latest_offsets_lag
from streamrank.settings import Settings, get_settings
from streams.events import PrivacyAction, PrivacyRequest, dead_letter_value
from streams.experiments import ArmResult, ExperimentJoin, arm_totals
from streams.growth import partition_counts
from streams.impressions import parse_impression
from streams.messages import RawMessage, ValidationLimits
from streams.privacy import PrivacyRegistry, kept_events
from streams.producer import partition_for
from streams.supervision import exit_unfinished
from streams.transport import stream_app

log = logging.getLogger(__name__)

WIPES = {PrivacyAction.OPT_OUT, PrivacyAction.ERASE}
JOINED = Counter(
    "streamrank_experiment_messages_total",
    "Messages read by the experiment join, by topic and outcome",
    ["topic", "outcome"],  # joined | dead | withheld
)


class ArmGauges(Collector):
    """Per-arm totals computed at scrape time from the table's records, only for users of
    partitions this worker owns now: a revoked partition's records may linger locally."""

    def __init__(self, join: ExperimentJoin, partitions: int, owned: Any):
        self.join = join
        self.partitions = partitions
        self.owned = owned  # () -> set of partition numbers

    def totals(self) -> dict[str, ArmResult]:
        owned = self.owned()
        return arm_totals(
            record
            for user, record in list(self.join.users.items())
            if partition_for(user, self.partitions) in owned
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only, so registering does not compute totals (Faust is not started yet)."""
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        for arm, result in sorted(self.totals().items()):
            for name in ("impressions", "clicked", "converted", "ctr", "cvr"):
                families[name].add_metric([arm], float(getattr(result, name)))
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            name: GaugeMetricFamily(f"streamrank_experiment_{name}", help_text, labels=["arm"])
            for name, help_text in (
                ("impressions", "Recommendation responses shown, per experiment arm"),
                ("clicked", "Impressions with a click or add-to-cart within the window"),
                ("converted", "Impressions with a purchase within the window"),
                ("ctr", "Clicked / impressions"),
                ("cvr", "Converted / impressions"),
            )
        }


def join_group(settings: Settings, partitions: int) -> str:
    """The join's consumer group (also its Faust app id, which names its table's changelog)
    for topics of ``partitions`` partitions. A Faust table keeps the count it was made with,
    so the join of a grown topic is a new one, at the new count."""
    return f"{settings.experiments_group}-p{partitions}"


def create_experiment_app(settings: Settings) -> faust.App:
    # A restarted worker restores the join's table by reading its changelog up to the
    # latest offsets. On Tansu those stop at the last batch's first message, so there the
    # changelog is written one message per batch, or the restore would miss the last
    # counts while the source offsets they came from are committed (lost for good).
    one_per_batch = latest_offsets_lag(settings.kafka_client_config())
    # as many partitions as the topics have now, under a group of that count: a topic grown
    # since (``streams/growth.py``) makes this join exit for one at the new count
    partitions = partition_counts(settings).get(settings.events_topic, settings.events_partitions)
    app = stream_app(
        settings,
        join_group(settings, partitions),
        settings.experiments_web_port,
        table_standby_replicas=0,
        broker_commit_interval=settings.experiments_commit_interval_s,
        **({"producer_max_batch_size": 1} if one_per_batch else {}),
    )
    source = app.topic(
        settings.events_topic,
        settings.impressions_topic,
        key_serializer="raw",
        value_serializer="raw",
    )
    dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    users = app.Table(  # JSON keys and values (Faust's default codec for both)
        "experiment-join", partitions=partitions
    )
    join = ExperimentJoin(settings.experiment_window_s, users=users)
    limits = ValidationLimits.from_settings(settings)  # judged as the profile worker judges
    privacy = PrivacyRegistry.from_settings(settings)

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives()}

    privacy_lock = asyncio.Lock()  # a restore and a drop of states never overlap

    async def know(partition: int) -> None:
        """The partition's users' privacy states, restored from the privacy topic the first
        time one of its messages comes after it was assigned (off the event loop)."""
        async with privacy_lock:
            if not privacy.knows(partition):
                await asyncio.to_thread(privacy.ensure_partitions, [partition])

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        """While another worker owns a partition, it applies the partition's privacy
        requests and commits past them: if the partition comes back, its states must be
        restored afresh, or an opt-out made meanwhile would go unseen here."""
        async with privacy_lock:
            privacy.forget({tp.partition for tp in revoked})

    gauges = ArmGauges(join, partitions, owned)
    REGISTRY.register(gauges)

    async def join_message(event: Any) -> None:
        """One message of either topic into the join, or to the dead-letter topic."""
        msg = event.message
        topic = msg.topic
        await know(msg.partition)
        if topic == settings.impressions_topic:
            impression = parse_impression(event.value)
            if isinstance(impression, str):
                JOINED.labels(topic, "dead").inc()
                log.warning("bad impression at offset %d: %s", msg.offset, impression)
                headers = {"reason": impression.encode(), "source_topic": topic.encode()}
                value = dead_letter_value(event.value or b"", headers)
                await dlq_topic.send(value=value, headers=headers)
                return
            # The two topics are read side by side, so a user's opt-out or erasure may be
            # read before an impression shown earlier: it is left out, as the offline
            # report leaves it out, instead of starting a new record of that user.
            if privacy.withholds_at(impression.user_id, impression.ts.timestamp()):
                JOINED.labels(topic, "withheld").inc()
                return
            join.add_impression(impression)
        else:  # invalid events are the profile worker's to dead-letter
            raw = RawMessage(msg.partition, msg.offset, event.value, msg.timestamp)
            records = limits.decode(raw, time.time()).records
            for record in records:
                if isinstance(record, PrivacyRequest) and record.type in WIPES:
                    join.forget(record.user_id)
            for clicked in kept_events(privacy, msg.partition, msg.offset, records):
                join.add_event(clicked)
        JOINED.labels(topic, "joined").inc()

    async def start_again(grown: int) -> None:
        await exit_unfinished(
            app,
            f"{settings.events_topic} grew from {partitions} to {grown} partitions: the join "
            f"starts again as {join_group(settings, grown)}, rebuilt from the topics",
            expected=True,
        )

    @app.agent(source)
    async def experiment_join(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            if event.message.partition >= partitions:  # grown: the table has no such partition
                counts = await asyncio.to_thread(partition_counts, settings)
                await start_again(counts[settings.events_topic])
            try:
                await join_message(event)
            except Exception:  # in the loop: the message is never acknowledged
                await exit_unfinished(app, f"a message at offset {event.message.offset} failed")

    @app.timer(settings.topic_metadata_refresh_s)
    async def follow_growth() -> None:
        """A grown topic: the process exits (70) for its supervisor to start the join at
        the new count, whose new group builds its table from what the topics hold."""
        try:
            counts = await asyncio.to_thread(partition_counts, settings)
        except Exception as exc:  # the broker is away: the next tick asks again
            log.warning("partition count not read (%r)", exc)
            return
        grown = counts.get(settings.events_topic, partitions)
        if grown != partitions:  # before its first message on a new partition
            await start_again(grown)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain")

    @app.page("/v1/experiments")
    async def experiments_page(web: Any, request: Any) -> Any:
        """The same table as ``streamrank experiments --json``, from the live join."""
        arms = {arm: r.as_dict() for arm, r in sorted(gauges.totals().items())}
        return web.json({"experiment": settings.experiment_name, "arms": arms})

    @app.on_before_shutdown.connect
    async def unregister(sender: Any, **_: Any) -> None:
        REGISTRY.unregister(gauges)

    return app


def run_experiment_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run the experiment join in the foreground until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    worker = faust.Worker(create_experiment_app(settings), loglevel=loglevel)
    worker.execute_from_commandline()
