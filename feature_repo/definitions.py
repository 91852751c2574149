"""Feast objects: entities ``user`` and ``item``, the ``user_profile`` view fed by a push
source, the catalog's ``item`` view, and the stream's ``popular_items`` view.

The column list of ``user_profile`` is the row that ``streams.profile.UserProfile.to_row``
writes; a test keeps the two equal.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from streams.events import EventType
from streams.profile import COUNT_WINDOWS, RECENT_LISTS, counter_name

USER_PROFILE_VIEW = "user_profile"
USER_PROFILE_PUSH = "user_profile_push"
ITEM_VIEW = "item"
POPULAR_VIEW = "popular_items"
POPULAR_PUSH = "popular_items_push"

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
        Field(name="top_categories", dtype=Array(String)),
        Field(name="category_weights", dtype=Array(Float64)),
        Field(name="interest_sum", dtype=Array(Float32)),
        Field(name="interest_weight", dtype=Float64),
        Field(name="applied_offsets", dtype=String),
        Field(name="recent_event_ids", dtype=Array(String)),
    ]
    return fields


def build_definitions(home: Path, profile_ttl: timedelta) -> list[object]:
    """Every Feast object, with sources under the runtime ``home``."""
    profile_log = FileSource(
        name="user_profile_log",
        path=str(home / "offline" / "user_profiles.parquet"),
        timestamp_field="updated_at",
    )
    profile_push = PushSource(name=USER_PROFILE_PUSH, batch_source=profile_log)
    user_profile = FeatureView(
        name=USER_PROFILE_VIEW,
        entities=[user],
        ttl=profile_ttl,
        schema=user_profile_schema(),
        source=profile_push,
        online=True,
        description="live behaviour profile, written by the Faust worker",
    )
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
    popular_log = FileSource(
        name="popular_items_log",
        path=str(home / "offline" / "popular_items.parquet"),
        timestamp_field="updated_at",
    )
    popular_push = PushSource(name=POPULAR_PUSH, batch_source=popular_log)
    popular_view = FeatureView(
        name=POPULAR_VIEW,
        entities=[partition],
        ttl=profile_ttl,
        schema=[
            Field(name="as_of", dtype=Float64),
            Field(name="item_ids", dtype=Array(String)),
            Field(name="scores", dtype=Array(Float64)),
            Field(name="applied_offset", dtype=Int64),
        ],
        source=popular_push,
        online=True,
        description="decayed item popularity per events partition (top items), by the stream",
    )
    return [
        user,
        item,
        partition,
        profile_push,
        user_profile,
        catalog_source,
        item_view,
        popular_push,
        popular_view,
    ]
