"""Backtest on real events: point in time (no leakage), metrics that mean what they say."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from training.artifact import RankingArtifact
from training.backtest import ModelScorer, backtest, prepare, write_report
from training.encoder import default_encoder_path
from training.examples import Example, ordered_events


def real_slice(dataset: Dataset, users: int) -> pd.DataFrame:
    chosen = sorted(dataset.events["user_id"].unique())[:users]
    return dataset.events[dataset.events["user_id"].isin(chosen)].reset_index(drop=True)


class Spy:
    """Records what it was asked to score; scores at random."""

    name = "spy"

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.seen: list[Example] = []

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        self.seen.extend(examples)
        return np.random.default_rng(0).random((len(examples), self.n_items))


class Oracle:
    """Knows the answer (or its opposite): the metric pipeline's two fixed points."""

    def __init__(self, catalog: Catalog, worst: bool = False):
        self.catalog = catalog
        self.worst = worst
        self.name = "worst" if worst else "oracle"

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        scores = np.zeros((len(examples), len(self.catalog.ids)), np.float32)
        for row, e in enumerate(examples):
            scores[row, self.catalog.index[e.item_id]] = -1.0 if self.worst else 1.0
        return scores


class Broken:
    """A scorer whose arithmetic overflowed somewhere: NaN for some items."""

    name = "broken"

    def __init__(self, n_items: int):
        self.n_items = n_items

    def score(self, examples: Sequence[Example]) -> np.ndarray:
        scores = np.ones((len(examples), self.n_items), np.float32)
        scores[:, ::7] = np.nan
        return scores


def test_the_scored_profile_never_holds_the_target_or_anything_after_it(
    dataset: Dataset, catalog: Catalog
) -> None:
    events = real_slice(dataset, 20)
    cut = float(np.quantile(events["ts"], 0.7))
    victim = events[events["ts"] >= cut]["user_id"].iloc[0]
    last = float(events[events["user_id"] == victim]["ts"].max())
    planted_item = next(i for i in catalog.ids if i not in set(events["item_id"]))
    planted = pd.DataFrame(
        [
            {
                "event_id": "planted",
                "user_id": victim,
                "item_id": planted_item,
                "type": "purchase",
                "ts": last + 1000.0,
            }
        ]
    )
    # first in the log, latest in event time: a fold in log order would leak it everywhere
    events = pd.concat([planted, events], ignore_index=True)
    spy = Spy(len(catalog.ids))
    data = prepare(events, catalog, cut=cut)
    backtest(data, catalog, [spy], baselines=False)

    assert spy.seen and len(spy.seen) == len(data.examples)
    ordered = ordered_events(events)
    before = ordered.groupby("user_id").cumcount()  # the user's events earlier in the fold
    position = {
        (u, t, i): n
        for u, t, i, n in zip(
            ordered["user_id"], ordered["ts"], ordered["item_id"], before, strict=True
        )
    }
    victim_examples = 0
    for example in spy.seen:
        assert example.ts >= cut
        assert (
            example.features.event_count == position[(example.user_id, example.ts, example.item_id)]
        )
        history = [item for item, _ in example.features.history]
        if example.user_id == victim:
            victim_examples += 1
            if example.ts < last + 1000.0:
                assert planted_item not in history
                assert planted_item not in example.seen
    assert victim_examples > 0
    assert any(e.item_id == planted_item for e in spy.seen)  # it is a target itself


def test_a_backtest_reports_models_and_baselines_overall_over_time_and_per_segment(
    dataset: Dataset, catalog: Catalog, trained: Path, tmp_path: Path
) -> None:
    events = real_slice(dataset, 60)
    model_dir = trained / "models" / (trained / "models" / "LATEST").read_text().strip()
    model = ModelScorer(RankingArtifact.load(model_dir, default_encoder_path()), catalog)
    data = prepare(events, catalog, test_fraction=0.2)
    scorers = [model, Oracle(catalog), Oracle(catalog, worst=True), Broken(len(catalog.ids))]
    report = backtest(data, catalog, scorers, baselines=True, k=10)
    results = report["results"]
    assert "broken" not in results  # reported as failed, never ranked (a NaN ranked first)
    assert "not finite" in report["failed"]["broken"]
    assert {model.name, "oracle", "worst", "popular", "item-knn", "als"} <= set(results)
    assert results["oracle"]["overall"]["recall@10"] == 1.0
    assert results["oracle"]["overall"]["ndcg@10"] == 1.0
    assert results["worst"]["overall"]["hit_rate@10"] == 0.0
    for name, result in results.items():
        overall = result["overall"]
        assert overall["targets"] == report["targets"] == len(data.examples)
        assert sum(s["targets"] for s in result["segments"].values()) == overall["targets"]
        assert sum(c["targets"] for c in result["categories"].values()) == overall["targets"]
        assert sum(t["targets"] for t in result["over_time"]) == overall["targets"]
        for key in ("recall@10", "ndcg@10", "hit_rate@10"):
            assert 0.0 <= overall[key] <= 1.0, (name, key)
    assert report["new_users"] < report["users"]
    out = write_report(report, tmp_path / "report")
    assert {p.name for p in out.iterdir()} == {"backtest.md", "backtest.json", "backtest.png"}
    assert model.name in (out / "backtest.md").read_text()
    assert "**broken failed**" in (out / "backtest.md").read_text()
