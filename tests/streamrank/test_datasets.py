from pathlib import Path

import pandas as pd
import pytest

from streamrank.datasets import Dataset, iter_events, load_dataset
from streamrank.datasets.files import load_files
from streamrank.settings import Settings


def test_movielens_maps_every_rating_to_one_event(dataset: Dataset) -> None:
    events, catalog = dataset.events, dataset.catalog
    assert len(events) == 100_000
    assert events["user_id"].nunique() == 943
    assert len(catalog) == 1682
    assert events["ts"].is_monotonic_increasing
    assert set(events["type"]) == {"view", "click", "add_to_cart", "purchase"}
    assert events["event_id"].is_unique
    toy_story = catalog.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert list(toy_story["categories"]) == ["Animation", "Children's", "Comedy"]
    assert "Animation" in toy_story["text"]


def test_rating_strength_decides_the_event_type(dataset: Dataset) -> None:
    # u.data's first line: user 196 rated item 242 with 3 at 881250949
    row = dataset.events.set_index("event_id").loc["ml-196-242-881250949"]
    assert row["type"] == "click"


def test_events_become_validated_events_shifted_in_time(dataset: Dataset) -> None:
    window = dataset.events.tail(5)
    shift = 1000.0
    events = list(iter_events(window, time_shift_s=shift))
    assert [e.event_id for e in events] == window["event_id"].tolist()
    assert events[-1].epoch == pytest.approx(window["ts"].iloc[-1] + shift)


def test_any_events_file_and_catalog_of_the_same_shape_work(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    catalog = tmp_path / "items.parquet"
    pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": ["x", "y", "x"],
            "ts": ["2026-01-01T00:00:02Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z"],
            "type": ["view", "purchase", "click"],
        }
    ).to_csv(events, index=False)
    pd.DataFrame(
        {
            "item_id": ["x", "y"],
            "title": ["Red shoe", "Blue hat"],
            "categories": ["Shoes", "Hats|Sale"],
        }
    ).to_parquet(catalog)
    dataset = load_dataset(Settings(events_file=events, catalog_file=catalog))
    assert dataset.events["item_id"].tolist() == ["y", "x", "x"]  # sorted by time
    assert dataset.events["event_id"].is_unique
    assert dataset.catalog.set_index("item_id").loc["y", "categories"] == ["Hats", "Sale"]
    assert len(list(iter_events(dataset.events))) == 3


def test_unknown_event_types_in_a_file_are_refused(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "ts": [1], "type": ["like"]}).to_csv(events)
    (tmp_path / "c.csv").write_text("item_id,title\nx,X\n")
    with pytest.raises(ValueError, match="unknown event types"):
        load_files(events, tmp_path / "c.csv")
