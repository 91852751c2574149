"""What users decided about their data, and the one rule every reader of ``events`` follows.

Seed 002: a user can stop being profiled and can have what was kept erased. Three requests
(``PrivacyRequest``) travel on ``events``, in order with the user's events, on the user's
partition:

- ``opt_out`` (the site's consent banner, the API): the profile is wiped and replaced by a
  tombstone that only says "opted out" (serving reads it and answers without
  personalization); the user's later events are withheld, never folded;
- ``opt_in``: events count again, into a fresh profile;
- ``erase`` (admin only, ``DELETE /v1/users/{id}``): the profile row is deleted from the
  online store, the worker's cache and every replay namespace; later events start anew.

Each request changes the user's ``PrivacyState``: ``opted_out``, and ``wiped_through``, the
offset (in the user's partition) of the latest opt-out or erasure. The rule
(``PrivacyState.withholds``): a message's events are withheld while the user is opted out
and whenever the message is at or before ``wiped_through``. Offsets, not clocks: they are
exact and the same for every reader. Live, the partition order applies each request
between the events before and after it, and ``wiped_through`` stops a redelivered older
message (after a crash) from bringing wiped data back. In a replay or a backtest, which
start from the state *now*, it withholds everything a later opt-out or erasure wiped.

The durable record is the compacted ``privacy`` topic: the owner of a partition publishes
each user's new state there (key: pseudonym; same partition number as the user's events)
before the batch that changed it is committed, and restores the states of its partitions
from it when it is assigned them. Kafka keeps the latest state per user for ever, where the
online store forgets after the profile TTL.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from infra.kafka_config import KafkaTarget, client_config
from streamrank.settings import Settings
from streams import metrics
from streams.events import Event, PrivacyAction, PrivacyRequest, Record

if TYPE_CHECKING:
    from streams.growth import Lineage

log = logging.getLogger(__name__)


class PrivacyState(BaseModel):
    """A user's standing choice, as of the request at ``partition``/``offset``."""

    user_id: str
    partition: int
    opted_out: bool = False
    wiped_through: int = -1  # messages at or before this offset are never folded again
    wiped_at: float | None = None  # time of that wipe (epoch s), for streams without offsets
    offset: int = -1  # of the request that made this state
    requested_at: float = 0.0  # the request's own time (epoch s): time-to-apply metrics

    def after(self, request: PrivacyRequest, partition: int, offset: int) -> PrivacyState:
        """The state once ``request`` (message ``offset`` of ``partition``) is applied."""
        opted_out = {
            PrivacyAction.OPT_OUT: True,
            PrivacyAction.OPT_IN: False,
            PrivacyAction.ERASE: self.opted_out,
        }[request.type]
        wipes = request.type in (PrivacyAction.OPT_OUT, PrivacyAction.ERASE)
        # offsets compare within one partition; a request on another one (a producer that
        # partitions differently) starts the user's offsets afresh there
        kept = self.wiped_through if partition == self.partition else -1
        return PrivacyState(
            user_id=self.user_id,
            partition=partition,
            opted_out=opted_out,
            wiped_through=max(kept, offset) if wipes else kept,
            wiped_at=request.epoch if wipes else self.wiped_at,
            offset=offset,
            requested_at=request.epoch,
        )

    def withholds(self, partition: int, offset: int) -> bool:
        """Whether the user's events in message ``offset`` of ``partition`` must be left out."""
        return self.opted_out or (partition == self.partition and offset <= self.wiped_through)

    def withholds_at(self, ts: float) -> bool:
        """The same for a record of another topic, known only by its time (impressions)."""
        return self.opted_out or (self.wiped_at is not None and ts <= self.wiped_at)

    @classmethod
    def initial(cls, user_id: str, partition: int) -> PrivacyState:
        return cls(user_id=user_id, partition=partition)


