"""``streamrank evaluate`` without a model: the baselines, the no-model default among them."""

from __future__ import annotations

import json
from pathlib import Path

from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from training.evaluate import evaluate


def test_without_a_model_the_baselines_are_evaluated_and_reported(
    dataset: Dataset, catalog: Catalog, tmp_path: Path
) -> None:
    users = sorted(dataset.events["user_id"].unique())[:80]
    events = dataset.events[dataset.events["user_id"].isin(users)]
    report = evaluate(None, catalog, events, tmp_path / "out")
    assert report["model_version"] is None and report["speed_ms"] == {}
    assert {"stream-default", "item-knn", "popular", "minilm-zero-shot"} <= set(report["results"])
    assert not any(name.startswith("model") for name in report["results"])
    assert report["best_baseline"] in report["results"] and report["failed"] == {}
    assert report["show_again"] == "none" and 0.0 <= report["hidden_targets"] < 0.2
    assert "recently-viewed" in report["results"]
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {"evaluation.json", "evaluation.md", "evaluation.png"}
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["results"]
    assert "stream-default" in (tmp_path / "out" / "evaluation.md").read_text()
