"""Training examples: leave-last-out labels, the stream's own profile function, and no
example ever sees its own event or anything after it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrank.catalog import Catalog
from streamrank.datasets import Dataset, iter_events
from streams.profile import UserProfile, apply_event, derive_features
from training.examples import Split, build_examples, leave_last_out_splits, ordered_events


def _slice(dataset: Dataset, users: int = 15) -> pd.DataFrame:
    keep = sorted(dataset.events["user_id"].unique())[:users]
    return dataset.events[dataset.events["user_id"].isin(keep)]


def test_leave_last_out_labels() -> None:
    events = pd.DataFrame(
        {
            "event_id": list("abcdef"),
            "user_id": ["u"] * 5 + ["v"],
            "item_id": ["1", "2", None, "3", "4", "9"],
            "type": ["view", "click", "search", "view", "purchase", "view"],
            "ts": [1.0, 2.0, 3.0, 4.0, 5.0, 1.0],
        }
    )
    labels = leave_last_out_splits(events)
    ordered = ordered_events(events)
    got = dict(zip(ordered["event_id"], labels, strict=True))
    assert got == {"a": "train", "b": "train", "c": "", "d": "valid", "e": "test", "f": "test"}


def test_examples_use_the_stream_profile_function(dataset: Dataset, catalog: Catalog) -> None:
    events = _slice(dataset, 3)
    examples = [e for e in build_examples(events, catalog, progress=False) if e.split == Split.TEST]
    for example in examples:
        prior = ordered_events(events)
        prior = prior[(prior["user_id"] == example.user_id) & (prior["ts"] <= example.ts)]
        profile = UserProfile(example.user_id)
        for event in iter_events(prior.iloc[:-1]):  # every event before the target
            apply_event(profile, event, catalog)
        expected = derive_features(profile, example.ts)
        assert example.features.event_count == expected.event_count
        assert example.features.history == expected.history
        # a unit vector of float32 sums: elements within float32 rounding of its length
        np.testing.assert_allclose(example.features.interest, expected.interest, atol=1e-6)


def test_no_example_sees_its_event_or_the_future(dataset: Dataset, catalog: Catalog) -> None:
    events = _slice(dataset)
    user = events["user_id"].iloc[0]
    planted_item = catalog.ids[-1]
    events = events[~((events["user_id"] == user) & (events["item_id"] == planted_item))]
    future = pd.DataFrame(
        {
            "event_id": ["planted"],
            "user_id": [user],
            "item_id": [planted_item],
            "type": ["purchase"],
            "ts": [events["ts"].max() + 86_400.0],
        }
    )
    events = pd.concat([events, future], ignore_index=True)
    counts: dict[str, int] = {}
    for example in build_examples(events, catalog, progress=False):
        before = counts.get(example.user_id, 0)
        assert example.features.event_count == before  # exactly the events before it
        assert example.item_id not in {i for i, _ in example.features.history} or (
            example.item_id in example.seen  # only a genuine earlier engagement
        )
        if example.user_id == user and example.item_id != planted_item:
            assert planted_item not in {i for i, _ in example.features.history}
            assert planted_item not in example.seen
        counts[example.user_id] = before + 1
    assert counts[user] == (events["user_id"] == user).sum()
