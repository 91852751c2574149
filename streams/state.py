"""The worker's hot state, cached in memory, with the online store as its durable copy.

What is kept here: user profiles, and per partition the checkpoint (the last offset whose
effects are all written) as it was loaded. The item half (``streams/item_rows.py``: item
popularity per partition, co-visitation edges per (partition, item), and the writing of
the checkpoints) runs in this process or in one beside it (``streams/item_process.py``).
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

Memory is bounded: at most ``max_profiles`` profiles (and, in the item half,
``max_covisits`` co-visitation rows) stay cached. The least recently used clean ones are
dropped after each flush and read back from the store when needed again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from streams.cache import touch_or_load
from streams.item_rows import ItemRows, ItemSide
from streams.outbox import ItemEffect
from streams.privacy import PrivacyRegistry
from streams.profile import UserProfile
from streams.sink import FeastProfileStore, PartitionCounts
from streams.store_errors import retry_store


class ProfileState:
    def __init__(
        self,
        store: FeastProfileStore,
        max_profiles: int = 10_000,
        max_covisits: int = 50_000,
        item_flush_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        privacy: PrivacyRegistry | None = None,
        on_wiped: Callable[[list[str]], None] | None = None,
        items: ItemSide | None = None,
    ):
        """``items``: the item half (``streams/item_rows.py``); by default in this process,
        over the same store, writing every ``item_flush_s``."""
        self.store = store
        self.items = items or ItemRows(store, max_covisits, item_flush_s, clock)
        self.privacy = privacy or PrivacyRegistry()
        self.on_wiped = on_wiped  # e.g. erase the users from replay namespaces too
        self.max_profiles = max_profiles
        self.profiles: OrderedDict[str, UserProfile] = OrderedDict()
        self.checkpoints: dict[int, int] = {}  # as stored when the partition was loaded
        self.counts: dict[int, PartitionCounts] = {}  # up to the last offset folded
        self._dirty_users: set[str] = set()
        self._deleted_users: set[str] = set()
        self._wiped_users: set[str] = set()
        self._processed: dict[int, int] = {}  # last offset folded, per partition
        self._handed_over: dict[int, int] = {}  # profiles written up to here, told the items

    # --- loading ----------------------------------------------------------------------------
    def ensure_partitions(self, partitions: Iterable[int]) -> None:
        partitions = set(partitions)
        self.privacy.ensure_partitions(partitions)
        missing = sorted({p for p in partitions if p not in self.checkpoints})
        if not missing:
            return
        counts = retry_store(
            lambda: self.store.read_partition_counts(missing), "reading checkpoints"
        )
        self.checkpoints.update({p: c.offset for p, c in counts.items()})
        self.counts.update(counts)
        self._handed_over.update({p: c.offset for p, c in counts.items()})
        self.items.load(counts)

    def ensure_users(self, user_ids: Iterable[str]) -> None:
        touch_or_load(self.profiles, user_ids, self.store.read_profiles, "reading profiles")

    # --- changes ----------------------------------------------------------------------------
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

    def count(self, partition: int, events: int, dead_letters: int) -> None:
        """A message's valid events and dead letters, stored with the next checkpoint."""
        self.counts[partition] = self.counts[partition].plus(events, dead_letters)

    def advance(self, partition: int, offset: int) -> None:
        """``offset`` of ``partition`` has been folded (its profiles are written next flush)."""
        if offset > self._processed.get(partition, -1):
            self._processed[partition] = offset

    def next_offset(self, partition: int) -> int | None:
        """The offset of ``partition`` this state takes next: past its checkpoint and what
        it has folded since; None while the partition is not loaded."""
        if partition not in self.checkpoints:
            return None
        return max(self.checkpoints[partition], self._processed.get(partition, -1)) + 1

    def flush(self, effects: Sequence[ItemEffect] = (), force_items: bool = False) -> int:
        """Write the profiles, then hand the batch's item effects to the item half, which
        writes its rows and the checkpoints when due (``force_items``: now). Profiles go
        first so that a user's new events are visible without waiting for the item rows;
        their outbox entries cover the item rows meanwhile. Every write is retried until
        done. Returns the number of profiles written."""
        if self._deleted_users:  # before the writes: a profile begun since must survive
            deleted = sorted(self._deleted_users)
            retry_store(lambda: self.store.delete_profiles(deleted), "deleting profiles")
            self._deleted_users.clear()
        users = [self.profiles[u] for u in sorted(self._dirty_users)]
        items_written = self.items.written()
        for user in users:  # effects already in the item rows need no outbox entry
            user.outbox = [e for e in user.outbox if e.offset > items_written.get(e.partition, -1)]
        written = retry_store(lambda: self.store.write_profiles(users), "writing profiles")
        self._dirty_users.clear()
        if self._wiped_users and self.on_wiped is not None:
            self.on_wiped(sorted(self._wiped_users))
        self._wiped_users.clear()
        covered = {p: o for p, o in self._processed.items() if o > self._handed_over.get(p, -1)}
        self._handed_over.update(covered)
        self.items.add(effects, covered, {p: self.counts[p] for p in covered})
        if force_items:
            self.items.flush(force=True)
        self._evict()
        return written

    def flush_items_if_due(self) -> None:
        """Between batches (profiles all written): item rows and checkpoints, once due."""
        self.items.flush()

    def _evict(self) -> None:
        """Drop the least recently used profiles beyond the cap (none is dirty here)."""
        while len(self.profiles) > self.max_profiles:
            user, _ = self.profiles.popitem(last=False)
            assert user not in self._dirty_users

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop cached state (on rebalance) so that the next owner's writes are read afresh.
        Profiles are dropped whole (they are never dirty between batches): a user's partition
        is not known without hashing. The item half drops the partitions' rows."""
        self.profiles.clear()
        self.privacy.forget(partitions)
        dropped = set(self.checkpoints) if partitions is None else set(partitions)
        for part in dropped:
            for table in (self.checkpoints, self.counts, self._processed, self._handed_over):
                table.pop(part, None)  # type: ignore[attr-defined]
        self.items.forget(partitions)
