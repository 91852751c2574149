"""MovieLens 100K as shop events: the project's one mapping of ratings to events.

- every rating is one interaction event at its real timestamp, by ``user_id`` on ``item_id``;
- the rating is the strength of the interaction: 5 -> ``purchase``, 4 -> ``add_to_cart``,
  3 -> ``click``, 1-2 -> ``view``;
- ``event_id`` is ``ml-{user}-{item}-{ts}``, stable, so re-sending the file dedupes;
- an item's text is its title plus its genres; its genres are its categories; no price.

The data set's terms forbid redistribution: it is read from its directory, never copied
into the repository.
"""

from __future__ import annotations

import io
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from streamrank.datasets import Dataset

ARCHIVE_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RATING_TO_TYPE = {5: "purchase", 4: "add_to_cart", 3: "click", 2: "view", 1: "view"}


def load_movielens(directory: Path) -> Dataset:
    directory = Path(directory)
    ratings = pd.read_csv(
        directory / "u.data", sep="\t", names=["user", "item", "rating", "ts"], dtype="int64"
    )
    events = pd.DataFrame(
        {
            "event_id": "ml-"
            + ratings["user"].astype(str)
            + "-"
            + ratings["item"].astype(str)
            + "-"
            + ratings["ts"].astype(str),
            "user_id": ratings["user"].astype(str),
            "item_id": ratings["item"].astype(str),
            "type": ratings["rating"].map(RATING_TO_TYPE),
            "ts": ratings["ts"].astype("float64"),
        }
    )
    events = events.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)

    genres = pd.read_csv(directory / "u.genre", sep="|", names=["name", "idx"]).dropna()
    genre_names = genres.sort_values("idx")["name"].tolist()
    columns = ["item", "title", "release", "video_release", "url", *genre_names]
    items = pd.read_csv(
        directory / "u.item", sep="|", names=columns, encoding="latin-1", dtype={"item": "int64"}
    )
    flags = items[genre_names].to_numpy(dtype=bool)
    categories = [
        [g for g, on in zip(genre_names, row, strict=True) if on and g != "unknown"]
        for row in flags
    ]
    titles = items["title"].fillna("").astype(str).str.strip()
    catalog = pd.DataFrame(
        {
            "item_id": items["item"].astype(str),
            "title": titles,
            "categories": categories,
            "price": np.nan,
            "text": [
                f"{t}. Genres: {', '.join(c)}" if c else t
                for t, c in zip(titles, categories, strict=True)
            ],
        }
    )
    return Dataset(name="movielens-100k", events=events, catalog=catalog)


def download_movielens_100k(target: Path) -> Path:
    """Fetch the official archive (for machines without ``../shared/data``)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response:
        payload = response.read()
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for name in ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "README"):
            (target / name).write_bytes(archive.read(f"ml-100k/{name}"))
    return target
