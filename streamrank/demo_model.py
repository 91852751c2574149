"""The demo's ranking model: trained once per data set with the fast configuration
(``TrainConfig.fast``), reused while the data stays the same (models record the hash of
the data they learnt from), and shown with its held-out NDCG@10 beside the baselines'."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from serving.ranking import ShowAgain
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from streamrank.settings import Settings
from training.artifact import META_FILE, models_root
from training.config import TrainConfig
from training.encoder import default_encoder_path
from training.evaluate import HEADLINE, baseline_results
from training.train import Trainer, prepare_training_data

log = logging.getLogger(__name__)


def trained_on(root: Path, data_hash: str) -> Path | None:
    """The newest complete model under ``root`` trained on data with this hash."""
    found = []
    for meta_path in root.glob(f"*/{META_FILE}"):
        meta = json.loads(meta_path.read_text())
        if meta.get("data_hash") == data_hash and "test" in meta.get("metrics", {}):
            found.append(meta_path.parent)
    return max(found, key=lambda p: p.name, default=None)


def demo_model(
    settings: Settings, dataset: Dataset, catalog: Catalog, limit_users: int | None = None
) -> Path:
    """A model for the demo's data (trained now, or the one already trained on it), after
    printing its test NDCG@10 and the baselines' on the same held-out targets."""
    config = TrainConfig.fast(limit_users=limit_users)
    rule = ShowAgain(settings.ranking_show_again)
    data = prepare_training_data(dataset.events, catalog, config, show_again=rule)
    root = models_root(settings.home_dir)
    model_dir = trained_on(root, data.data_hash)
    if model_dir is not None:
        print(f"      reusing model {model_dir.name}, trained on the same data")
    else:
        started = time.monotonic()
        encoder = settings.encoder_path or default_encoder_path()
        model_dir = Trainer(catalog, encoder, None).fit(data, root)
        print(f"      trained model {model_dir.name} in {time.monotonic() - started:.0f}s")
    meta = json.loads((model_dir / META_FILE).read_text())
    results: dict[str, dict[str, float]] = {"model": meta["metrics"]["test"]}
    failed: dict[str, str] = {}
    baseline_results(data, catalog, config.seed, results, failed)
    print(f"      held-out {HEADLINE} ({len(data.test)} users' last items, whole catalog):")
    for name in sorted(results, key=lambda n: -results[n][HEADLINE]):
        print(f"        {name:18s} {results[name][HEADLINE]:.4f}")
    for name, reason in failed.items():
        print(f"        {name:18s} failed: {reason}")
    return model_dir
