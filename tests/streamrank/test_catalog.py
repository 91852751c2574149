"""The catalog: titles read straight from Arrow's buffers; past the in-memory size, text
vectors mapped from the file and served from 8-bit codes held in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from streamrank import catalog as catalog_module
from streamrank import item_index
from streamrank.catalog import CATALOG_FILE, EMBEDDINGS_FILE, Catalog, Titles, copy_catalog
from streamrank.row_codes import RowCodes


def test_titles_read_any_row_of_any_arrow_layout() -> None:
    chunked = pa.chunked_array([["Heat", None, "Amélie", ""], ["Ran"]])
    titles = Titles(pc.fill_null(chunked, "").combine_chunks())
    assert [titles[i] for i in range(len(titles))] == ["Heat", "", "Amélie", "", "Ran"]
    assert (titles[-1], titles[-5], titles[1:3]) == ("Ran", "Heat", ["", "Amélie"])
    with pytest.raises(IndexError):
        titles[5]
    sliced = Titles(pa.array(["a", "b", "c", "d"]).slice(1, 2))  # an offset into the buffers
    assert [sliced[0], sliced[1], sliced[-1]] == ["b", "c", "c"]


def test_the_prepared_catalog_titles_match_its_file(catalog_home: Path) -> None:
    catalog = Catalog.load(catalog_home)
    table = pq.read_table(catalog_home / CATALOG_FILE, columns=["title"])
    column = table.column("title").to_pylist()
    assert [catalog.titles[i] for i in range(len(catalog))] == [t or "" for t in column]


def mapped_mb(path: Path) -> float:
    """This process's resident pages of its mappings of ``path``."""
    resident, current = 0, ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                current = fields[5] if len(fields) > 5 else ""
            elif fields[0] == "Rss:" and current == str(path):
                resident += int(fields[1])
    return resident / 1024


def test_row_codes_decode_close_to_the_vectors() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20_000, 96)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = RowCodes.encode(vectors.astype(np.float16))
    assert codes.shape == vectors.shape and codes.codes.nbytes == vectors.size  # a byte each
    rows = rng.choice(len(vectors), 600, replace=False)
    decoded = codes[rows]
    assert decoded.dtype == np.float32 and decoded.shape == (600, 96)
    query = vectors[0]
    assert np.abs(decoded @ query - vectors[rows] @ query).max() < 0.005
    assert codes[np.array([], dtype=np.int64)].shape == (0, 96)


def test_a_large_catalog_serves_text_vectors_from_codes_not_the_mapping(
    catalog_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "IN_MEMORY_MAX_ITEMS", 1_000)
    monkeypatch.setattr(item_index, "EXACT_MAX_ITEMS", 1_000)
    copy_catalog(catalog_home, tmp_path)  # its text index is built here, not in the shared home
    catalog = Catalog.load(tmp_path)
    stored = np.load(tmp_path / EMBEDDINGS_FILE)
    assert catalog.embeddings.dtype == np.float16 and not catalog.embeddings.flags.writeable
    assert np.array_equal(catalog.embeddings[[5, 700, 1600]], stored[[5, 700, 1600]])

    catalog.load_for_requests()
    assert isinstance(catalog.row_vectors, RowCodes)
    assert catalog.text_index.kind == "ivf" and catalog.text_index.vectors is catalog.row_vectors
    assert mapped_mb(tmp_path / EMBEDDINGS_FILE) == 0  # read to encode, then unmapped

    rows = np.arange(0, len(catalog), 7)
    exact = stored[rows].astype(np.float32)
    assert np.abs(catalog.vectors(rows) - exact).max() < 0.01
    interest = exact[3] / np.linalg.norm(exact[3])
    truth = set(np.argsort(-(stored.astype(np.float32) @ interest))[:20].tolist())
    found = set(catalog.text_index.search(interest, 20)[0].tolist())
    assert len(found & truth) >= 16
