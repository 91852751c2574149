"""Everything a fresh home needs before the stream and serving start: the catalog and its
embeddings (and, past ``EXACT_MAX_ITEMS`` items, their nearest-item index), the Feast
registry and tables, and the item view loaded online."""

from __future__ import annotations

import logging

from feature_repo.store import apply_repo, materialize_items
from streamrank.catalog import Catalog, prepare_catalog
from streamrank.datasets import Dataset, load_dataset
from streamrank.settings import Settings

log = logging.getLogger(__name__)


def prepare(settings: Settings, dataset: Dataset | None = None) -> Catalog:
    dataset = dataset or load_dataset(settings)
    catalog = prepare_catalog(
        dataset.catalog, settings.home_dir, settings.encoder_path, settings.encode_batch_size
    )
    catalog.saved_text_index()  # built and saved now, not at a replica's first request
    store = apply_repo(settings)
    materialize_items(store)
    log.info("prepared %s: %d items in %s", dataset.name, len(catalog), settings.home_dir)
    return catalog
