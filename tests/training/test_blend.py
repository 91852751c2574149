"""The served blend's weights, chosen on validation examples."""

from __future__ import annotations

import numpy as np

from training.blend import Blend, choose_blend, log_counts


def _case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(50, size=200)
    truth = np.zeros((200, 50))
    truth[np.arange(200), targets] = 1.0
    return truth, rng.normal(size=(200, 50)), targets


def test_a_model_that_knows_nothing_is_carried_by_the_stream() -> None:
    truth, noise, targets = _case()
    counts = log_counts(targets, 50)
    blend, tried = choose_blend(noise, truth + 0.1 * noise, counts, targets, [[]] * 200)
    assert blend.stream_weight >= 1.0 and len(tried) > 10


def test_a_model_the_stream_cannot_help_is_served_alone() -> None:
    truth, noise, targets = _case(1)
    counts = log_counts(targets, 50)
    blend, _ = choose_blend(truth + 0.01 * noise, noise, counts, targets, [[]] * 200)
    assert blend == Blend(0.0, 0.0)


def test_the_blend_is_the_model_alone_without_stream_scores() -> None:
    model = np.array([[0.3, 0.1]])
    blend = Blend(0.5, 0.1)
    assert blend.apply(model, None, np.ones(2)) is model
    np.testing.assert_allclose(
        blend.apply(model, np.array([[1.0, 0.0]]), np.log1p(np.array([3.0, 0.0]))),
        [[0.3 + 0.5 - 0.1 * np.log(4.0), 0.1]],
    )
    assert Blend.from_meta({}) == Blend() and Blend.from_meta({"blend": blend.to_json()}) == blend
