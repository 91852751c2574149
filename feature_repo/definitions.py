"""Feast objects: entities ``user``, ``item`` and ``partition``; the views the stream writes
(``user_profile``, ``popular_items``, ``covisitation``, ``stream_checkpoint``), each fed by
a push source; and the catalog's ``item`` view.

Each stream view's columns are exactly the row its state class writes (``to_row``); tests
keep the two equal.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from streams.events import EventType
from streams.popularity import POPULARITY_WINDOWS
from streams.profile import COUNT_WINDOWS, MEMORY_LISTS, RECENT_LISTS, counter_name

USER_PROFILE_VIEW = "user_profile"
ITEM_VIEW = "item"
POPULAR_VIEW = "popular_items"
COVISIT_VIEW = "covisitation"
CHECKPOINT_VIEW = "stream_checkpoint"
STREAM_VIEWS = (USER_PROFILE_VIEW, POPULAR_VIEW, COVISIT_VIEW, CHECKPOINT_VIEW)


def push_source_name(view: str) -> str:
    return f"{view}_push"


user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
partition = Entity(
    name="partition",
    join_keys=["partition_id"],
    value_type=ValueType.INT64,
    description="a partition of the events topic; popularity is kept per partition",
)


def user_profile_schema() -> list[Field]:
    fields = [Field(name="as_of", dtype=Float64)]
    fields += [Field(name=f"total_{t.value}", dtype=Int64) for t in EventType]
    fields += [
        Field(name=counter_name(t, w), dtype=Float64) for t in EventType for w in COUNT_WINDOWS
    ]
    for name in RECENT_LISTS:
        fields += [
            Field(name=f"recent_{name}", dtype=Array(String)),
            Field(name=f"recent_{name}_ts", dtype=Array(Float64)),
        ]
    fields += [
        Field(name="recent_queries", dtype=Array(String)),
        Field(name="recent_queries_ts", dtype=Array(Float64)),
        *(
            Field(name=f"{name}{suffix}", dtype=Array(kind))
            for name in MEMORY_LISTS
            for suffix, kind in (("", String), ("_ts", Float64))
        ),
        Field(name="top_categories", dtype=Array(String)),
        Field(name="category_weights", dtype=Array(Float64)),
        Field(name="interest_sum", dtype=Array(Float32)),
        Field(name="interest_weight", dtype=Float64),
        Field(name="session_id", dtype=String),
        Field(name="session_start", dtype=Float64),
        Field(name="session_events", dtype=Int64),
        Field(name="sessions", dtype=Int64),
        Field(name="applied_offsets", dtype=String),
        Field(name="recent_event_ids", dtype=Array(String)),
        Field(name="outbox", dtype=String),
        Field(name="opted_out", dtype=Int64),  # 1: a tombstone (streams/privacy.py)
    ]
    return fields


def popular_items_schema() -> list[Field]:
    fields = [Field(name="as_of", dtype=Float64), Field(name="applied_offset", dtype=Int64)]
    for window in POPULARITY_WINDOWS:
        fields += [
            Field(name=f"items_{window}", dtype=Array(String)),
            Field(name=f"scores_{window}", dtype=Array(Float64)),
        ]
    return fields


def covisitation_schema() -> list[Field]:
    return [
        Field(name="as_of", dtype=Float64),
        Field(name="neighbours", dtype=Array(String)),
        Field(name="weights", dtype=Array(Float64)),
        Field(name="applied_offset", dtype=Int64),
    ]


def checkpoint_schema() -> list[Field]:
    """The offset, and how many valid events and dead letters the partition held up to it
    (exact across crashes: written in the same row as the offset they cover); the topic's
    partition count as of that offset and, for a partition added by growth, the partition
    it was split from and the count that added it (``streams/growth.py``)."""
    return [
        Field(name="applied_offset", dtype=Int64),
        Field(name="events", dtype=Int64),
        Field(name="dead_letters", dtype=Int64),
        Field(name="partitions", dtype=Int64),
        Field(name="grown_from", dtype=Int64),
        Field(name="grown_at", dtype=Int64),
    ]


STREAM_SCHEMAS = {
    USER_PROFILE_VIEW: user_profile_schema,
    POPULAR_VIEW: popular_items_schema,
    COVISIT_VIEW: covisitation_schema,
    CHECKPOINT_VIEW: checkpoint_schema,
}


def _stream_view(
    home: Path, name: str, entities: list[Entity], ttl: timedelta, description: str
) -> tuple[PushSource, FeatureView]:
    """A view the stream writes: a push source (with a parquet log as its batch source)."""
    log = FileSource(
        name=f"{name}_log",
        path=str(home / "offline" / f"{name}.parquet"),
        timestamp_field="updated_at",
    )
    push = PushSource(name=push_source_name(name), batch_source=log)
    view = FeatureView(
        name=name,
        entities=entities,
        ttl=ttl,
        schema=STREAM_SCHEMAS[name](),
        source=push,
        online=True,
        description=description,
    )
    return push, view


def build_definitions(home: Path, profile_ttl: timedelta) -> list[object]:
    """Every Feast object, with sources under the runtime ``home``."""
    objects: list[object] = [user, item, partition]
    for name, entities, description in (
        (USER_PROFILE_VIEW, [user], "live behaviour profile, written by the Faust worker"),
        (POPULAR_VIEW, [partition], "decayed item popularity per events partition and window"),
        (COVISIT_VIEW, [partition, item], "users who engaged with item then with neighbours"),
        (CHECKPOINT_VIEW, [partition], "last events offset whose effects are all written"),
    ):
        objects.extend(_stream_view(home, name, entities, profile_ttl, description))
    catalog_source = FileSource(
        name="catalog",
        path=str(home / "catalog.parquet"),
        timestamp_field="created_at",
    )
    item_view = FeatureView(
        name=ITEM_VIEW,
        entities=[item],
        ttl=timedelta(days=3650),
        schema=[
            Field(name="title", dtype=String),
            Field(name="categories", dtype=Array(String)),
            Field(name="price", dtype=Float64),
        ],
        source=catalog_source,
        online=True,
        description="item catalog attributes",
    )
    objects.extend([catalog_source, item_view])
    return objects
