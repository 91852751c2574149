"""Training and evaluation examples, built with the stream's own profile function.

Every example is "the user's profile just before event e, and the item of e". The profile
comes from folding the user's earlier events with ``streams.profile.apply_event`` and reading
it with ``derive_features`` at e's time, exactly what the live worker would have stored and
serving would have read at that moment. So an example can never see e or anything after it.

Splits:
- ``leave_last_out``: per user, the last item event is the test target, the one before it the
  validation target, all earlier ones are training targets (the offline-evaluation protocol
  of SASRec/BERT4Rec papers and RecBole);
- ``time_cut``: one global time; everything before it trains, everything after it tests
  (what a backtest does, ``training/backtest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from serving.ranking import ShowAgain, blocked_items
from streamrank.datasets import iter_events
from streams.events import EventType
from streams.profile import ItemLookup, ProfileFeatures, UserProfile, apply_event, derive_features


class Split(StrEnum):
    TRAIN = "train"
    VALID = "valid"
    TEST = "test"


@dataclass(frozen=True)
class Example:
    """One target: who, what they engaged with next, when, and what was known before."""

    user_id: str
    item_id: str
    event_type: EventType
    ts: float
    features: ProfileFeatures
    split: Split
    seen: frozenset[str] = frozenset()
    """Items engaged with before ``ts`` (the history item-to-item baselines read); kept for
    evaluation examples only (a training set of 100k examples would hold millions of ids
    for nothing). What is masked when ranking is the shop's rule, ``hidden_rows``."""


def hidden_rows(
    examples: Sequence[Example], index: Mapping[str, int], show_again: ShowAgain
) -> list[list[int]]:
    """Catalog rows that the shop's rule keeps out of each example's row: serving's own
    ``blocked_items`` on the profile serving would have read at the example's time. An
    offline ranking is judged on the row serving would fill, so a target the rule hides
    (a repeat view under ``none``, a repeat purchase under ``unbought``) is a miss."""
    out = []
    for e in examples:
        hidden = blocked_items(e.features, show_again=show_again)
        out.append([index[i] for i in hidden if i in index])
    return out


def ordered_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events by user, then time; ties keep file order (a stable, documented order)."""
    return events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)


def time_cut(events: pd.DataFrame, test_fraction: float = 0.1) -> float:
    """The time before which ``1 - test_fraction`` of the events lie."""
    return float(np.quantile(events["ts"].to_numpy(), 1.0 - test_fraction))


def leave_last_out_splits(events: pd.DataFrame) -> np.ndarray:
    """Split label per row of ``ordered_events(events)``: the user's last item event is test,
    the one before it validation; searches are never targets (they stay as context)."""
    ordered = ordered_events(events)
    is_item = (ordered["type"] != EventType.SEARCH.value).to_numpy()
    labels = np.full(len(ordered), Split.TRAIN.value, dtype=object)
    item_rows = ordered.index[is_item]
    users = ordered.loc[item_rows, "user_id"].to_numpy()
    rank_from_end = pd.Series(users).groupby(users).cumcount(ascending=False).to_numpy()
    labels[item_rows[rank_from_end == 0]] = Split.TEST.value
    labels[item_rows[rank_from_end == 1]] = Split.VALID.value
    labels[~is_item] = ""
    return labels


def build_examples(
    events: pd.DataFrame,
    items: ItemLookup,
    labels: np.ndarray | None = None,
    progress: bool = True,
) -> Iterator[Example]:
    """Fold each user's events in order, yielding an example before every item event.

    ``labels`` (aligned with ``ordered_events(events)``) give each row's split; by default
    leave-last-out. Rows labelled "" are folded but yield nothing.
    """
    ordered = ordered_events(events)
    if labels is None:
        labels = leave_last_out_splits(events)
    profile: UserProfile | None = None
    seen: set[str] = set()
    rows = zip(iter_events(ordered), labels, strict=True)
    for event, label in tqdm(rows, total=len(ordered), desc="examples", disable=not progress):
        if profile is None or profile.user_id != event.user_id:
            profile, seen = UserProfile(event.user_id), set()
        if label and event.item_id is not None:
            judged = label != Split.TRAIN.value  # only judged examples are masked
            yield Example(
                user_id=event.user_id,
                item_id=event.item_id,
                event_type=event.type,
                ts=event.epoch,
                features=derive_features(profile, event.epoch, memories=judged),
                split=Split(label),
                seen=frozenset(seen) if judged else frozenset(),
            )
        apply_event(profile, event, items)
        if event.item_id is not None:
            seen.add(event.item_id)


def time_cut_labels(events: pd.DataFrame, cut: float) -> np.ndarray:
    """Labels for ``build_examples``: events before ``cut`` train, the rest test."""
    ordered = ordered_events(events)
    before = (ordered["ts"] < cut).to_numpy()
    return np.where(before, Split.TRAIN.value, Split.TEST.value).astype(object)
