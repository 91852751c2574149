"""Small, hand-checkable inputs for profile tests (a three-item catalog and event makers),
and generated event files of shapes the real data does not have."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np
import pandas as pd

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


def anonymous_sessions(
    item_ids: Sequence[str], sessions: int = 1500, repeat: float = 0.25, seed: int = 3
) -> pd.DataFrame:
    """A shop's anonymous browsing, the shape MovieLens lacks: views only, one id per
    session, a third of the sessions a single view, the rest 2-8 views that walk within a
    group of related items (what co-visitation learns) and come back to an item already
    seen in the session with probability ``repeat``. Popularity is a flat power law over
    600 items, so no single item wins every list."""
    rng = np.random.default_rng(seed)
    items = np.asarray(item_ids[:600])
    group = rng.integers(60, size=len(items))
    members = [np.flatnonzero(group == g) for g in range(60)]
    popularity = 1.0 / rng.permutation(np.arange(1, len(items) + 1)) ** 0.8
    rows = []
    for s in range(sessions):
        length = 1 if rng.random() < 1 / 3 else int(rng.integers(2, 9))
        current = int(rng.choice(len(items), p=popularity / popularity.sum()))
        seen = [current]
        for k in range(length):
            rows.append((f"session-{s}", items[current], T0 + s * 300.0 + 30 * k))
            if len(seen) > 1 and rng.random() < repeat:
                current = int(rng.choice(seen[:-1]))
            else:
                near = members[group[current]]
                near = near[near != current]
                current = int(rng.choice(near, p=popularity[near] / popularity[near].sum()))
            seen.append(current)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame["type"] = "view"
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame
