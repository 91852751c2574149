"""A tiny-slice training run: the loss goes down, the model directory is complete, its
saved metrics are what an independent computation gives, and serving loads it and scores
a live profile with it (float and int8)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from serving.scorer import ScorerModel, ScoreTask
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from streamrank.settings import Settings
from training.artifact import ITEM_VECTORS_FILE, META_FILE, MODEL_FILE, RankingArtifact
from training.baselines import StreamDefault
from training.config import TrainConfig
from training.encoder import default_encoder_path
from training.train import Trainer, model_scores, no_model_scores, prepare_training_data


def _model_dir(home: Path) -> Path:
    return home / "models" / (home / "models" / "LATEST").read_text().strip()


def test_loss_goes_down_and_the_directory_is_complete(trained: Path) -> None:
    directory = _model_dir(trained)
    for name in (MODEL_FILE, META_FILE, ITEM_VECTORS_FILE):
        assert (directory / name).exists(), name
    meta = json.loads((directory / META_FILE).read_text())
    losses = [epoch["loss"] for epoch in meta["metrics"]["history"]]
    assert losses[-1] < losses[0]
    assert len(meta["data_hash"]) == 16
    assert meta["space"]["item_ids"][:3] == ["1", "2", "3"]
    assert {"ndcg@10", "recall@20", "mrr", "auc", "coverage@10"} <= set(meta["metrics"]["test"])
    assert np.load(directory / ITEM_VECTORS_FILE).shape == (len(meta["space"]["item_ids"]), 32)


def test_serving_loads_the_model_and_scores_a_live_profile(
    trained: Path, dataset: Dataset, catalog: Catalog
) -> None:
    scorer = ScorerModel(Settings(home=trained), _model_dir(trained), device="cpu")
    assert scorer.version == _model_dir(trained).name
    config = TrainConfig(limit_users=40, history_len=20)
    example = prepare_training_data(dataset.events, catalog, config).test[0]
    rows = np.arange(100)
    with_profile, with_query, nothing = scorer.score_batch(
        [
            ScoreTask(rows, example.features),
            ScoreTask(rows, None, "space adventure"),
            ScoreTask(rows),
        ]
    )
    assert with_profile is not None and with_profile.scores.shape == (100,)
    assert with_profile.rows.tolist() == rows.tolist()  # nothing retrieved unless asked
    assert np.isfinite(with_profile.scores).all() and with_profile.scores.std() > 0
    assert with_query is not None and np.isfinite(with_query.scores).all()
    assert nothing is None


def ndcg_at_10_by_hand(scores: np.ndarray, targets: np.ndarray, hidden: list[list[int]]) -> float:
    """NDCG@10 with one relevant item per row, written out apart from training/metrics.py:
    the target's rank among the items shown, 1/log2(rank + 1) within the top ten."""
    gains = []
    for row, target in enumerate(targets):
        shown = np.ones(scores.shape[1], dtype=bool)
        shown[hidden[row]] = False
        rank = 1 + int(np.sum(scores[row][shown] > scores[row][target]))
        gains.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    return float(np.mean(gains))


def test_reloaded_and_int8_models_rank_like_the_trained_one(
    trained: Path, dataset: Dataset, catalog: Catalog
) -> None:
    artifact = RankingArtifact.load(_model_dir(trained), default_encoder_path())
    config = TrainConfig.model_validate(artifact.meta["config"])
    data = prepare_training_data(dataset.events, catalog, config)
    scores, _, _ = model_scores(artifact, data.test)
    int8, _, _ = model_scores(artifact.quantized(), data.test)
    assert scores.shape == (len(data.test), len(catalog))
    for row in range(len(scores)):
        assert np.corrcoef(scores[row], int8[row])[0, 1] > 0.95
    metrics = json.loads((_model_dir(trained) / META_FILE).read_text())["metrics"]
    saved, saved_alone = metrics["test"], metrics["test_model_alone"]
    from training.metrics import ranking_report

    scores, targets, hidden = model_scores(artifact, data.test)
    alone = ranking_report(scores.copy(), targets, hidden)["ndcg@10"]
    assert alone == pytest.approx(saved_alone["ndcg@10"])
    assert alone == pytest.approx(ndcg_at_10_by_hand(scores, targets, hidden))
    served = artifact.served(scores, no_model_scores(data.fit_interactions, data.test, catalog))
    assert ranking_report(served, targets, hidden)["ndcg@10"] == pytest.approx(saved["ndcg@10"])


def test_serving_blends_exactly_as_the_offline_scores_do(
    trained: Path, dataset: Dataset, catalog: Catalog
) -> None:
    """The scorer's served score of a candidate (model, no-model default's score, item
    popularity: ``training/blend.py``) equals the offline one for the same profile."""
    directory = _model_dir(trained)
    scorer = ScorerModel(Settings(home=trained), directory, device="cpu")
    artifact = RankingArtifact.load(directory, default_encoder_path())
    blend = artifact.blend
    assert blend == scorer.blend and (blend.stream_weight, blend.popularity_penalty) != (0, 0)
    config = TrainConfig.model_validate(artifact.meta["config"])
    data = prepare_training_data(dataset.events, catalog, config)
    examples = data.test[:5]
    default = StreamDefault(catalog, catalog.ids, catalog.embeddings)
    default.fit(data.fit_interactions)
    signals = default.signals(examples)
    offline = artifact.served(model_scores(artifact, examples)[0], default.score(examples))
    rows = np.arange(0, len(catalog), 7)
    for i, example in enumerate(examples):
        task = ScoreTask(rows, example.features, None, signals[i])
        (online,) = scorer.score_batch([task])
        assert online is not None and online.rows.tolist() == rows.tolist()
        np.testing.assert_allclose(online.scores, offline[i, rows], rtol=1e-5, atol=1e-5)
        (alone,) = scorer.score_batch([ScoreTask(rows, example.features)])
        assert alone is not None and not np.allclose(alone.scores, online.scores)  # blended
        # what the model finds itself is scored the same way as what it was sent
        (found,) = scorer.score_batch([dataclasses.replace(task, retrieve=20)])
        assert found is not None and found.rows[: len(rows)].tolist() == rows.tolist()
        extra = found.rows[len(rows) :]
        assert len(extra) and not np.isin(extra, rows).any()
        np.testing.assert_allclose(found.scores, offline[i, found.rows], rtol=1e-5, atol=1e-5)
        nearest = np.argsort(-model_scores(artifact, [example])[0][0])[:20]
        assert set(extra) == set(nearest) - set(rows)  # the model's own top 20


def test_fine_tuning_minilm_layers_runs(dataset: Dataset, catalog: Catalog, tmp_path: Path) -> None:
    """The ``text_layers`` > 0 path: cached lower layers, trained top layer."""
    config = TrainConfig(
        limit_users=8,
        epochs=1,
        batch_size=64,
        text_layers=1,
        max_minutes=None,
        history_len=10,
        dim=16,
        text_batch_items=16,
    )
    data = prepare_training_data(dataset.events, catalog, config)
    directory = Trainer(catalog, default_encoder_path(), "cpu").fit(data, tmp_path)
    artifact = RankingArtifact.load(directory, default_encoder_path())
    assert artifact.model.shape.text_layers == 1
    assert np.isfinite(artifact.encode_text(["a film"])).all()