class PrivacyRegistry:
    """The states of the users of the partitions one process reads (a worker, a replay),
    restored per partition by ``load`` the first time the partition is seen. For a
    partition added by growth (``lineage``, ``streams/growth.py``) that includes the states
    of its moved users, which stay on the partitions it was split from until their next
    request: an opt-out made before the growth holds after it."""

    def __init__(
        self,
        load: Callable[[list[int]], Iterable[PrivacyState]] | None = None,
        lineage: Callable[[list[int]], Mapping[int, Lineage]] | None = None,
    ):
        self._load = load
        self._lineage = lineage
        self._partitions: set[int] = set()
        self.states: dict[str, PrivacyState] = {}
        self._homes: dict[str, set[int]] = {}  # the loaded partitions each state serves

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyRegistry:
        """Restored from the settings' privacy topic, growth read from the live store."""
        from streams.growth import lineage_reader

        return cls(PrivacyLog.from_settings(settings).load, lineage_reader(settings))

    def ensure_partitions(self, partitions: Iterable[int]) -> None:
        missing = sorted(set(partitions) - self._partitions)
        if not missing:
            return
        if self._load is not None:
            lineage = self._lineage(missing) if self._lineage is not None else {}
            ancestors = {a for q in lineage for a in lineage[q].ancestors}
            own = set(missing)
            for state in self._load(sorted(own | ancestors)):
                homes = {state.partition} & own
                homes.update(
                    q
                    for q, line in lineage.items()
                    if state.partition in line.ancestors and line.moved_here(state.user_id, q)
                )
                if homes:
                    self._keep(state, homes)
        self._partitions.update(missing)

    def _keep(self, state: PrivacyState, homes: Iterable[int]) -> None:
        known = self.states.get(state.user_id)
        if known is None or newer(state, known):
            self.states[state.user_id] = state
        self._homes.setdefault(state.user_id, set()).update(homes)

    def knows(self, partition: int) -> bool:
        return partition in self._partitions

    def withholds(self, user_id: str, partition: int, offset: int) -> bool:
        state = self.states.get(user_id)
        return state is not None and state.withholds(partition, offset)

    def withholds_at(self, user_id: str, ts: float) -> bool:
        """Whether a record of the user from another topic, known by its time ``ts`` (an
        impression), must be left out: the user is opted out, or was wiped after it."""
        state = self.states.get(user_id)
        return state is not None and state.withholds_at(ts)

    def opted_out(self, user_id: str) -> bool:
        state = self.states.get(user_id)
        return state is not None and state.opted_out

    def apply(self, request: PrivacyRequest, partition: int, offset: int) -> PrivacyState:
        state = self.states.get(request.user_id) or PrivacyState.initial(request.user_id, partition)
        self.states[request.user_id] = state = state.after(request, partition, offset)
        self._homes.setdefault(request.user_id, set()).add(partition)
        return state

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop the states of revoked partitions (the next owner restores them); a moved
        user's state stays while a partition it serves is still read here."""
        dropped = set(self._partitions) if partitions is None else set(partitions)
        self._partitions -= dropped
        for user, homes in list(self._homes.items()):
            homes -= dropped
            if not homes:
                del self._homes[user]
                self.states.pop(user, None)


def newer(state: PrivacyState, than: PrivacyState) -> bool:
    """Whether ``state`` was made after ``than``: by offset on one partition, by the
    request's time across two (a moved user's old and new partitions)."""
    if state.partition == than.partition:
        return state.offset >= than.offset
    return state.requested_at >= than.requested_at


def kept_events(
    registry: PrivacyRegistry, partition: int, offset: int, records: Iterable[Record]
) -> Iterator[Event]:
    """The events of one message that a reader other than the profile worker may use (a
    backtest, the experiment join): the message's own requests are applied in order, and
    withheld events are left out. Started from the state now, this leaves out everything a
    later opt-out or erasure wiped, as the profile worker did when it happened."""
    for record in records:
        if isinstance(record, PrivacyRequest):
            registry.apply(record, partition, offset)
        elif not registry.withholds(record.user_id, partition, offset):
            yield record


