"""Partitions whose messages stopped arriving: found, so the worker can seek back to them.

Faust drops the records of a fetch that was in flight when a rebalance began, while the
client's fetch position has already moved past them. Our rebalance ends by seeking every
partition to its checkpoint (``streams/app.py``), which covers a fetch that ends before
that seek; one that ends after it (seen when a grown topic's new partitions are first
assigned: their first messages were never delivered) leaves the partition waiting past
messages the worker never folded, until the next rebalance. A partition whose broker end
is past what the worker takes next, and whose next offset has not moved for ``after_s``
while the worker was idle, is sought back to that offset. A false alarm costs a re-read:
redelivered messages are skipped by the checkpoints and the profiles' applied offsets.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field


@dataclass
class StallWatch:
    after_s: float = 5.0
    _since: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def stalled(
        self, positions: Mapping[Hashable, tuple[int | None, int | None]], now: float
    ) -> dict[Hashable, int]:
        """The partitions to seek back, with the offset to seek to. ``positions``: per
        partition, (the offset the worker takes next, the broker's end), None if unknown.
        Call it only while no batch is being processed."""
        out: dict[Hashable, int] = {}
        for tp, (expected, end) in positions.items():
            if expected is None or end is None or end <= expected:
                self._since.pop(tp, None)  # nothing waiting
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != expected:  # new, or it moved on since
                self._since[tp] = (expected, now)
                continue
            if now - seen[1] >= self.after_s:
                out[tp] = expected
                self._since[tp] = (expected, now)  # wait as long again before the next try
        for gone in set(self._since) - set(positions):
            del self._since[gone]
        return out
