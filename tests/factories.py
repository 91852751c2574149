"""Small, hand-checkable inputs for profile tests: a three-item catalog and event makers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np

from streams.events import Event
from streams.profile import UserProfile, apply_event

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class Items:
    """A three-item catalog with orthogonal embeddings."""

    cats: ClassVar[dict[str, tuple[str, ...]]] = {
        "a": ("Horror",),
        "b": ("Comedy",),
        "c": ("Horror", "Comedy"),
    }
    vecs: ClassVar[dict[str, np.ndarray]] = {
        "a": np.array([1.0, 0, 0]),
        "b": np.array([0, 1.0, 0]),
        "c": np.array([0, 0, 1.0]),
    }

    def categories(self, item_id: str) -> Sequence[str]:
        return self.cats.get(item_id, ())

    def embedding(self, item_id: str) -> np.ndarray | None:
        return self.vecs.get(item_id)

    def embedding_row(self, item_id: str) -> tuple[np.ndarray, int] | None:
        return (MATRIX, ROWS[item_id]) if item_id in ROWS else None


ROWS = {item: i for i, item in enumerate(Items.vecs)}
MATRIX = np.array(list(Items.vecs.values()), dtype=np.float32)
ITEMS = Items()


def ev(i: int, type_: str = "view", item: str | None = "a", dt: float = 0.0, **kw: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "user_id": "u",
        "type": type_,
        "ts": datetime.fromtimestamp(T0 + dt, UTC),
    }
    if type_ == "search":
        fields["query"] = kw.pop("query", "shoes")
    else:
        fields["item_id"] = item
    fields.update(kw)
    return Event.model_validate(fields)


def fold(events: list[Event]) -> UserProfile:
    profile = UserProfile(user_id="u")
    for e in events:
        apply_event(profile, e, ITEMS)
    return profile
