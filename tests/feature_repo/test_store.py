from __future__ import annotations

from pathlib import Path

import pytest
import redis

from feature_repo.definitions import (
    covisitation_schema,
    popular_items_schema,
    user_profile_schema,
)
from feature_repo.store import apply_repo, redis_connection_string
from streamrank.settings import Settings
from streams.covisitation import CovisitRow
from streams.popularity import PartitionPopularity
from streams.profile import UserProfile
from streams.sink import FeastProfileStore
from tests.factories import ev, fold


def test_each_stream_view_schema_is_exactly_its_state_row() -> None:
    pairs = [
        (user_profile_schema(), UserProfile(user_id="u").to_row(), {"user_id"}),
        (popular_items_schema(), PartitionPopularity(0).to_row(), {"partition_id"}),
        (covisitation_schema(), CovisitRow(0, "a").to_row(), {"partition_id", "item_id"}),
    ]
    for schema, row, keys in pairs:
        assert {f.name for f in schema} == set(row) - keys


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://:s3cret@cache:6380/2", "cache:6380,db=2,password=s3cret"),
        ("rediss://cache", "cache:6379,ssl=true"),
    ],
)
def test_redis_urls_become_feast_connection_strings(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_profiles_round_trip_through_each_online_store(
    backend: str, home: Path, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, object] = {"home": home, "online_store": backend}
    if backend == "redis":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
    store = FeastProfileStore(apply_repo(Settings(**overrides)))  # type: ignore[arg-type]
    profile = fold([ev(1, "purchase", "a"), ev(2, "search", dt=3), ev(3, "view", "b", dt=4)])
    profile.applied_offsets = {1: 99}
    assert store.write_profiles([profile]) == 1
    back = store.read_profiles(["u", "missing"])
    assert back["u"].totals == profile.totals
    assert back["u"].recent == profile.recent
    assert back["u"].applied_offsets == {1: 99}
    assert back["missing"].event_count == 0
    if backend == "redis":
        client = redis.Redis.from_url(str(overrides["redis_url"]))
        keys = client.keys("*")
        assert keys and all(client.ttl(k) > 0 for k in keys)  # every profile expires
