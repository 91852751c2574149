"""Profile features as the model's tensors: one encoding for training and for serving.

``FeatureSpace`` holds the vocabularies (catalog items, categories) and turns
``ProfileFeatures`` (from ``streams.profile.derive_features``) into fixed-shape arrays. It is
saved in the model directory, so serving encodes a live profile exactly as training did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.events import EventType
from streams.profile import COUNTER_TAUS, ProfileFeatures

NUMERIC_FEATURES: list[str] = [
    *sorted(COUNTER_TAUS),
    "event_count",
    "sessions",
    "session_events",
]
"""Counts, log-scaled: decayed per type and window, then lifetime totals."""

TYPE_INDEX: dict[EventType, int] = {t: i + 1 for i, t in enumerate(EventType)}  # 0 = padding


@dataclass
class UserArrays:
    """A batch of users as arrays; ``history`` holds catalog row + 1 (0 is padding), newest
    item last, left-padded."""

    history: np.ndarray  # [B, L] int64
    history_types: np.ndarray  # [B, L] int64
    categories: np.ndarray  # [B, C] float32, the profile's top-category shares
    numeric: np.ndarray  # [B, F] float32
    interest: np.ndarray  # [B, E] float32, pretrained-space interest vector (0 when none)

    def __len__(self) -> int:
        return len(self.history)

    def take(self, rows: np.ndarray | slice) -> UserArrays:
        return UserArrays(
            self.history[rows],
            self.history_types[rows],
            self.categories[rows],
            self.numeric[rows],
            self.interest[rows],
        )

    @staticmethod
    def concat(parts: Sequence[UserArrays]) -> UserArrays:
        return UserArrays(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in UserArrays.__annotations__)
        )


class FeatureSpace:
    def __init__(
        self,
        item_ids: Sequence[str],
        categories: Sequence[str],
        history_len: int,
        interest_dim: int,
    ):
        self.item_ids = list(item_ids)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.categories = list(categories)
        self.category_index = {c: i for i, c in enumerate(self.categories)}
        self.history_len = history_len
        self.interest_dim = interest_dim

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def encode(self, features: Sequence[ProfileFeatures]) -> UserArrays:
        n, length = len(features), self.history_len
        history = np.zeros((n, length), dtype=np.int64)
        types = np.zeros((n, length), dtype=np.int64)
        categories = np.zeros((n, len(self.categories)), dtype=np.float32)
        numeric = np.zeros((n, len(NUMERIC_FEATURES)), dtype=np.float32)
        interest = np.zeros((n, self.interest_dim), dtype=np.float32)
        for row, f in enumerate(features):
            known = [(self.item_index[i], t) for i, t in f.history if i in self.item_index]
            known = known[-length:]
            if known:
                history[row, length - len(known) :] = [i + 1 for i, _ in known]
                types[row, length - len(known) :] = [TYPE_INDEX[t] for _, t in known]
            for cat, share in f.top_categories:
                col = self.category_index.get(cat)
                if col is not None:
                    categories[row, col] = share
            values = [f.counts[name] for name in NUMERIC_FEATURES[: len(COUNTER_TAUS)]]
            values += [f.event_count, f.sessions, f.session_events]
            numeric[row] = [math.log1p(max(v, 0.0)) for v in values]
            if f.interest is not None and len(f.interest) == self.interest_dim:
                interest[row] = f.interest
        return UserArrays(history, types, categories, numeric, interest)

    def to_json(self) -> dict[str, Any]:
        return {
            "item_ids": self.item_ids,
            "categories": self.categories,
            "history_len": self.history_len,
            "interest_dim": self.interest_dim,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpace:
        return cls(
            data["item_ids"],
            data["categories"],
            int(data["history_len"]),
            int(data["interest_dim"]),
        )
