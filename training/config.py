"""Training configuration: one pydantic model.

Defaults come from a sweep on MovieLens 100K (validation NDCG@10):
MiniLM's layers frozen (``text_layers=0``; fine-tuning its top layer lost 40-60 % NDCG on
this data), a 50-item history, AdamW with decay 0.01, dropout 0.3, early stopping.

``streamrank train --config FILE`` reads a YAML or JSON file with any subset of these fields;
command-line flags override the file.

The fast configuration leaves the choices that depend on the data's size unset, and
``TrainConfig.resolve`` sets them from the training examples (``DataShape``) by the rules
in ``scaled``: on MovieLens 100K they give the values it was tuned with (history 20, batch
512, learning rate 3e-3, 9 epochs, 64 wide); a data set of short sessions gets a short
history, small batches at a lower rate and more epochs, so that every data set gets about
the same number of optimizer steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    epochs: int | None = Field(default=16, ge=1, description="unset: scaled with the data")
    patience: int = Field(default=3, ge=1, description="epochs without a better validation NDCG@10")
    batch_size: int | None = Field(default=256, ge=1, description="unset: scaled with the data")
    lr: float | None = Field(default=1e-3, gt=0, description="unset: scaled with the batch")
    text_lr: float = Field(default=3e-5, gt=0, description="for the fine-tuned MiniLM layers")
    weight_decay: float = Field(default=0.01, ge=0)
    dim: int | None = Field(default=128, ge=8, description="unset: scaled with the data")
    heads: int = Field(default=2, ge=1)
    user_layers: int = Field(default=2, ge=1)
    text_layers: int = Field(default=0, ge=0, le=6, description="top MiniLM layers trained")
    text_batch_items: int = Field(
        default=64, ge=2, description="distinct targets per step run through trained MiniLM"
    )
    text_loss_weight: float = Field(default=1.0, ge=0, description="weight of the MiniLM term")
    history_len: int | None = Field(default=50, ge=1, description="unset: scaled with the data")
    negatives: int | None = Field(
        default=None,
        ge=0,
        description="0: softmax over the whole catalog; K: K sampled negatives a step "
        "(logQ-corrected); unset: 0 up to 50,000 items, else 4,096 (training/losses.py)",
    )
    dropout: float = Field(default=0.3, ge=0, lt=1)
    max_tokens: int = Field(default=48, ge=8)
    max_minutes: float | None = Field(
        default=20, gt=0, description="no new epoch after this long (2 CPU cores: ~6 epochs)"
    )
    limit_users: int | None = Field(default=None, ge=2, description="a slice, for smoke runs")

    @classmethod
    def fast(cls, **overrides: object) -> TrainConfig:
        """The configuration the demo trains with: a one-layer user tower, its history
        length, width, batch, learning rate and epochs scaled with the data (``scaled``),
        stopped after 3 minutes. On MovieLens 100K: the last 20 items, 64 wide, batches of
        512 at 3e-3 for 9 epochs, about 16 s an epoch on 2 cores (the full
        configuration: about 3.5 minutes, most of it the 2-layer, 128-wide transformer over
        50 items), under 3 minutes examples included. Measured runs are in the README and
        ``bench/results/train-fast-cpu.json``."""
        fast: dict[str, object] = {
            "history_len": None,
            "dim": None,
            "user_layers": 1,
            "batch_size": None,
            "lr": None,
            "epochs": None,
            "patience": 3,
            "max_minutes": 3,
        }
        return cls.model_validate({**fast, **overrides})

    def resolve(self, shape: DataShape) -> TrainConfig:
        """This configuration with every unset choice set from the data (``scaled``)."""
        rules = scaled(shape)
        unset = {k: v for k, v in rules.items() if getattr(self, k) is None}
        if self.lr is None:  # the rate follows the batch actually used
            unset["lr"] = scaled_lr(self.batch_size or int(unset["batch_size"]))
        return self.model_copy(update=unset)

    @classmethod
    def load(cls, path: Path | None, **overrides: object) -> TrainConfig:
        data: dict[str, object] = {}
        if path is not None:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


@dataclass(frozen=True)
class DataShape:
    """What the size-dependent choices are scaled from: the training examples."""

    train_examples: int
    items: int
    history_p90: int  # the 90th percentile of the engaged items an example's profile holds


STEPS = 1700
"""Optimizer steps a fast training aims at: about MovieLens 100K's 9 epochs of 192 batches
of 512, where the fast configuration's validation NDCG@10 had levelled off."""
BASE_BATCH, BASE_LR = 512, 3e-3


def scaled_lr(batch_size: int) -> float:
    """The learning rate scaled with the square root of the batch (Adam's rule of thumb),
    3e-3 at 512."""
    return BASE_LR * math.sqrt(batch_size / BASE_BATCH)


def scaled(shape: DataShape) -> dict[str, int | float]:
    """The size-dependent choices for a data set:

    - ``history_len``: the 90th percentile of the profile's engaged items at the
      examples, between 5 and 20 (short sessions do not pay for 20 positions);
    - ``batch_size``: a power of two near examples / 200, between 64 and 512, so a small
      data set still gets hundreds of steps an epoch;
    - ``lr``: ``scaled_lr`` of that batch;
    - ``epochs``: enough for about ``STEPS`` steps, between 3 and 40;
    - ``dim`` (the item-id embedding and the tower's width): 64 where the items have
      8 or more training examples each on average, else 32 (an id seen once or twice
      learns little but noise);
    - ``negatives``: the full softmax up to 50,000 items, sampled negatives above
      (``training/losses.py``)."""
    from training.losses import negatives_for

    batch = 2 ** round(math.log2(max(shape.train_examples / 200, 1)))
    batch = min(max(batch, 64), BASE_BATCH)
    steps_per_epoch = max(math.ceil(shape.train_examples / batch), 1)
    per_item = shape.train_examples / max(shape.items, 1)
    return {
        "history_len": min(max(shape.history_p90, 5), 20),
        "batch_size": batch,
        "lr": scaled_lr(batch),
        "epochs": min(max(math.ceil(STEPS / steps_per_epoch), 3), 40),
        "dim": 64 if per_item >= 8 else 32,
        "negatives": negatives_for(shape.items),
    }
