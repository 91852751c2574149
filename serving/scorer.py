"""The scorer: cosine similarity between a user vector and item text embeddings.

Item embeddings are precomputed (``streamrank prepare``), so per request the model runs only
over the user side: a search query or context text, encoded in batches across concurrent
requests by ``@serve.batch``. The deployment asks for a GPU when ``scorer_num_gpus`` > 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ray import serve

from streamrank.catalog import Catalog
from streamrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreTask:
    """One request's scoring work: a user vector and/or a query, and candidate rows."""

    item_rows: np.ndarray
    user_vector: np.ndarray | None = None
    query: str | None = None


def combine(user_vector: np.ndarray | None, query_vector: np.ndarray | None) -> np.ndarray | None:
    """The user's standing interest and what they are searching for now, equally weighted."""
    parts = [v for v in (user_vector, query_vector) if v is not None]
    if not parts:
        return None
    vector = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


def cosine_scores(embeddings: np.ndarray, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return embeddings[rows] @ vector.astype(np.float32)


class ScorerModel:
    """Framework-free core of the scorer (unit-testable, used by the deployment)."""

    def __init__(self, settings: Settings):
        from training.encoder import TextEncoder

        self.catalog = Catalog.load(settings.home_dir)
        self.encoder = TextEncoder(settings.encoder_path)

    def score_batch(self, tasks: list[ScoreTask]) -> list[np.ndarray | None]:
        queries = [t.query for t in tasks if t.query]
        encoded = iter(self.encoder.encode(queries)) if queries else iter(())
        out: list[np.ndarray | None] = []
        for task in tasks:
            query_vector = next(encoded) if task.query else None
            vector = combine(task.user_vector, query_vector)
            if vector is None:
                out.append(None)
            else:
                out.append(cosine_scores(self.catalog.embeddings, task.item_rows, vector))
        return out


@serve.deployment(name="scorer")
class Scorer:
    def __init__(self, settings: Settings):
        self.model = ScorerModel(settings)
        self.max_batch = settings.scorer_max_batch_size
        self.score.set_max_batch_size(settings.scorer_max_batch_size)
        self.score.set_batch_wait_timeout_s(settings.scorer_batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score(self, tasks: list[ScoreTask]) -> list[np.ndarray | None]:
        return self.model.score_batch(tasks)
