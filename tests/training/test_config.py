"""The fast configuration's size-dependent choices, scaled with the data."""

from __future__ import annotations

import pytest

from streamrank.catalog import Catalog
from tests.factories import anonymous_sessions
from training.config import DataShape, TrainConfig, scaled, scaled_lr
from training.train import TrainingData, prepare_training_data

MOVIELENS_TUNED = {"history_len": 20, "batch_size": 512, "lr": 3e-3, "epochs": 9, "dim": 64}


def test_movielens_gets_the_values_the_fast_configuration_was_tuned_with(
    movielens_examples: TrainingData,
) -> None:
    data = movielens_examples
    assert {k: getattr(data.config, k) for k in MOVIELENS_TUNED} == pytest.approx(MOVIELENS_TUNED)
    assert data.space.history_len == 20


def test_short_sessions_get_a_short_history_small_batches_and_more_epochs(
    catalog: Catalog,
) -> None:
    data = prepare_training_data(anonymous_sessions(catalog.ids), catalog, TrainConfig.fast())
    config = data.config
    assert config.history_len is not None and 5 <= config.history_len < 20
    assert config.batch_size == 64 and config.lr == pytest.approx(scaled_lr(64))
    assert config.lr < 3e-3 and config.epochs is not None and config.epochs > 9
    assert config.dim == 32  # about two examples an item: a narrow id embedding
    steps = config.epochs * -(-len(data.train_targets) // config.batch_size)
    assert 1700 <= steps < 1700 + -(-len(data.train_targets) // config.batch_size)


def test_bounds_and_explicit_choices_win() -> None:
    tiny = scaled(DataShape(train_examples=50, items=40, history_p90=1))
    assert tiny == {
        "history_len": 5,
        "batch_size": 64,
        "lr": scaled_lr(64),
        "epochs": 40,
        "dim": 32,
        "negatives": 0,
    }
    huge = scaled(DataShape(train_examples=10_000_000, items=1_000_000, history_p90=400))
    assert huge["history_len"] == 20 and huge["batch_size"] == 512 and huge["epochs"] == 3
    shape = DataShape(train_examples=98_000, items=1_682, history_p90=80)
    mine = TrainConfig.fast(epochs=2, batch_size=128).resolve(shape)
    assert (mine.epochs, mine.batch_size, mine.lr) == (2, 128, pytest.approx(scaled_lr(128)))
    full = TrainConfig()  # sets every choice itself but the loss, which follows the catalog
    assert full.resolve(shape) == full.model_copy(update={"negatives": 0})
