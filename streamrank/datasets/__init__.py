"""Real interaction data as shop events plus an item catalog.

Two columnar tables cross this boundary, nothing else:

- events: ``event_id, user_id, item_id, type, ts`` (ts in epoch seconds, sorted by time),
  optionally ``query`` for search events;
- catalog: ``item_id, title, categories`` (list of str), ``price`` (float, may be NaN),
  ``text`` (what the encoder reads).

``load_dataset`` picks a generic events file + catalog when configured, else MovieLens.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from streamrank.settings import Settings

EVENT_COLUMNS = ["event_id", "user_id", "item_id", "type", "ts"]
CATALOG_COLUMNS = ["item_id", "title", "categories", "price", "text"]


@dataclass(frozen=True)
class Dataset:
    name: str
    events: pd.DataFrame
    catalog: pd.DataFrame


def load_dataset(settings: Settings) -> Dataset:
    if settings.events_file is not None:
        from streamrank.datasets.files import load_files

        if settings.catalog_file is None:
            raise ValueError("STREAMRANK_EVENTS_FILE needs STREAMRANK_CATALOG_FILE as well")
        return load_files(settings.events_file, settings.catalog_file)
    from streamrank.datasets.movielens import load_movielens

    if settings.dataset_dir is None:
        raise FileNotFoundError(
            "no data set found: set STREAMRANK_DATASET_DIR to a MovieLens 100K directory "
            "(`streamrank download-movielens DIR` fetches it) or STREAMRANK_EVENTS_FILE + "
            "STREAMRANK_CATALOG_FILE"
        )
    return load_movielens(settings.dataset_dir)


def iter_events(events: pd.DataFrame, time_shift_s: float = 0.0):  # type: ignore[no-untyped-def]
    """Rows of an events table as validated ``Event`` objects, optionally moved in time
    (the demo moves a historical slice so that it ends now, keeping every gap)."""
    from datetime import UTC, datetime

    from streams.events import Event

    has_query = "query" in events.columns
    for row in events.itertuples(index=False):
        yield Event(
            event_id=row.event_id,
            user_id=row.user_id,
            type=row.type,
            item_id=None if row.type == "search" else row.item_id,
            query=(row.query if has_query else None) if row.type == "search" else None,
            ts=datetime.fromtimestamp(row.ts + time_shift_s, tz=UTC),
        )
