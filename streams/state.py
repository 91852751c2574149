"""The worker's hot state, cached in memory, with the online store as its durable copy.

What is kept: user profiles; per partition, item popularity and a checkpoint (the last
offset whose effects are all written); per (partition, item), co-visitation edges.
State is loaded from the store the first time the worker needs it (after a start or a
rebalance), changed in memory, and written back at flushes.

Exactly once, by construction. Every row records the offset(s) it has applied. Profiles
are written at every flush, each with the item-side effects it produced that item rows may
not hold yet (its outbox, ``streams/outbox.py``). Item rows (popularity, co-visitation) are
written every ``item_flush_s``, after the profiles of that flush, and the checkpoints after
them. A crash at any point leaves rows that each know what they contain. The group
rewinds to the checkpoints, so the redelivered messages are folded into the profiles that
lack them, and the outbox entries of the profiles that hold them are applied to the item
rows that lack them. Messages at or below a partition's checkpoint are skipped whole.

Privacy (``streams/privacy.py``): a wiped user's row is replaced by a tombstone (opted out)
or queued for deletion (erased); deletions go to the store before the flush's writes, so a
fresh profile started after an erasure in the same batch survives it.

Memory is bounded: at most ``max_profiles`` profiles and ``max_covisits`` co-visitation
rows stay cached. The least recently used clean ones are dropped after each flush and read
back from the store when needed again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from streams.covisitation import CovisitRow
from streams.popularity import PartitionPopularity, trim
from streams.privacy import PrivacyRegistry
from streams.profile import UserProfile
from streams.sink import FeastProfileStore, PartitionCounts, retry_forever


class ProfileState:
    def __init__(
        self,
        store: FeastProfileStore,
        max_profiles: int = 20_000,
        max_covisits: int = 50_000,
        item_flush_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        privacy: PrivacyRegistry | None = None,
        on_wiped: Callable[[list[str]], None] | None = None,
    ):
        self.store = store
        self.privacy = privacy or PrivacyRegistry()
        self.on_wiped = on_wiped  # e.g. erase the users from replay namespaces too
        self.max_profiles = max_profiles
        self.max_covisits = max_covisits
        self.item_flush_s = item_flush_s
        self.clock = clock
        self._items_flushed_at = -float("inf")
        self.profiles: OrderedDict[str, UserProfile] = OrderedDict()
        self.popularity: dict[int, PartitionPopularity] = {}
        self.covisits: OrderedDict[tuple[int, str], CovisitRow] = OrderedDict()
        self.checkpoints: dict[int, int] = {}
        self.counts: dict[int, PartitionCounts] = {}  # up to the last offset folded
        self._dirty_users: set[str] = set()
        self._dirty_partitions: set[int] = set()
        self._dirty_covisits: set[tuple[int, str]] = set()
        self._deleted_users: set[str] = set()
        self._wiped_users: set[str] = set()
        self._processed: dict[int, int] = {}  # last offset folded, per partition
        self._items_written: dict[int, int] = {}  # item rows hold every effect up to here

    # --- loading ----------------------------------------------------------------------------
    def ensure_partitions(self, partitions: Iterable[int]) -> None:
        partitions = set(partitions)
        self.privacy.ensure_partitions(partitions)
        missing = sorted({p for p in partitions if p not in self.checkpoints})
        if not missing:
            return
        counts = retry_forever(
            lambda: self.store.read_partition_counts(missing), "reading checkpoints"
        )
        checkpoints = {p: c.offset for p, c in counts.items()}
        popularity = retry_forever(
            lambda: self.store.read_popularity(missing), "reading popularity"
        )
        self.checkpoints.update(checkpoints)
        self.counts.update(counts)
        self._items_written.update(checkpoints)
        self.popularity.update(popularity)

    def ensure_users(self, user_ids: Iterable[str]) -> None:
        _touch_or_load(self.profiles, user_ids, self.store.read_profiles, "reading profiles")

    def ensure_covisits(self, keys: Iterable[tuple[int, str]]) -> None:
        _touch_or_load(self.covisits, keys, self.store.read_covisits, "reading co-visits")

    # --- changes ----------------------------------------------------------------------------
    def profile(self, user_id: str) -> UserProfile:
        return self.profiles[user_id]

    def mark_user(self, user_id: str) -> None:
        self._dirty_users.add(user_id)

    def wipe(self, user_id: str, opted_out: bool) -> None:
        """Forget what is kept about ``user_id`` (``streams/privacy.py``): an opted-out
        user's row becomes a tombstone; otherwise it is deleted, and a fresh profile takes
        its place in the cache for the user's later events."""
        self._dirty_users.discard(user_id)
        self._wiped_users.add(user_id)
        if opted_out:
            self.profiles[user_id] = UserProfile.tombstone(user_id)
            self._dirty_users.add(user_id)
        else:
            self.profiles[user_id] = UserProfile(user_id)
            self._deleted_users.add(user_id)

    def keep_tombstone(self, user_id: str) -> None:
        """An opted-out user is still browsing: their tombstone is written again, so it
        outlives the profile TTL for as long as they are around (serving reads it)."""
        if not self.profiles[user_id].opted_out:
            self.profiles[user_id] = UserProfile.tombstone(user_id)
        self._dirty_users.add(user_id)

    def mark_partition(self, partition: int) -> None:
        self._dirty_partitions.add(partition)

    def mark_covisit(self, key: tuple[int, str]) -> None:
        self._dirty_covisits.add(key)

    def count(self, partition: int, events: int, dead_letters: int) -> None:
        """A message's valid events and dead letters, stored with the next checkpoint."""
        self.counts[partition] = self.counts[partition].plus(events, dead_letters)

    def advance(self, partition: int, offset: int) -> None:
        """``offset`` of ``partition`` has been folded (its profiles are written next flush)."""
        if offset > self._processed.get(partition, -1):
            self._processed[partition] = offset

    def flush(self, items: bool | None = None) -> int:
        """Write the profiles, then, when due (or ``items=True``), the item rows and the
        checkpoints. Profiles go first so that a user's new events are visible without
        waiting for the item rows; their outbox entries cover the item rows meanwhile.
        Every write is retried until done. Returns the number of profiles written."""
        crowded = len(self._dirty_covisits) > self.max_covisits // 2  # dirty rows stay cached
        if self._deleted_users:  # before the writes: a profile begun since must survive
            deleted = sorted(self._deleted_users)
            retry_forever(lambda: self.store.delete_profiles(deleted), "deleting profiles")
            self._deleted_users.clear()
        users = [self.profiles[u] for u in sorted(self._dirty_users)]
        for user in users:  # effects already in the item rows need no outbox entry
            user.outbox = [
                e for e in user.outbox if e.offset > self._items_written.get(e.partition, -1)
            ]
        written = retry_forever(lambda: self.store.write_profiles(users), "writing profiles")
        self._dirty_users.clear()
        if self._wiped_users and self.on_wiped is not None:
            self.on_wiped(sorted(self._wiped_users))
        self._wiped_users.clear()
        if items or (items is None and (self._items_due() or crowded)):
            self._write_item_rows()
            self._write_checkpoints()
        self._evict()
        return written

    def flush_items_if_due(self) -> None:
        """Between batches (profiles all written): item rows and checkpoints, once due."""
        pending = (
            self._dirty_partitions
            or self._dirty_covisits
            or any(o > self.checkpoints.get(p, -1) for p, o in self._processed.items())
        )
        if pending and self._items_due():
            self._write_item_rows()
            self._write_checkpoints()

    def _items_due(self) -> bool:
        return self.clock() - self._items_flushed_at >= self.item_flush_s

    def _write_item_rows(self) -> None:
        parts = [self.popularity[p] for p in sorted(self._dirty_partitions)]
        for part in parts:
            trim(part)
        covisits = [self.covisits[k] for k in sorted(self._dirty_covisits)]
        retry_forever(lambda: self.store.write_popularity(parts), "writing popularity")
        retry_forever(lambda: self.store.write_covisits(covisits), "writing co-visits")
        self._items_written.update(self._processed)
        self._dirty_partitions.clear()
        self._dirty_covisits.clear()
        self._items_flushed_at = self.clock()

    def _write_checkpoints(self) -> None:
        """After the profiles: every effect of the messages up to here is now stored."""
        checkpoints = {p: o for p, o in self._processed.items() if o > self.checkpoints.get(p, -1)}
        if checkpoints:
            counts = {p: self.counts[p] for p in checkpoints}
            retry_forever(
                lambda: self.store.write_checkpoints(checkpoints, counts), "writing checkpoints"
            )
            self.checkpoints.update(checkpoints)

    def _evict(self) -> None:
        """Drop the least recently used clean entries beyond the caps."""
        while len(self.profiles) > self.max_profiles:
            user, _ = self.profiles.popitem(last=False)
            assert user not in self._dirty_users
        excess = len(self.covisits) - self.max_covisits
        if excess > 0:
            clean = [k for k in self.covisits if k not in self._dirty_covisits][:excess]
            for key in clean:
                del self.covisits[key]

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop cached state (on rebalance) so that the next owner's writes are read afresh.
        Profiles are dropped whole (they are never dirty between batches): a user's partition
        is not known without hashing.
        Unwritten item rows of dropped partitions are dropped too: the next owner rewinds to
        the checkpoint and rebuilds them from the profiles' outboxes."""
        self.profiles.clear()
        self.privacy.forget(partitions)
        dropped = (
            set(self.checkpoints) | set(self.popularity) if partitions is None else set(partitions)
        )
        for part in dropped:
            self.popularity.pop(part, None)
            self.checkpoints.pop(part, None)
            self.counts.pop(part, None)
            self._processed.pop(part, None)
            self._items_written.pop(part, None)
        self._dirty_partitions -= dropped
        self._dirty_covisits = {k for k in self._dirty_covisits if k[0] not in dropped}
        self.covisits = OrderedDict((k, v) for k, v in self.covisits.items() if k[0] not in dropped)


K = TypeVar("K")
V = TypeVar("V")


def _touch_or_load(
    cache: OrderedDict[K, V],
    keys: Iterable[K],
    read: Callable[[list[K]], Mapping[K, V]],
    what: str,
) -> None:
    """Mark cached ``keys`` as recently used; read the missing ones in one store call."""
    wanted = set(keys)
    for key in wanted & cache.keys():
        cache.move_to_end(key)
    missing = sorted(wanted - cache.keys())  # type: ignore[type-var]
    if missing:
        cache.update(retry_forever(lambda: read(missing), what))
