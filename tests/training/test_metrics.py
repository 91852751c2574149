"""Every metric on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    RankerFailed,
    auc,
    coverage,
    mask_hidden,
    mrr,
    ndcg_at_k,
    ranking_report,
    recall_at_k,
    target_ranks,
    top_k,
)


def test_rank_counts_only_unmasked_items_above_the_target() -> None:
    scores = np.array([[0.9, 0.5, 0.7, 0.1]])
    mask_hidden(scores, [[0]])  # the rule hides item 0: it cannot outrank the target
    assert target_ranks(scores, np.array([2])).tolist() == [0]
    assert target_ranks(np.array([[0.9, 0.5, 0.7, 0.1]]), np.array([1])).tolist() == [2]


def test_ties_are_pessimistic() -> None:
    scores = np.zeros((1, 5))
    assert target_ranks(scores, np.array([3])).tolist() == [4]


def test_a_target_the_rule_hides_is_a_miss_for_every_ranker() -> None:
    """Serving could not have shown it (a repeat purchase, a repeat view under ``none``):
    past every cut-off, AUC 0, whatever the ranker scored it; the other row is unaffected."""
    scores = np.array([[0.2, 0.8, 0.5], [0.2, 0.8, 0.5]])
    report = ranking_report(scores, np.array([1, 1]), [[1], []], ks=(1, 10))
    assert report["recall@10"] == pytest.approx(0.5)  # a 3-item catalog: 10 > every rank
    assert report["ndcg@1"] == pytest.approx(0.5)
    assert report["auc"] == pytest.approx(0.5)
    assert report["mrr"] == pytest.approx(0.5)


def test_hit_rate_ndcg_mrr_auc_by_hand() -> None:
    ranks = np.array([0, 2, 15])
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranks, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 16) / 3)
    # 21 candidates each: 20 negatives; rank r means r negatives above the target
    assert auc(ranks, np.array([21, 21, 21])) == pytest.approx(
        ((1 - 0 / 20) + (1 - 2 / 20) + (1 - 15 / 20)) / 3
    )


def test_coverage_and_top_k() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.9, 0.1]])
    assert top_k(scores, 2).tolist() == [[1, 2], [2, 0]]
    assert coverage(top_k(scores, 2), 4) == pytest.approx(3 / 4)


def test_report_over_two_examples() -> None:
    scores = np.array([[0.9, 0.5, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    report = ranking_report(scores, np.array([2, 0]), [[0], []], ks=(1, 10))
    # example 1: rank 0 of 3 candidates; example 2: rank 3 of 4 candidates
    assert report["recall@1"] == pytest.approx(0.5)
    assert report["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert report["mrr"] == pytest.approx((1 + 1 / 4) / 2)
    assert report["auc"] == pytest.approx((1 + 0) / 2)


def test_a_ranker_with_a_nan_score_fails_instead_of_ranking_first() -> None:
    """Every comparison with NaN is false, so a NaN target would have rank -1 and an NDCG of
    inf: such a ranker is reported as failed, never as the best."""
    scores = np.array([[0.1, np.nan, 0.3], [0.2, 0.1, 0.0]], dtype=np.float32)
    with pytest.raises(RankerFailed, match="not finite"):
        ranking_report(scores, np.array([1, 0]), [[], []])
    with pytest.raises(RankerFailed):
        ranking_report(np.full((2, 3), np.inf, np.float32), np.array([1, 0]), [[], []])
    fine = ranking_report(np.array([[0.1, 0.2, 0.3]], np.float32), np.array([2]), [[]])
    assert all(math.isfinite(v) for v in fine.values())
