"""``streamrank verify-consistency``: live profiles against a replay of the same events.

For every user of a namespace's range, the profile the live workers wrote and the one the
replay computed are compared feature by feature: counts, lists and strings exactly,
decayed values within a relative 1e-9 (a profile read back from the store is rebased to its
``as_of``, which moves the last bits), the float32 interest vector within 1e-4 of its
length (its terms are added in batches whose size depends on when it is read). Transport
bookkeeping (applied offsets, recent event ids, outbox) is not a feature and is skipped.

A user whose live profile has applied messages past the range (the live stream moved on)
is reported as such, not as a difference: the two cannot be equal then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.profile import UserProfile

BOOKKEEPING = frozenset({"applied_offsets", "recent_event_ids", "outbox"})
REL_TOL, ABS_TOL = 1e-9, 1e-12
VECTOR_REL_TOL, VECTOR_ABS_TOL = 1e-4, 1e-6


@dataclass(frozen=True)
class Difference:
    user_id: str
    feature: str
    live: Any
    replayed: Any


@dataclass
class ConsistencyReport:
    users: int = 0
    equal: int = 0
    moved_on: list[str] = field(default_factory=list)  # live went past the range
    differences: list[Difference] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.differences


def feature_differences(live: UserProfile, replayed: UserProfile) -> Iterator[Difference]:
    got, want = live.to_row(), replayed.to_row()
    for name in sorted(set(got) | set(want)):
        if name in BOOKKEEPING:
            continue
        a, b = got.get(name), want.get(name)
        if not _close(name, a, b):
            yield Difference(live.user_id, name, a, b)


def _close(name: str, a: Any, b: Any) -> bool:
    if name == "interest_sum":  # rounding follows the vector's length, not each element's
        if len(a) != len(b):
            return False
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = max(float(np.linalg.norm(x)), float(np.linalg.norm(y)))
        return float(np.linalg.norm(x - y)) <= VECTOR_REL_TOL * scale + VECTOR_ABS_TOL
    if isinstance(a, float) or isinstance(b, float):
        return (
            a is not None and b is not None and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        )
    if name == "category_weights":  # decayed, like the scalars; event times stay exact
        return len(a) == len(b) and all(
            math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL) for x, y in zip(a, b, strict=True)
        )
    return bool(a == b)


def compare(
    live: Mapping[str, UserProfile],
    replayed: Mapping[str, UserProfile],
    stop: Mapping[int, int],
    report: ConsistencyReport | None = None,
) -> ConsistencyReport:
    """Add one batch of users to ``report``; ``stop`` is the range's end per partition."""
    report = report or ConsistencyReport()
    for user, theirs in replayed.items():
        report.users += 1
        mine = live[user]
        if any(offset >= stop.get(p, 0) for p, offset in mine.applied_offsets.items()):
            report.moved_on.append(user)
            continue
        found = list(feature_differences(mine, theirs))
        report.differences.extend(found)
        report.equal += not found
    return report


def in_batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
