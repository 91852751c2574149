"""verify-consistency's comparison of two profiles, feature by feature."""

import numpy as np

from streams.consistency import feature_differences
from streams.profile import UserProfile


def _with_interest(vector: np.ndarray) -> UserProfile:
    profile = UserProfile("u", as_of=1.0, ref=1.0)
    profile.interest_sum = vector.astype(np.float32)
    return profile


def test_interest_vectors_are_compared_relative_to_their_length() -> None:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=384) * 50.0
    vector[7] = 1e-4  # an element near zero: its own relative error is meaningless
    rounded = vector * (1 + rng.normal(size=384) * 1e-7)  # float32-sized rounding
    rounded[7] = 3e-4
    assert list(feature_differences(_with_interest(vector), _with_interest(rounded))) == []

    moved = vector.copy()
    moved[0] += 1e-3 * np.linalg.norm(vector)  # a real change
    found = list(feature_differences(_with_interest(vector), _with_interest(moved)))
    assert [d.feature for d in found] == ["interest_sum"]


def test_counts_and_lists_must_be_equal() -> None:
    a, b = UserProfile("u"), UserProfile("u")
    b.totals["view"] = 1
    assert [d.feature for d in feature_differences(a, b)] == ["total_view"]
