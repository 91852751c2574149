"""The catalog's title column: a title is read straight from Arrow's buffers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from streamrank.catalog import CATALOG_FILE, Catalog, Titles


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
