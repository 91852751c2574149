"""Any events file + item catalog of the documented shape (csv or parquet).

events: ``user_id, item_id, ts, type`` (+ optional ``event_id``, ``query``); ``ts`` as epoch
seconds or anything ``pandas.to_datetime`` reads. catalog: ``item_id, title`` (+ optional
``categories`` as a list or a ``|``-separated string, ``price``, ``text``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from streamrank.datasets import Dataset
from streams.events import EventType


def _read(path: Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _epoch_seconds(column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    return pd.to_datetime(column, utc=True).astype("int64") / 1e9


def load_files(events_path: Path, catalog_path: Path) -> Dataset:
    raw = _read(events_path)
    missing = {"user_id", "item_id", "ts", "type"} - set(raw.columns)
    if missing:
        raise ValueError(f"{events_path}: missing columns {sorted(missing)}")
    unknown = set(raw["type"].unique()) - {t.value for t in EventType}
    if unknown:
        raise ValueError(f"{events_path}: unknown event types {sorted(unknown)}")
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "type": raw["type"].astype(str),
            "ts": _epoch_seconds(raw["ts"]),
        }
    )
    if "event_id" in raw.columns:
        events["event_id"] = raw["event_id"].astype(str)
    else:
        events["event_id"] = (
            "f-" + events["user_id"] + "-" + events["item_id"] + "-" + events["ts"].astype(str)
        )
    if "query" in raw.columns:
        events["query"] = raw["query"]
    events = events.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)

    items = _read(catalog_path)
    if not {"item_id", "title"} <= set(items.columns):
        raise ValueError(f"{catalog_path}: needs columns item_id and title")
    if "categories" in items.columns:
        categories = [
            list(c) if isinstance(c, list | np.ndarray) else [s for s in str(c).split("|") if s]
            for c in items["categories"].fillna("")
        ]
    else:
        categories = [[] for _ in range(len(items))]
    titles = items["title"].fillna("").astype(str)
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str),
            "title": titles,
            "categories": categories,
            "price": items["price"].astype("float64") if "price" in items else np.nan,
            "text": items["text"].astype(str) if "text" in items else titles,
        }
    )
    return Dataset(name=Path(events_path).stem, events=events, catalog=catalog)
