"""Serving replicas follow the registry; a batch that straddles a switch scores each
request with the model it started with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.model_switch import RegistryFollower
from serving.scorer import Scored, ScoreTask, score_by_model
from streamrank.settings import Settings
from tests.training.test_registry import trained_version
from training.artifact import models_root
from training.registry import ModelRegistry


class Constant:
    """A stand-in model that scores every row with its own constant, and counts passes."""

    def __init__(self, value: float):
        self.value, self.passes = value, 0

    def score_batch(self, tasks: list[ScoreTask]) -> list[Scored]:
        self.passes += 1
        return [Scored(t.item_rows, np.full(len(t.item_rows), self.value)) for t in tasks]


def test_a_batch_across_a_switch_scores_each_request_with_its_own_model() -> None:
    old, new = Constant(1.0), Constant(2.0)
    tasks = [ScoreTask(np.arange(n)) for n in (1, 2, 3, 4)]
    batch = [(old, tasks[0]), (new, tasks[1]), (old, tasks[2]), (new, tasks[3])]
    scored = score_by_model(batch)  # type: ignore[arg-type]
    assert [s.scores.tolist() for s in scored if s] == [[1.0], [2.0] * 2, [1.0] * 3, [2.0] * 4]
    assert old.passes == new.passes == 1  # one forward pass per model, not per request


def test_the_follower_switches_once_per_change_and_keeps_a_model_that_fails(
    tmp_path: Path,
) -> None:
    a, b = trained_version(tmp_path, "a-1"), trained_version(tmp_path, "b-2")
    registry = ModelRegistry(tmp_path)
    registry.promote(a)
    loaded: list[Path | None] = []

    def switch(directory: Path | None) -> None:
        if directory is not None and directory.name == "broken":
            raise RuntimeError("truncated weights")
        loaded.append(directory)

    follower = RegistryFollower(Settings(home=tmp_path), models_root(tmp_path) / a, switch)
    assert not follower.check()  # already serving a
    registry.promote(b)
    assert follower.check() and not follower.check()
    trained_version(tmp_path, "broken")
    registry.promote("broken", forced=True)
    assert not follower.check() and not follower.check()  # tried once, logged, b still serves
    assert follower.current == b
    registry.promote(None)
    assert follower.check()
    assert loaded == [models_root(tmp_path) / b, None]
