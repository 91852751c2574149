"""Training configuration: one pydantic model.

Defaults come from a sweep on MovieLens 100K (validation NDCG@10):
MiniLM's layers frozen (``text_layers=0``; fine-tuning its top layer lost 40-60 % NDCG on
this data), a 50-item history, AdamW with decay 0.01, dropout 0.3, early stopping.

``streamrank train --config FILE`` reads a YAML or JSON file with any subset of these fields;
command-line flags override the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    epochs: int = Field(default=16, ge=1)
    patience: int = Field(default=3, ge=1, description="epochs without a better validation NDCG@10")
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    text_lr: float = Field(default=3e-5, gt=0, description="for the fine-tuned MiniLM layers")
    weight_decay: float = Field(default=0.01, ge=0)
    dim: int = Field(default=128, ge=8)
    heads: int = Field(default=2, ge=1)
    user_layers: int = Field(default=2, ge=1)
    text_layers: int = Field(default=0, ge=0, le=6, description="top MiniLM layers trained")
    text_batch_items: int = Field(
        default=64, ge=2, description="distinct targets per step run through trained MiniLM"
    )
    text_loss_weight: float = Field(default=1.0, ge=0, description="weight of the MiniLM term")
    history_len: int = Field(default=50, ge=1)
    dropout: float = Field(default=0.3, ge=0, lt=1)
    max_tokens: int = Field(default=48, ge=8)
    max_minutes: float | None = Field(
        default=20, gt=0, description="no new epoch after this long (2 CPU cores: ~6 epochs)"
    )
    limit_users: int | None = Field(default=None, ge=2, description="a slice, for smoke runs")

    @classmethod
    def fast(cls, **overrides: object) -> TrainConfig:
        """The configuration the demo trains with: a one-layer, 64-wide user tower over
        the last 20 items, in batches of 512, at learning rate 3e-3 for 9 epochs. About
        16 s an epoch on 2 cores (the full configuration: about 3.5 minutes, most of it
        the 2-layer, 128-wide transformer over 50 items), under 3 minutes for all of
        MovieLens 100K, examples included. Measured runs are in the README and
        ``bench/results/train-fast-cpu.json``."""
        fast: dict[str, object] = {
            "history_len": 20,
            "dim": 64,
            "user_layers": 1,
            "batch_size": 512,
            "lr": 3e-3,
            "epochs": 9,
            "patience": 3,
            "max_minutes": 3,
        }
        return cls.model_validate({**fast, **overrides})

    @classmethod
    def load(cls, path: Path | None, **overrides: object) -> TrainConfig:
        data: dict[str, object] = {}
        if path is not None:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)
