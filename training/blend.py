"""What a trained model serves with: its own score blended with what the stream knows.

A two-tower model trained with a catalog-wide softmax learns each item's popularity into
its scores, and learns item-to-item transitions only as far as its examples carry them.
The no-model default (``serving/stream_ranker.py``) knows both from the live stream. So the
served score of an item is

    model score + stream_weight * no-model default's score - popularity_penalty * log(1 + n)

where n counts the item's training targets. Both weights are chosen per data set, on the
validation examples, from a small grid (``choose_blend``): zero for both is among the
choices, so a model the stream cannot help is served alone, and a model that learned
little is carried by the stream (large ``stream_weight``) instead of replacing it. On
MovieLens 100K runs chose 0.1 / 0.05, 0.2 / 0.05 and 0.1 / 0.025 (test NDCG@10 0.086 alone,
0.094 as served; 0.086 and 0.087; 0.095 and 0.104).

The same ``Blend.apply`` scores offline (``streamrank evaluate``, ``backtest``, training's
own test metrics) and in serving (``serving/scorer.py``), where the recommender passes the
no-model default's scores of the candidates with each scoring task.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.metrics import HEADLINE, RankerFailed, ranking_report

log = logging.getLogger(__name__)

STREAM_WEIGHTS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
POPULARITY_PENALTIES = (0.0, 0.025, 0.05, 0.1)


@dataclass(frozen=True)
class Blend:
    stream_weight: float = 0.0
    popularity_penalty: float = 0.0

    def apply(
        self, model: np.ndarray, stream: np.ndarray | None, log_counts: np.ndarray
    ) -> np.ndarray:
        """Served scores from the model's, the no-model default's (None: a search, or no
        stream state: the model alone) and the items' ``log(1 + training targets)``, all
        aligned on the same items (the last axis)."""
        if stream is None:
            return model
        return model + self.stream_weight * stream - self.popularity_penalty * log_counts

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Blend:
        """A model's blend, from its ``model.json`` (none recorded: the model alone)."""
        return cls(**meta.get("blend", {}))


def log_counts(targets: np.ndarray, n_items: int) -> np.ndarray:
    """``log(1 + n)`` per item, n its training targets: the popularity the model learned."""
    return np.log1p(np.bincount(targets, minlength=n_items)).astype(np.float32)


def choose_blend(
    model: np.ndarray,
    stream: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    hidden: list[list[int]],
) -> tuple[Blend, list[dict[str, float]]]:
    """The grid's best blend by validation NDCG@10 (ties: the smaller weights), and every
    point tried, for ``model.json``. A point whose scores are not finite is skipped."""
    tried: list[dict[str, float]] = []
    best: tuple[float, Blend] | None = None
    for weight in STREAM_WEIGHTS:
        for penalty in POPULARITY_PENALTIES:
            blend = Blend(weight, penalty)
            try:
                report = ranking_report(blend.apply(model, stream, counts), targets, hidden)
            except RankerFailed as exc:
                log.warning("blend %s failed on the validation examples: %s", blend, exc)
                continue
            tried.append({**blend.to_json(), HEADLINE: report[HEADLINE]})
            if best is None or report[HEADLINE] > best[0]:
                best = (report[HEADLINE], blend)
    if best is None:
        return Blend(), tried
    log.info("blend on validation: %s (ndcg@10 %.4f)", best[1], best[0])
    return best[1], tried
