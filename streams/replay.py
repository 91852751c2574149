"""``streamrank replay``: rebuild the stream's state for a range of the topic, in a namespace.

The range is given in log time (Kafka message timestamps) and turned into offsets per
partition (``streams/offsets.py``). Each partition is then read from its first offset to
its last and run through the live worker's own ``ProfileProcessor``: the same validation
(an event is judged against its message's log time, so the same events are dead-lettered),
the same dedupe, the same folds, with event time. What it writes goes to the namespace's
own store (``feature_repo/namespaces.py``); the live store and the live consumer group are
never opened (reads use ``assign``, commit nothing, and belong to no group).

Fast: no group protocol, batches of ``replay_batch_messages`` messages (an SDK message
carries up to 200 events), writes every ``replay_flush_s`` seconds (each user's row once
per write, however many of their events it covers), and partitions spread over
``replay_workers`` processes (the fold is pure Python: one process per core).

Privacy: the workers start from every user's privacy state *now* (the compacted privacy
topic, ``streams/privacy.py``), so the events an opt-out or erasure wiped, then or since,
are withheld, and what users decide within the range is applied as it was live. Users whose
state changes while the replay runs are removed from the namespace at its end.

Resumable: every write ends with the namespace's checkpoint per partition, written after
the rows it covers, exactly as in the live worker. A replay killed at any point and started
again with the same range skips what is stored, and the profiles' applied offsets stop the
batch in flight from counting twice. The checkpoint rows also hold the partition's running
counts of events and dead letters, so the summary is exact after any number of restarts.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.queues
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from tqdm.auto import tqdm

from feature_repo.namespaces import Manifest, Namespace, ReplayRange
from streamrank.settings import Settings
from streams.events import Event
from streams.growth import fence_of
from streams.memory import gc_pace
from streams.messages import RawMessage, ValidationLimits
from streams.offsets import Lookup, TopicLog, find_offset, message_time
from streams.privacy import PrivacyLog, PrivacyRegistry, PrivacyState, kept_events
from streams.processor import build_processor
from streams.sink import FeastProfileStore

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """The replay cannot go on as asked (another range in the namespace, a broken log)."""


# --- planning ---------------------------------------------------------------------------------
def plan(
    settings: Settings,
    start_time: float | None,
    end_time: float | None = None,
    lookup: Lookup | None = None,
) -> ReplayRange:
    """Offsets for ``[start_time, end_time)`` in every partition (the whole log by default;
    the end defaults to now, so messages arriving during the replay are not part of it)."""
    end_time = time.time() if end_time is None else end_time
    if start_time is not None and start_time > end_time:
        raise ReplayError("the range starts after it ends")
    start: dict[int, int] = {}
    stop: dict[int, int] = {}
    first: dict[int, int] = {}
    methods: dict[int, str] = {}
    with TopicLog(settings.kafka_client_config(), settings.events_topic) as topic:
        for partition in topic.partitions():
            bounds = topic.bounds(partition)
            first[partition] = bounds[0]
            if start_time is None:
                start[partition] = bounds[0]
                begin = "log start"
            else:
                found = find_offset(topic, partition, start_time, bounds, lookup)
                start[partition], begin = found.offset, found.method
            end = find_offset(topic, partition, end_time, bounds, lookup)
            stop[partition] = end.offset
            methods[partition] = f"{begin} / {end.method}"
    return ReplayRange(
        topic=settings.events_topic,
        start_time=start_time,
        end_time=end_time,
        first=first,
        start=start,
        stop=stop,
        methods=methods,
    )


# --- reading ----------------------------------------------------------------------------------
def read_messages(
    settings: Settings,
    partition: int,
    start: int,
    stop: int,
    batch: int,
    idle_timeout_s: float = 30.0,
) -> Iterator[list[RawMessage]]:
    """Messages ``[start, stop)`` of one partition, in batches of up to ``batch``."""
    if start >= stop:
        return
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"streamrank-replay-{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "queued.max.messages.kbytes": 262_144,
        }
    )
    try:
        consumer.assign([TopicPartition(settings.events_topic, partition, start)])
        pending: list[RawMessage] = []
        last_seen = time.monotonic()
        position = start
        while position < stop:
            # never ask for more than the range holds: consume() waits out its timeout
            # for a count it cannot fill (0.5 s at the end of every partition)
            want = min(batch - len(pending), stop - position, 1000)
            got = consumer.consume(num_messages=want, timeout=0.5)
            if not got and time.monotonic() - last_seen > idle_timeout_s:
                raise ReplayError(
                    f"{settings.events_topic}[{partition}]: nothing from offset {position} "
                    f"in {idle_timeout_s:.0f}s (the range ends at {stop})"
                )
            for msg in got:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and msg.offset() < stop:
                        raise ReplayError(
                            f"{settings.events_topic}[{partition}] ends at {msg.offset()}, "
                            f"before the range's end {stop}"
                        )
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    continue
                last_seen = time.monotonic()
                if msg.offset() >= stop:
                    position = stop
                    break
                position = msg.offset() + 1
                fence = fence_of(msg.headers())
                pending.append(
                    RawMessage(partition, msg.offset(), msg.value(), message_time(msg), fence)
                )
                if len(pending) >= batch:
                    yield pending
                    pending = []
        if pending:
            yield pending
    finally:
        consumer.close()


def read_events(
    settings: Settings, replayed: ReplayRange, progress: bool = False
) -> Iterator[Event]:
    """The valid events of a range, in log order per partition, judged as the worker
    judges them (dead letters are left out, as they are by the fold), without the events
    users' privacy states withhold."""
    limits = ValidationLimits.from_settings(settings)
    privacy = PrivacyRegistry.from_settings(settings)
    bar = tqdm(total=replayed.messages, desc="reading", unit="msg", disable=not progress)
    for partition in sorted(replayed.start):
        start, stop = replayed.start[partition], replayed.stop[partition]
        privacy.ensure_partitions([partition])
        for batch in read_messages(settings, partition, start, stop, 1000):
            for msg in batch:
                records = limits.decode(msg, time.time()).records
                yield from kept_events(privacy, msg.partition, msg.offset, records)
            bar.update(len(batch))
    bar.close()


