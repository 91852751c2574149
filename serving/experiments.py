"""Experiment arms: which model a user sees, decided by a stable hash.

The same user always lands in the same arm of an experiment (no flicker between pages, and
the join of impressions with later behaviour stays per arm), arms are split evenly, and
renaming the experiment reshuffles everyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from streamrank.settings import Settings


def assign_arm(user_id: str, arms: Sequence[str], experiment: str) -> str:
    digest = hashlib.sha256(f"{experiment}\0{user_id}".encode()).digest()
    return arms[int.from_bytes(digest[:8], "big") % len(arms)]


def arm_model_dir(settings: Settings, arm: str) -> Path | None:
    """The arm's model directory; None means the default (``model_dir`` or the newest)."""
    value = settings.experiment_arms[arm]
    return Path(value) if value else None
