"""Nearest items: exact for a small catalog, faiss past the threshold, close to exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrank import item_index
from streamrank.item_index import ItemIndex


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim))
    vectors = centres[rng.integers(0, 200, n)] + rng.normal(0, 0.4, (n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1)[:, :k]


def test_a_small_catalog_is_searched_exactly() -> None:
    vectors = clustered(500, 16)
    index = ItemIndex.build(vectors, "hnsw")
    assert index.kind == "exact"
    queries = vectors[:5]
    found = index.search(queries, 10)
    assert [set(r) for r in found] == [set(r) for r in exact_top(vectors, queries, 10)]
    assert [len(r) for r in index.search(vectors[0], 900)] == [500]  # no more than there are


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_past_the_threshold_an_index_finds_nearly_the_exact_neighbours(
    kind: item_index.Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(item_index, "EXACT_MAX_ITEMS", 1_000)
    dim = 64 if kind == "hnsw" else 96
    vectors = clustered(20_000, dim)
    queries = clustered(50, dim, seed=1)
    path = tmp_path / f"{kind}.faiss"
    index = ItemIndex.load(vectors, path, kind)  # none saved: built, and saved
    assert index.kind == kind and path.exists()
    truth = exact_top(vectors, queries, 50)
    found = index.search(queries, 50)
    recall = np.mean([len(set(f) & set(t)) / 50 for f, t in zip(found, truth, strict=True)])
    assert recall > 0.9, recall
    again = ItemIndex.load(vectors, path, kind)  # read back, not built again
    assert all((a == b).all() for a, b in zip(again.search(queries, 50), found, strict=True))
    fewer = ItemIndex.load(vectors[:15_000], path, kind)  # over other items: rebuilt
    assert max(r.max() for r in fewer.search(queries, 50)) < 15_000


def test_an_index_that_cannot_be_saved_is_still_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(item_index, "EXACT_MAX_ITEMS", 1_000)
    vectors = clustered(5_000, 32)
    nowhere = tmp_path / "not-a-directory" / "index.faiss"  # a store it cannot write to
    index = ItemIndex.load(vectors, nowhere, "hnsw")
    assert index.kind == "hnsw" and not nowhere.exists()
    assert len(index.search(vectors[0], 10)[0]) == 10