def purge_changed(
    settings: Settings,
    namespace: Namespace,
    before: dict[str, PrivacyState],
    after: dict[str, PrivacyState],
) -> list[str]:
    """Remove from the namespace the users who opted out or were erased while it was being
    filled (its workers started from ``before``). Returns them."""
    changed = []
    for user, now in sorted(after.items()):
        then = before.get(user) or PrivacyState.initial(user, now.partition)
        if now.wiped_through > then.wiped_through or (now.opted_out and not then.opted_out):
            changed.append(user)
    if changed:
        FeastProfileStore(namespace.open_store()).delete_profiles(changed)
        log.info(
            "namespace %s: %d users removed (privacy requests during the replay)",
            namespace.name,
            len(changed),
        )
    return changed


# --- running ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionDone:
    partition: int
    messages: int  # read and folded by this run (resumed work is skipped, not re-read)
    seconds: float


def replay_partition(
    settings: Settings,
    namespace: str,
    partition: int,
    start: int,
    stop: int,
    report: Callable[[int], None] | None = None,
    profiles_only: bool = False,
) -> PartitionDone:
    """Fold one partition's messages ``[start, stop)`` into the namespace, resuming after
    its stored checkpoint. Runs in a worker process (arguments are picklable), at the
    collector pace of the settings (``streams/memory.py``)."""
    with gc_pace(settings.replay_gc_thresholds):
        return _replay_partition(settings, namespace, partition, start, stop, report, profiles_only)


Span = tuple[int, int, int]
"""A partition and the offsets ``[start, stop)`` of it to replay."""


def partition_families(settings: Settings, replayed: ReplayRange) -> list[list[Span]]:
    """The partitions to replay, grouped so that one process folds a partition added by
    growth after the partitions it was split from (``streams/growth.py``): a moved user's
    events before and after the growth are then never folded by two processes at once.
    Largest family first, so that no process is left with a long one while the others
    idle."""
    from streams.growth import lineage_reader

    parts = [p for p in sorted(replayed.start) if replayed.stop[p] > replayed.start[p]]
    lineage = lineage_reader(settings)(parts) if parts else {}
    families: dict[int, list[int]] = {}
    for p in parts:
        line = lineage.get(p)
        families.setdefault(line.ancestors[-1] if line else p, []).append(p)

    def generation(p: int) -> int:
        return len(lineage[p].ancestors) if p in lineage else 0

    spans = [
        [(p, replayed.start[p], replayed.stop[p]) for p in sorted(members, key=generation)]
        for members in families.values()
    ]
    return sorted(spans, key=lambda family: -sum(stop - start for _, start, stop in family))


def replay_family(
    settings: Settings,
    namespace: str,
    family: list[Span],
    report: Callable[[int], None] | None = None,
    profiles_only: bool = False,
) -> list[PartitionDone]:
    """``replay_partition`` for each partition of a family, parents first."""
    return [
        replay_partition(settings, namespace, p, start, stop, report, profiles_only)
        for p, start, stop in family
    ]


def _replay_partition(
    settings: Settings,
    namespace: str,
    partition: int,
    start: int,
    stop: int,
    report: Callable[[int], None] | None,
    profiles_only: bool,
) -> PartitionDone:
    started = time.perf_counter()
    store = FeastProfileStore(Namespace(settings, namespace).open_store(), settings.write_path)
    processor = build_processor(
        settings,
        store,
        item_side=not profiles_only,
        max_profiles=settings.replay_max_profiles,
        max_covisits=settings.replay_max_profiles,
        item_flush_s=0.0,  # item rows and the checkpoint with every batch
    )
    processor.state.ensure_partitions([partition])
    resume = max(start, processor.state.checkpoints[partition] + 1)
    if resume > start:
        log.info(
            "partition %d: resuming at offset %d (range %d-%d)", partition, resume, start, stop
        )
        if report:
            report(resume - start)
    done = 0
    written_at = time.monotonic()
    batches = read_messages(settings, partition, resume, stop, settings.replay_batch_messages)
    for batch in batches:
        due = time.monotonic() - written_at >= settings.replay_flush_s
        processor.process(batch, write=due)
        if due:
            written_at = time.monotonic()
        done += len(batch)
        if report:
            report(len(batch))
    processor.flush()
    return PartitionDone(partition, done, time.perf_counter() - started)


