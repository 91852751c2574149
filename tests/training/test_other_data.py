"""Training and evaluation on another events file + catalog of the documented shape:
string SKUs, ISO timestamps, searches, repeat purchases, no categories column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from streamrank.catalog import Catalog, prepare_catalog
from streamrank.datasets import Dataset
from streamrank.datasets.files import load_files
from training.artifact import RankingArtifact
from training.config import TrainConfig
from training.encoder import default_encoder_path
from training.evaluate import evaluate
from training.train import Trainer, prepare_training_data


def test_train_and_evaluate_on_a_shop_shaped_file(dataset: Dataset, tmp_path: Path) -> None:
    users = sorted(dataset.events["user_id"].unique())[:25]
    real = dataset.events[dataset.events["user_id"].isin(users)]
    items = sorted(real["item_id"].unique())
    titles = dataset.catalog.set_index("item_id")["title"]
    events = pd.DataFrame(
        {
            "user_id": "shopper-" + real["user_id"],
            "item_id": "sku-" + real["item_id"],
            "type": real["type"],
            "ts": pd.to_datetime(real["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    # a search for each user's first title just before it, and a repeat of their last item
    firsts = real.sort_values("ts").groupby("user_id").head(1)
    searches = pd.DataFrame(
        {
            "user_id": "shopper-" + firsts["user_id"],
            "item_id": "",
            "type": "search",
            "ts": pd.to_datetime(firsts["ts"] - 5, unit="s", utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "query": firsts["item_id"].map(titles).str.split("(").str[0].str.strip(),
        }
    )
    lasts = real.sort_values("ts").groupby("user_id").tail(1)
    repeats = events.loc[lasts.index].assign(
        type="purchase",
        ts=pd.to_datetime(lasts["ts"] + 60, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    pd.concat([events, searches, repeats]).to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame(
        {"item_id": ["sku-" + i for i in items], "title": [titles[i] for i in items]}
    ).to_csv(tmp_path / "catalog.csv", index=False)

    shop = load_files(tmp_path / "events.csv", tmp_path / "catalog.csv")
    catalog = prepare_catalog(shop.catalog, tmp_path / "home")
    config = TrainConfig(epochs=2, batch_size=64, max_minutes=None, history_len=10, dim=16)
    data = prepare_training_data(shop.events, catalog, config)
    assert len(data.test) == len(users)
    directory = Trainer(catalog, default_encoder_path(), "cpu").fit(data, tmp_path / "m")
    artifact = RankingArtifact.load(directory, default_encoder_path())
    report = evaluate(artifact, catalog, shop.events, tmp_path / "report")
    assert {"model", "model-int8", "popular", "item-knn", "als", "bpr"} <= set(report["results"])
    assert 0.0 <= report["results"]["model"]["ndcg@10"] <= 1.0
    # training measured the no-model default on the same held-out examples as the report
    metrics = artifact.meta["metrics"]
    default = report["results"]["stream-default"]["ndcg@10"]
    assert metrics["stream_default"]["ndcg@10"] == default
    beats = metrics["test"]["ndcg@10"] >= default
    assert artifact.meta["beats_stream_default"] is beats
    for name in ("evaluation.json", "evaluation.md", "evaluation.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_events_spanning_two_decades_with_shared_timestamps(
    dataset: Dataset, catalog: Catalog, tmp_path: Path
) -> None:
    """The shape of a data set collected over twenty years, whole days of events stamped
    with one time: training (the fast configuration, scaled with the data) and evaluation
    end with every ranker's metrics finite, none failed, and the model ranked among them."""
    import math

    users = sorted(dataset.events["user_id"].unique())[:60]
    events = dataset.events[dataset.events["user_id"].isin(users)].copy()
    start, end = events["ts"].min(), events["ts"].max()
    twenty_years = 20 * 365.25 * 86_400
    spread = 820_454_400 + (events["ts"] - start) / (end - start) * twenty_years  # from 1996
    events["ts"] = (spread // 86_400) * 86_400  # a day's events share one timestamp
    assert events.duplicated(["user_id", "ts"]).mean() > 0.3
    config = TrainConfig.fast(epochs=2, max_minutes=None)
    data = prepare_training_data(events, catalog, config)
    directory = Trainer(catalog, default_encoder_path(), "cpu").fit(data, tmp_path / "m")
    artifact = RankingArtifact.load(directory, default_encoder_path())
    report = evaluate(artifact, catalog, events, tmp_path / "report")
    assert report["failed"] == {}
    assert {"model", "recent-popular", "stream-default", "recently-viewed"} <= set(
        report["results"]
    )
    for name, metrics in report["results"].items():
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values()), name
    assert artifact.meta["config"]["epochs"] == 2 and artifact.meta["config"]["batch_size"]
