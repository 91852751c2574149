"""The worker's hot state: profiles and partition popularity, cached in memory, with the
online store as their durable copy.

A profile is loaded from the store the first time the worker meets its user (after a start
or a rebalance), changed in memory, and written back at the next flush. Each profile row
carries the offsets it has applied, per partition, so a message redelivered after a crash
is recognised and skipped: the effect of every event is applied exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.popularity import PartitionPopularity, trim
from streams.profile import UserProfile
from streams.sink import FeastProfileStore, retry_forever


class ProfileState:
    def __init__(self, store: FeastProfileStore):
        self.store = store
        self.profiles: dict[str, UserProfile] = {}
        self.popularity: dict[int, PartitionPopularity] = {}
        self._dirty_users: set[str] = set()
        self._dirty_partitions: set[int] = set()

    def ensure_loaded(self, user_ids: Iterable[str], partitions: Iterable[int]) -> None:
        """Fetch, in one read each, the profiles and partition rows not cached yet."""
        missing_users = sorted({u for u in user_ids if u not in self.profiles})
        if missing_users:
            loaded = retry_forever(
                lambda: self.store.read_profiles(missing_users), "reading profiles"
            )
            for user in missing_users:
                self.profiles[user] = loaded.get(user) or UserProfile(user_id=user)
        missing_parts = sorted({p for p in partitions if p not in self.popularity})
        if missing_parts:
            rows = retry_forever(
                lambda: self.store.read_popularity(missing_parts), "reading popularity"
            )
            for part in missing_parts:
                self.popularity[part] = rows.get(part) or PartitionPopularity(part)

    def profile(self, user_id: str) -> UserProfile:
        return self.profiles[user_id]

    def mark_dirty(self, user_id: str) -> None:
        self._dirty_users.add(user_id)

    def mark_partition_dirty(self, partition: int) -> None:
        self._dirty_partitions.add(partition)

    @property
    def dirty_count(self) -> int:
        return len(self._dirty_users)

    def flush(self) -> tuple[int, int]:
        """Write every changed profile and partition row; retried until it succeeds."""
        users = [self.profiles[u] for u in sorted(self._dirty_users)]
        parts = [self.popularity[p] for p in sorted(self._dirty_partitions)]
        for part in parts:
            trim(part)
        written = retry_forever(lambda: self.store.write_profiles(users), "writing profiles")
        retry_forever(lambda: self.store.write_popularity(parts), "writing popularity")
        self._dirty_users.clear()
        self._dirty_partitions.clear()
        return written, len(parts)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop cached state (on rebalance), so the next owner's writes are read afresh."""
        self.profiles.clear()
        if partitions is None:
            self.popularity.clear()
        else:
            for part in partitions:
                self.popularity.pop(part, None)