def replay(
    settings: Settings,
    namespace: Namespace,
    replayed: ReplayRange,
    workers: int | None = None,
    progress: bool = True,
    profiles_only: bool = False,
) -> Manifest:
    """Fill ``namespace`` with the state of ``replayed``; resume if it was interrupted.
    ``profiles_only``: the profiles alone, no item rows (about twice as fast; what a
    backtest or verify-consistency reads); a resumed replay keeps the mode it began with."""
    if namespace.exists:
        manifest = namespace.manifest()
        if (manifest.range.start, manifest.range.stop) != (replayed.start, replayed.stop):
            held = manifest.range
            since = "" if held.start_time is None else f"--from {held.start_time} "
            raise ReplayError(
                f"namespace {namespace.name} holds another range (offsets {held.start} to "
                f"{held.stop}); to resume it, give the same range ({since}--to "
                f"{held.end_time}), or delete it first"
            )
        if manifest.complete:
            log.info("namespace %s is complete already", namespace.name)
            return manifest
        replayed = manifest.range  # the same offsets; keep the times first asked for
        profiles_only = manifest.profiles_only
    else:
        manifest = Manifest(namespace=namespace.name, range=replayed, profiles_only=profiles_only)
        namespace.create(manifest)
    started = time.perf_counter()
    privacy_before = PrivacyLog.from_settings(settings).read()
    families = partition_families(settings, replayed)
    workers = max(1, min(workers or settings.replay_workers, len(families) or 1))
    bar = tqdm(
        total=replayed.messages, desc=f"replay {namespace.name}", unit="msg", disable=not progress
    )
    if workers == 1:
        for family in families:
            replay_family(settings, namespace.name, family, bar.update, profiles_only)
    else:
        _in_processes(settings, namespace.name, families, workers, bar, profiles_only)
    bar.close()
    purge_changed(settings, namespace, privacy_before, PrivacyLog.from_settings(settings).read())
    totals = FeastProfileStore(namespace.open_store()).read_partition_counts(sorted(replayed.start))
    manifest.events = sum(c.events for c in totals.values())
    manifest.dead_letters = sum(c.dead_letters for c in totals.values())
    manifest.seconds = time.perf_counter() - started
    manifest.finished_at = datetime.now(UTC)
    namespace.save(manifest)
    log.info(
        "replayed %d events into %s in %.1fs (%d dead letters)",
        manifest.events,
        namespace.name,
        manifest.seconds,
        manifest.dead_letters,
    )
    return manifest


def _start_method() -> str:
    """``fork`` where there is one: a spawned process spends ~7 s importing Feast before
    its first message, which is most of a replay of a few hundred thousand events. Forking
    is safe here: the parent has closed its Kafka clients (``plan``), and every child opens
    its own store and consumer rather than using anything inherited."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods else "spawn"


def _in_processes(
    settings: Settings,
    name: str,
    families: list[list[Span]],
    workers: int,
    bar: tqdm,  # type: ignore[type-arg]
    profiles_only: bool,
) -> None:
    """One family of partitions per task over ``workers`` processes, progress through a
    queue that each process is given when it starts (a queue travels only that way; a
    ``Manager`` proxy would cost a process more and a round trip per batch)."""
    context = multiprocessing.get_context(_start_method())
    updates: multiprocessing.queues.Queue[int] = context.Queue()
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_process, initargs=(updates,)
    ) as pool:
        futures: list[Future[list[PartitionDone]]] = [
            pool.submit(replay_family, settings, name, family, _report, profiles_only)
            for family in families
        ]
        for future in futures:  # wakes the loop below at once when the last one ends
            future.add_done_callback(lambda _: updates.put(0))
        while not all(f.done() for f in futures):
            with contextlib.suppress(queue.Empty):
                bar.update(updates.get(timeout=1.0))
        for future in futures:
            future.result()  # re-raise a worker's error
    with contextlib.suppress(queue.Empty):  # the processes have ended: all is in the queue
        while True:
            bar.update(updates.get(timeout=0.05))
    updates.close()


_progress: multiprocessing.queues.Queue[int] | None = None
"""In a replay process: where it reports the messages it has done (``_report``)."""


def _start_process(updates: multiprocessing.queues.Queue[int]) -> None:
    """Pool initializer of a replay process. Freezes what a forked process inherits, so
    that its collector never walks the parent's heap (each walk would copy the pages it
    touches) and never finalizes the parent's unreachable objects: closing an inherited
    SQLite descriptor drops the POSIX locks of the process's own connection to the same
    file (the suspected cause of a rare empty 2-process replay in the tests). A full
    collection in the parent before forking did the latter too, at 0.2 s a replay."""
    global _progress
    gc.freeze()
    _progress = updates


def _report(messages: int) -> None:
    if _progress is not None:
        _progress.put(messages)