class PrivacyLog:
    """The compacted ``privacy`` topic, read with confluent-kafka (no group, nothing
    committed). Publishing happens where the batch is acknowledged (``streams/app.py``)."""

    def __init__(self, kafka: KafkaTarget, topic: str, timeout_s: float = 30.0):
        self.kafka = client_config(kafka)
        self.topic = topic
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyLog:
        return cls(settings.kafka_client_config(), settings.privacy_topic)

    def read(self, partitions: Iterable[int] | None = None) -> dict[str, PrivacyState]:
        """The latest state of every user in ``partitions`` (all by default): each read to
        its end, which the fetch reports (the broker's latest offset may lag it)."""
        consumer = Consumer(
            {
                **self.kafka,
                "group.id": f"streamrank-privacy-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        states: dict[str, PrivacyState] = {}
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(
                self.topic
            )
            if metadata is None or metadata.error is not None:
                if metadata is not None and metadata.error.code() not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_TOPIC,
                ):
                    raise KafkaException(metadata.error)
                return states  # no topic yet: nobody has asked for anything
            wanted = sorted(metadata.partitions if partitions is None else partitions)
            wanted = [p for p in wanted if p in metadata.partitions]
            if not wanted:
                return states
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in wanted])
            open_partitions = set(wanted)
            deadline = time.monotonic() + self.timeout_s
            while open_partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic}: partitions {open_partitions} not read")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(msg.partition())
                        continue
                    raise KafkaException(error)
                if msg.value() is None:  # a compaction tombstone: nothing to remember
                    user = (msg.key() or b"").decode()
                    if user in states and states[user].partition == msg.partition():
                        del states[user]
                    continue
                try:
                    state = PrivacyState.model_validate_json(msg.value())
                except ValidationError:
                    log.error(
                        "unreadable record at %s[%d]@%d", self.topic, msg.partition(), msg.offset()
                    )
                    continue
                known = states.get(state.user_id)
                if known is None or newer(state, known):  # a moved user: on two partitions
                    states[state.user_id] = state
        finally:
            consumer.close()
        return states

    def load(self, partitions: list[int]) -> list[PrivacyState]:
        """For ``PrivacyRegistry``: the states of ``partitions``."""
        return list(self.read(partitions).values())


def erase_from_namespaces(settings: Settings, user_ids: list[str]) -> None:
    """Remove wiped users from every replay namespace, so an erasure reaches the copies
    too. A namespace that cannot be opened is logged and counted, never allowed to stop
    the live stream; the replay's own end-of-run purge covers one still being filled."""
    from feature_repo.namespaces import Namespace, list_namespaces
    from streams.sink import FeastProfileStore

    for manifest in list_namespaces(settings):
        try:
            store = FeastProfileStore(Namespace(settings, manifest.namespace).open_store())
            store.delete_profiles(user_ids)
        except Exception:
            metrics.NAMESPACE_ERASE_FAILURES.inc()
            log.exception(
                "could not remove %d users from namespace %s", len(user_ids), manifest.namespace
            )


def wait_applied(
    log_: PrivacyLog, user_id: str, partition: int, offset: int, timeout_s: float
) -> PrivacyState | None:
    """Block until the user's published state covers the request at ``partition``/
    ``offset`` (the owner has wiped and written what it changes); None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = log_.read([partition]).get(user_id)
        if state is not None and state.offset >= offset:
            return state
        time.sleep(0.1)
    return None


def encode_state(state: PrivacyState) -> tuple[bytes, bytes]:
    """(key, value) of the state's record on the privacy topic."""
    return state.user_id.encode(), state.model_dump_json().encode()


def privacy_request(user_id: str, action: PrivacyAction) -> PrivacyRequest:
    """A request made now, with an id of its own (the API and the CLI send these)."""
    return PrivacyRequest(
        event_id=f"privacy-{uuid.uuid4().hex}",
        user_id=user_id,
        type=action,
        ts=datetime.now(UTC),
    )
