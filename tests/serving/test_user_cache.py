"""The user tower's history summaries, cached: the same vectors as on demand, one
transformer pass per history, the clock-driven context always fresh."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from serving.user_cache import SummaryCache
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from training.artifact import RankingArtifact
from training.config import TrainConfig
from training.encoder import default_encoder_path
from training.features import UserArrays
from training.model import context_tensor
from training.train import prepare_training_data


def trained_users(
    trained: Path, dataset: Dataset, catalog: Catalog, n: int
) -> tuple[RankingArtifact, UserArrays]:
    """The session's trained model, and ``n`` held-out users in its feature space."""
    directory = trained / "models" / (trained / "models" / "LATEST").read_text().strip()
    artifact = RankingArtifact.load(directory, default_encoder_path())
    config = TrainConfig.model_validate(artifact.meta["config"])
    examples = prepare_training_data(dataset.events, catalog, config).test[:n]
    return artifact, artifact.space.encode([e.features for e in examples])


def test_cached_user_vectors_equal_the_on_demand_ones(
    trained: Path, dataset: Dataset, catalog: Catalog
) -> None:
    artifact, users = trained_users(trained, dataset, catalog, 12)
    cache = SummaryCache(artifact, size=8)
    passes = 0
    summaries = artifact.summaries

    def counted(history: np.ndarray, types: np.ndarray):  # type: ignore[no-untyped-def]
        nonlocal passes
        passes += len(history)
        return summaries(history, types)

    artifact.summaries = counted  # type: ignore[method-assign]
    on_demand = artifact.user_vectors(users)
    first = cache.user_vectors(users)
    np.testing.assert_allclose(first, on_demand, atol=1e-5)
    assert passes == 12 + 12 and len(cache) == 8  # the LRU's bound
    # the newest 8 histories again, their clock-driven counts moved: served from the
    # cache, and the vectors follow the new counts
    later = dataclasses.replace(users, numeric=users.numeric * 0.5)
    newest = later.take(np.arange(4, 12))
    again = cache.user_vectors(newest)
    assert passes == 24  # no transformer pass
    np.testing.assert_allclose(again, artifact.user_vectors(newest), atol=1e-5)
    assert not np.allclose(again, first[4:])
    # a new engagement is a new history, so a new summary
    history = newest.history.copy()
    history[0, :-1], history[0, -1] = history[0, 1:], 1
    cache.user_vectors(dataclasses.replace(newest, history=history))
    assert passes == 24 + 8 + 1  # the on-demand check above, then the one changed history
    # size 0: nothing kept, the same vectors
    unkept = SummaryCache(artifact, size=0)
    np.testing.assert_allclose(unkept.user_vectors(users), on_demand, atol=1e-5)
    assert len(unkept) == 0


def test_the_numpy_head_equals_the_torch_head(
    trained: Path, dataset: Dataset, catalog: Catalog
) -> None:
    """Serving on a CPU runs the user tower's head in numpy: the same vectors as torch's."""
    artifact, users = trained_users(trained, dataset, catalog, 16)
    summaries = artifact.summaries(users.history, users.history_types)
    context = context_tensor(users.categories, users.numeric, users.interest, "cpu")
    with torch.inference_mode():
        expected = artifact.model.user_from(summaries, context).numpy()
    assert artifact.cpu_head is not None
    np.testing.assert_allclose(artifact.user_vectors(users), expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    assert artifact.quantized().cpu_head is None  # int8 weights: torch's own kernels
