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
import mmap
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamrank.datasets import CATALOG_COLUMNS
from streamrank.item_index import ItemIndex
from streamrank.row_codes import RowCodes

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"
MANIFEST_FILE = "catalog.json"
TEXT_INDEX_FILE = "item_text.faiss"
IN_MEMORY_MAX_ITEMS = 50_000
SEPARATOR = "\x1f"  # joins an item's categories while they are told apart


class Titles(Sequence[str]):
    """Item titles in one Arrow buffer (about a quarter of what as many Python strings
    take), a ``str`` made only for the few a request shows: decoded from the buffer's
    bytes (a pyarrow scalar per title cost ten times as much)."""

    def __init__(self, column: pa.Array):
        self._column = pc.cast(column, pa.large_string())  # 64-bit offsets at any size
        # zero-copy numpy views of the UTF-8 bytes and of where each title starts and ends
        _, offsets, data = self._column.buffers()
        start = self._column.offset
        self._offsets = np.frombuffer(offsets, np.int64)[start : start + len(column) + 1]
        self._data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._column)

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> list[str]: ...
    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return self._column[row].to_pylist()
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        row %= len(self)
        return self._data[self._offsets[row] : self._offsets[row + 1]].tobytes().decode()


class Catalog:
    """Items by row: id, title, categories, price, availability (in stock: may be shown),
    and a unit-norm text embedding each.

    Built to be held by every worker and replica at a million items: read with Arrow, no
    data frame, titles kept in one Arrow buffer, one shared tuple per distinct category
    set, texts read from the parquet file only when asked for (``texts``: training, and
    items a model never saw): 250 MB at a million items, where a data frame's took 400.
    The embeddings are stored float16; up to ``IN_MEMORY_MAX_ITEMS`` items they are held
    as float32 (at most 77 MB, and the request path's products stay BLAS-fast), above it
    memory-mapped for random access (``map_rows``): the profile worker reads single rows
    from the mapping, a serving process reads them from 8-bit codes in its own memory
    (``row_vectors``; a million items: 366 MB, against 768 MB of file or 1.5 GB of
    float32)."""

    def __init__(self, table: pa.Table, embeddings: np.ndarray, source: Path):
        """``table``: the catalog file's ``item_id``, ``title``, ``categories``, ``price``
        and ``available`` columns; ``source``: that file (``texts`` reads it)."""
        if len(table) != len(embeddings):
            raise ValueError("catalog and embeddings differ in length")
        self.embeddings = embeddings
        self.ids: list[str] = table.column("item_id").cast(pa.string()).to_pylist()
        self.index: dict[str, int] = {item: i for i, item in enumerate(self.ids)}
        self.titles = Titles(pc.fill_null(table.column("title"), "").combine_chunks())
        self.available: np.ndarray = table.column("available").to_numpy().astype(bool)
        self.prices: np.ndarray = table.column("price").to_numpy().astype(np.float64)
        # one tuple per distinct set: the column dictionary-encoded, each entry split once
        categories = table.column("categories").cast(pa.list_(pa.string()))  # none: nulls
        joined = pc.binary_join(categories, SEPARATOR)
        joined = pc.dictionary_encode(pc.fill_null(joined, ""))
        joined = joined.combine_chunks()
        distinct = [tuple(s.split(SEPARATOR)) if s else () for s in joined.dictionary.to_pylist()]
        self.category_sets: np.ndarray = joined.indices.to_numpy(zero_copy_only=False)
        """Per row, the index of its distinct category set."""
        self._categories: list[tuple[str, ...]] = [distinct[i] for i in self.category_sets]
        self._set_starts, self._set_codes = _category_codes(distinct)
        self._source = source

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

    def category_membership(self, rows: np.ndarray) -> np.ndarray:
        """Which categories each of ``rows`` is in: a 0/1 matrix, a row per item and a
        column per category that any of them is in (a catalog may have thousands). The
        items' category codes are gathered in a few array operations, no Python per item:
        scipy's sparse row indexing cost twice as much, most of it its own Python."""
        sets = self.category_sets[rows]
        first = self._set_starts[sets]
        counts = self._set_starts[sets + 1] - first
        ends = np.cumsum(counts)
        flat = np.arange(ends[-1] if len(ends) else 0) + np.repeat(first - (ends - counts), counts)
        columns, column = np.unique(self._set_codes[flat], return_inverse=True)
        out = np.zeros((len(sets), len(columns)), np.float32)
        out[np.repeat(np.arange(len(sets)), counts), column] = 1.0
        return out

    def embedding_row(self, item_id: str) -> tuple[np.ndarray, int] | None:
        i = self.index.get(item_id)
        return (self.embeddings, i) if i is not None else None

    def vectors(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The text embeddings of ``rows`` as float32 (past ``IN_MEMORY_MAX_ITEMS`` items,
        decoded from their 8-bit codes: ``row_vectors``)."""
        return np.asarray(self.row_vectors[np.asarray(rows)], dtype=np.float32)

    @cached_property
    def row_vectors(self) -> np.ndarray | RowCodes:
        """What ``vectors`` and the text index's refine read: the float32 embeddings up to
        ``IN_MEMORY_MAX_ITEMS`` items; past it their 8-bit codes in this process's memory
        (``streamrank/row_codes.py``: half the file, no page faults on the request path),
        made at the first read, which only serving processes make (the profile worker
        reads single rows from the mapping, ``embedding_row``)."""
        if len(self) <= IN_MEMORY_MAX_ITEMS:
            return self.embeddings
        codes = RowCodes.encode(self.embeddings)
        unmap_pages(self.embeddings)  # read once to encode: not this process's any more
        return codes

    def load_for_requests(self) -> None:
        """Build what requests read (the text index, ``row_vectors``) now, at a replica's
        start, rather than in its first request (seconds at a million items)."""
        self.text_index  # noqa: B018 - a cached property
        self.row_vectors  # noqa: B018

    def texts(self, rows: Sequence[int] | None = None) -> list[str]:
        """Item texts (all, or of ``rows``), read from the catalog file."""
        column = pq.read_table(self._source, columns=["text"]).column("text")
        if rows is not None:
            column = column.take(pa.array(np.asarray(rows, dtype=np.int64)))
        return [str(t) for t in column.to_pylist()]

    @cached_property
    def text_index(self) -> ItemIndex:
        """Nearest items by text embedding (``streamrank/item_index.py``): exact up to
        ``EXACT_MAX_ITEMS``, else the ``ivf`` index saved beside the catalog (built by
        ``streamrank prepare``, or here on first use)."""
        return self.saved_text_index().refined_from(self.row_vectors)

    def saved_text_index(self) -> ItemIndex:
        """The text index as saved beside the catalog (built and saved when missing: what
        ``streamrank prepare`` does), its shortlists scored from the mapped file."""
        return ItemIndex.load(self.embeddings, self._source.parent / TEXT_INDEX_FILE, "ivf")

    @cached_property
    def all_categories(self) -> list[str]:
        """Every category of the catalog, sorted (the storefront's filters)."""
        return sorted({c for item in set(self._categories) for c in item})

    def title(self, item_id: str) -> str:
        i = self.index.get(item_id)
        return self.titles[i] if i is not None else item_id

    @classmethod
    def load(cls, home: Path) -> Catalog:
        source = home / CATALOG_FILE
        columns = ["item_id", "title", "categories", "price", "available"]
        embeddings = map_rows(home / EMBEDDINGS_FILE)
        if len(embeddings) <= IN_MEMORY_MAX_ITEMS:
            embeddings = np.asarray(embeddings, dtype=np.float32)
        catalog = cls(pq.read_table(source, columns=columns), embeddings, source)
        pa.default_memory_pool().release_unused()  # the file's columns, decoded and dropped
        return catalog


def map_rows(path: Path) -> np.ndarray:
    """A read-only array over the rows of a ``.npy`` file, memory-mapped for random access.

    Requests read a few hundred scattered rows of a file of up to gigabytes; the kernel's
    default read-ahead turns each such page fault into megabytes read around it, and a
    million-item catalog's whole file lands in the process's resident memory within a
    request or two. Random-access advice reads only the pages asked for (pages the cache
    already holds still come in as whole folios: serving reads ``row_vectors`` instead).
    A plain ndarray over the mapping, not ``np.memmap``, whose own indexing costs ~0.6 µs
    a call."""
    with path.open("rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(file)
        offset = file.tell()
        if fortran_order:
            raise ValueError(f"{path}: rows must be stored in C order")
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    mapping.madvise(mmap.MADV_RANDOM)
    count = int(np.prod(shape))
    return np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape)


def unmap_pages(rows: np.ndarray) -> None:
    """Unmap the pages of a ``map_rows`` array that this process has touched (they stay
    in the page cache, the kernel's): its resident memory drops back to what it holds."""
    base: object = rows
    while base is not None and not isinstance(base, mmap.mmap):  # views, then the buffer
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if isinstance(base, mmap.mmap):
        base.madvise(mmap.MADV_DONTNEED)


def catalog_fingerprint(home: Path) -> str:
    """The prepared catalog's fingerprint (its items, texts and encoder)."""
    return str(json.loads((home / MANIFEST_FILE).read_text())["fingerprint"])


def copy_catalog(source_home: Path, target_home: Path) -> None:
    """Reuse a prepared catalog (items, embeddings, manifest) in another runtime home, so
    tests and benchmarks encode the catalog once."""
    target_home.mkdir(parents=True, exist_ok=True)
    for name in (CATALOG_FILE, EMBEDDINGS_FILE, MANIFEST_FILE):
        shutil.copy(source_home / name, target_home / name)


def _fingerprint(catalog: pd.DataFrame, encoder_path: Path) -> str:
    digest = hashlib.sha256(f"{encoder_path.resolve()}\x1dfloat16".encode())
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
    embeddings = embeddings.astype(np.float16)  # what every process maps (``Catalog``)
    table.to_parquet(home / CATALOG_FILE, index=False)
    np.save(home / EMBEDDINGS_FILE, embeddings)
    manifest_path.write_text(
        json.dumps({"fingerprint": fingerprint, "items": len(catalog), "dim": embeddings.shape[1]})
    )
    return Catalog.load(home)


def _category_codes(sets: Sequence[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct category sets as (starts, codes): set ``i``'s categories, each once,
    are ``codes[starts[i]:starts[i + 1]]``, a code per category of the catalog."""
    column: dict[str, int] = {}
    unique = [dict.fromkeys(names) for names in sets]
    codes = np.fromiter(
        (column.setdefault(c, len(column)) for names in unique for c in names), np.int64
    )
    return np.cumsum([0, *(len(names) for names in unique)], dtype=np.int64), codes
