"""The online store as the stream's sink and as the durable copy of its state.

Profiles are written in batches (one Feast call per flush, never one per event), and read
back in batches when a worker meets users it has not cached (after a restart or a
rebalance). The applied offsets travel inside each profile row, so a row and the position
in the topic that produced it are always written together, atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from feature_repo.definitions import (
    POPULAR_PUSH,
    POPULAR_VIEW,
    USER_PROFILE_PUSH,
    USER_PROFILE_VIEW,
    user_profile_schema,
)
from streams.popularity import POPULAR_TOP_N, PartitionPopularity
from streams.profile import UserProfile

log = logging.getLogger(__name__)

PROFILE_FEATURES = [f"{USER_PROFILE_VIEW}:{f.name}" for f in user_profile_schema()]
POPULAR_FEATURES = [f"{POPULAR_VIEW}:{name}" for name in ("as_of", "item_ids", "scores")] + [
    f"{POPULAR_VIEW}:applied_offset"
]


class FeastProfileStore:
    """Reads and writes profile state through Feast (SQLite or Redis behind it)."""

    def __init__(self, store: FeatureStore):
        self.store = store

    def read_profiles(self, user_ids: Sequence[str]) -> dict[str, UserProfile]:
        if not user_ids:
            return {}
        result = self.store.get_online_features(
            features=PROFILE_FEATURES, entity_rows=[{"user_id": u} for u in user_ids]
        ).to_dict()
        columns = list(result)
        rows = (
            dict(zip(columns, values, strict=True)) for values in zip(*result.values(), strict=True)
        )
        return {row["user_id"]: UserProfile.from_row(row) for row in rows}

    def write_profiles(self, profiles: Iterable[UserProfile]) -> int:
        rows = [p.to_row() for p in profiles]
        if not rows:
            return 0
        frame = pd.DataFrame(rows)
        frame["updated_at"] = datetime.now(UTC)
        self.store.push(USER_PROFILE_PUSH, frame, to=PushMode.ONLINE)
        return len(rows)

    def read_popularity(self, partitions: Sequence[int]) -> dict[int, PartitionPopularity]:
        if not partitions:
            return {}
        result = self.store.get_online_features(
            features=POPULAR_FEATURES, entity_rows=[{"partition_id": p} for p in partitions]
        ).to_dict()
        out: dict[int, PartitionPopularity] = {}
        for i, partition in enumerate(result["partition_id"]):
            if result["as_of"][i] is None:
                out[partition] = PartitionPopularity(partition)
                continue
            out[partition] = PartitionPopularity(
                partition=partition,
                as_of=float(result["as_of"][i]),
                scores=dict(zip(result["item_ids"][i], result["scores"][i], strict=True)),
                applied_offset=int(result["applied_offset"][i]),
            )
        return out

    def write_popularity(
        self, rows: Iterable[PartitionPopularity], top_n: int = POPULAR_TOP_N
    ) -> int:
        records = []
        for row in rows:
            ranked = sorted(row.scores.items(), key=lambda kv: -kv[1])[:top_n]
            records.append(
                {
                    "partition_id": row.partition,
                    "as_of": row.as_of,
                    "item_ids": [i for i, _ in ranked],
                    "scores": [s for _, s in ranked],
                    "applied_offset": row.applied_offset,
                }
            )
        if not records:
            return 0
        frame = pd.DataFrame(records)
        frame["updated_at"] = datetime.now(UTC)
        self.store.push(POPULAR_PUSH, frame, to=PushMode.ONLINE)
        return len(records)


def retry_forever(action, what: str, first_delay_s: float = 0.2, max_delay_s: float = 10.0):  # type: ignore[no-untyped-def]
    """Run ``action`` until it succeeds, backing off: a stream must not move past a write
    it could not make, so giving up is never an option here; the lag shows the outage."""
    delay = first_delay_s
    attempt = 0
    while True:
        try:
            return action()
        except Exception as exc:
            attempt += 1
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)
