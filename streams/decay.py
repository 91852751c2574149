"""Exponentially decayed sums in O(1) per update.

A decayed sum ``S(t) = Σ w_i·exp(-(t - t_i)/τ)`` is stored relative to a reference time
``ref`` as ``Σ w_i·exp((t_i - ref)/τ)``. Adding an event touches one number; reading at ``t``
multiplies by ``exp(-(t - ref)/τ)``. Only when the exponent grows large is everything
rebased to a newer ``ref`` (at most once per ``REBASE_AFTER`` time constants of event time),
so the per-event cost no longer grows with the number of items or categories kept.

The sums do not depend on the order in which events arrive, which is what makes late and
out-of-order events harmless (see ``streams/profile.py``).
"""

from __future__ import annotations

import math

REBASE_AFTER = 30.0
"""Rebase once new events are this many time constants past ``ref`` (e^30 ≈ 1e13, far from
overflow, and old contributions keep ~16 significant digits relative to new ones)."""


def growth(ts: float, ref: float, tau: float) -> float:
    """The factor an event at ``ts`` is stored with, relative to ``ref``."""
    return math.exp((ts - ref) / tau)


def value_at(stored: float, ref: float, tau: float, now: float) -> float:
    return stored * math.exp(-(now - ref) / tau)


def needs_rebase(ts: float, ref: float, shortest_tau: float) -> bool:
    return (ts - ref) / shortest_tau > REBASE_AFTER
