"""Ranking metrics over the full catalog: no sampled negatives.

Each evaluation example has one held-out target. Items the shop's rule would not show the
user at that moment are masked (``training.examples.hidden_rows``: serving's own rule), as
RecBole's full-ranking protocol masks seen items; a target the rule hides is a miss for
every ranker, since no ranker could have shown it. The target's rank is the number of
unmasked items scored strictly higher, plus the number tied with it (pessimistic ties, so a
constant scorer earns nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEADLINE = "ndcg@10"
"""The metric that picks: the best epoch, the blend, the best baseline, a promotion."""
MASKED = -np.inf
MISSED = np.iinfo(np.int64).max // 4
"""The rank of a target the shop's rule hides: past every cut-off, a reciprocal rank of 0."""


class RankerFailed(ValueError):
    """A ranker whose scores or metrics are not finite numbers. A NaN score ranks its target
    above everything (every comparison with NaN is false), so a broken ranker would top the
    table: it is reported as failed instead, never ranked or named the best."""


def check_scores(scores: np.ndarray) -> None:
    """Raise ``RankerFailed`` unless every score is a finite number."""
    bad = ~np.isfinite(scores)
    if bad.any():
        raise RankerFailed(
            f"{int(bad.sum())} of {scores.size} scores are not finite (e.g. {scores[bad][0]})"
        )


def mask_hidden(scores: np.ndarray, hidden_rows: Sequence[Sequence[int]]) -> None:
    """Set the scores of the items each row may not show to -inf, in place; a hidden target
    included (``target_ranks`` then counts it as a miss)."""
    for row, cols in enumerate(hidden_rows):
        if len(cols):
            scores[row, np.asarray(cols, dtype=np.int64)] = MASKED


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among the row's unmasked items (pessimistic ties);
    a masked target ranks past every item, a miss at any cut-off."""
    mine = scores[np.arange(len(targets)), targets]
    higher_or_tied = (scores >= mine[:, None]).sum(axis=1)
    ranks = (higher_or_tied - 1).astype(np.int64)  # the target itself is not counted
    ranks[mine == MASKED] = MISSED
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """With one target per example, the hit rate: the share of targets in the top k."""
    return float(np.mean(ranks < k))


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))  # the ideal DCG of one relevant item is 1


def mrr(ranks: np.ndarray) -> float:
    return float(np.mean(1.0 / (ranks + 1.0)))


def auc(ranks: np.ndarray, candidates: np.ndarray) -> float:
    """Share of (target, other candidate) pairs ordered right, averaged over examples;
    ``candidates`` counts each row's unmasked items, the target included."""
    negatives = np.maximum(candidates - 1, 1)
    return float(np.mean(np.clip(1.0 - ranks / negatives, 0.0, 1.0)))  # a hidden target: 0


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one top list."""
    return float(len(np.unique(top_items)) / n_items) if n_items else 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_report(
    scores: np.ndarray,
    targets: np.ndarray,
    hidden_rows: Sequence[Sequence[int]],
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """Every metric for one scorer. ``scores`` is [examples, items] and is modified;
    ``hidden_rows`` are each row's items the shop's rule does not show.
    Raises ``RankerFailed`` when a score or a metric is not a finite number."""
    check_scores(scores)
    mask_hidden(scores, hidden_rows)
    ranks = target_ranks(scores, targets)
    candidates = np.isfinite(scores).sum(axis=1)
    report: dict[str, float] = {}
    for k in ks:
        report[f"recall@{k}"] = recall_at_k(ranks, k)
        report[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    report["mrr"] = mrr(ranks)
    report["auc"] = auc(ranks, candidates)
    report["coverage@10"] = coverage(top_k(scores, 10), scores.shape[1])
    broken = sorted(name for name, value in report.items() if not np.isfinite(value))
    if broken:
        raise RankerFailed(f"metrics not finite: {', '.join(broken)}")
    return report
