"""The item catalog and its text embeddings, prepared once and shared by every process.

``prepare_catalog`` writes ``catalog.parquet`` and ``item_embeddings.npy`` under the
runtime home; the Faust worker (categories, embeddings for the interest vector), Feast (the
``item`` feature view's source) and serving (titles, scoring) all load the same files.
Embeddings are recomputed only when the catalog or the encoder changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from streamrank.datasets import CATALOG_COLUMNS

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"
MANIFEST_FILE = "catalog.json"


class Catalog:
    """Items by id: title, categories, price, availability (in stock: may be shown), and a
    unit-norm text embedding per item."""

    def __init__(self, items: pd.DataFrame, embeddings: np.ndarray):
        if len(items) != len(embeddings):
            raise ValueError("catalog and embeddings differ in length")
        self.items = items.reset_index(drop=True)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.ids: list[str] = self.items["item_id"].tolist()
        self.index: dict[str, int] = {item: i for i, item in enumerate(self.ids)}
        self.titles: list[str] = self.items["title"].tolist()
        self.available: np.ndarray = (
            self.items["available"].to_numpy(dtype=bool)
            if "available" in self.items
            else np.ones(len(self.items), dtype=bool)
        )
        self._categories: list[tuple[str, ...]] = [tuple(c) for c in self.items["categories"]]

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.index

    # ItemLookup protocol (streams.profile)
    def categories(self, item_id: str) -> Sequence[str]:
        i = self.index.get(item_id)
        return self._categories[i] if i is not None else ()

    def categories_at(self, row: int) -> Sequence[str]:
        return self._categories[row]

    def embedding_row(self, item_id: str) -> tuple[np.ndarray, int] | None:
        i = self.index.get(item_id)
        return (self.embeddings, i) if i is not None else None

    @cached_property
    def all_categories(self) -> list[str]:
        """Every category of the catalog, sorted (the storefront's filters)."""
        return sorted({c for item in self._categories for c in item})

    def title(self, item_id: str) -> str:
        i = self.index.get(item_id)
        return self.titles[i] if i is not None else item_id

    @classmethod
    def load(cls, home: Path) -> Catalog:
        items = pd.read_parquet(home / CATALOG_FILE)
        items["categories"] = items["categories"].map(list)
        return cls(items, np.load(home / EMBEDDINGS_FILE))


def copy_catalog(source_home: Path, target_home: Path) -> None:
    """Reuse a prepared catalog (items, embeddings, manifest) in another runtime home, so
    tests and benchmarks encode the catalog once."""
    target_home.mkdir(parents=True, exist_ok=True)
    for name in (CATALOG_FILE, EMBEDDINGS_FILE, MANIFEST_FILE):
        shutil.copy(source_home / name, target_home / name)


def _fingerprint(catalog: pd.DataFrame, encoder_path: Path) -> str:
    digest = hashlib.sha256(str(encoder_path.resolve()).encode())
    for item, text in zip(catalog["item_id"], catalog["text"], strict=True):
        digest.update(f"{item}\x1f{text}\x1e".encode())
    return digest.hexdigest()[:16]


def prepare_catalog(
    catalog: pd.DataFrame,
    home: Path,
    encoder_path: Path | None = None,
    batch_size: int = 64,
) -> Catalog:
    """Write the catalog parquet (the Feast item source) and its embeddings, if changed."""
    from training.encoder import TextEncoder, default_encoder_path

    encoder_path = encoder_path or default_encoder_path()
    if "available" not in catalog:  # a source without stock data: everything can be shown
        catalog = catalog.assign(available=True)
    catalog = catalog[[*CATALOG_COLUMNS, "available"]].drop_duplicates("item_id")
    catalog = catalog.reset_index(drop=True).astype({"available": bool})
    fingerprint = _fingerprint(catalog, encoder_path)
    manifest_path = home / MANIFEST_FILE
    table = catalog.assign(created_at=datetime.now(UTC), price=catalog["price"].astype("float64"))
    home.mkdir(parents=True, exist_ok=True)
    if manifest_path.exists() and (home / EMBEDDINGS_FILE).exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == fingerprint:
            # same items and texts: reuse the embeddings, but take the new availability
            log.info("catalog texts unchanged (%s), reusing embeddings", fingerprint)
            table.to_parquet(home / CATALOG_FILE, index=False)
            return Catalog.load(home)

    encoder = TextEncoder(encoder_path)
    log.info("encoding %d item texts", len(catalog))
    embeddings = encoder.encode(catalog["text"].tolist(), batch_size=batch_size, progress=True)
    table.to_parquet(home / CATALOG_FILE, index=False)
    np.save(home / EMBEDDINGS_FILE, embeddings)
    manifest_path.write_text(
        json.dumps({"fingerprint": fingerprint, "items": len(catalog), "dim": embeddings.shape[1]})
    )
    return Catalog(catalog, embeddings)
