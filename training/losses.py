"""The training loss: a softmax over the whole catalog, or over sampled negatives.

Up to ``FULL_SOFTMAX_MAX_ITEMS`` items every step scores every item (every other item is a
negative; exact, and cheap at tens of thousands of items). Above it, a step scores the
batch's targets and ``negatives`` items drawn from a proposal Q, and each logit is
corrected by ``log(K·Q(i))``, the expected number of times item i is drawn (sampled
softmax, Jean et al. 2015; the "logQ correction" of Yi et al. 2019): without it, items
that Q draws often would be pushed down for being popular rather than for being wrong.
Q follows the training targets' counts to the power 0.75, so the popular items the full
softmax would have pushed against hardest are drawn most.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

FULL_SOFTMAX_MAX_ITEMS = 50_000
SAMPLED_NEGATIVES = 4096
PROPOSAL_POWER = 0.75


def negatives_for(items: int) -> int:
    """The automatic choice: 0 (the full softmax) up to ``FULL_SOFTMAX_MAX_ITEMS``."""
    return 0 if items <= FULL_SOFTMAX_MAX_ITEMS else SAMPLED_NEGATIVES


class NegativeSampler:
    """Draws negatives, with replacement, from Q ∝ (training targets + 1) ** 0.75."""

    def __init__(
        self,
        targets: np.ndarray,
        n_items: int,
        device: torch.device,
        power: float = PROPOSAL_POWER,
    ):
        weights = (np.bincount(targets, minlength=n_items) + 1.0) ** power
        probabilities = torch.from_numpy(weights / weights.sum()).to(device)
        self.probabilities = probabilities.float()
        self.log_q = torch.log(probabilities).float()

    def sample(self, k: int) -> torch.Tensor:
        return torch.multinomial(self.probabilities, k, replacement=True)


def sampled_softmax_loss(
    target_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of each example's target against the drawn negatives.

    ``target_logits`` [B] and ``negative_logits`` [B, K] are the model's (scaled) logits;
    ``targets`` [B] and ``negatives`` [K] are item rows; ``log_q`` [items] is log Q. A
    drawn negative that is the example's own target (an accidental hit) is masked."""
    correction = math.log(len(negatives))
    positive = target_logits - (log_q[targets] + correction)
    negative = negative_logits - (log_q[negatives] + correction)[None, :]
    negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))
