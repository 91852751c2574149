from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import (
    USER_PROFILE_VIEW,
    build_definitions,
    covisitation_schema,
    popular_items_schema,
    user_profile_schema,
)
from feature_repo.redis_store import ReplicationLost
from feature_repo.store import apply_repo, redis_connection_string, repo_yaml
from infra.redis import RedisClusterServers
from streamrank.settings import Settings
from streams.covisitation import CovisitRow
from streams.popularity import PartitionPopularity
from streams.profile import UserProfile, derive_features
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
        (
            "redis://:pw@10.0.0.2:7000, redis://10.0.0.3:7001",
            "10.0.0.2:7000,10.0.0.3:7001,password=pw",
        ),
    ],
)
def test_redis_urls_become_feast_connection_strings(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize("url", ["", "127.0.0.1:6379", "http://cache:6379", "redis://"])
def test_a_redis_url_without_scheme_or_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        redis_connection_string(url)


def test_several_redis_nodes_need_the_cluster_store() -> None:
    with pytest.raises(ValueError, match="redis_cluster"):
        Settings(online_store="redis", redis_url="redis://a:7000,redis://b:7000")
    cluster = Settings(online_store="redis_cluster", redis_url="redis://a:7000,redis://b:7000")
    assert repo_yaml(cluster)["online_store"]["redis_type"] == "redis_cluster"
    assert repo_yaml(Settings(online_store="redis"))["online_store"]["redis_type"] == "redis"


@pytest.fixture(params=["sqlite", "redis", "redis_cluster"])
def each_store(home: Path, request: pytest.FixtureRequest) -> tuple[str, Settings]:
    """Settings for each online store (a Redis or a Redis Cluster of the test's own)."""
    overrides: dict[str, object] = {"home": home, "online_store": request.param}
    if request.param == "redis":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
    if request.param == "redis_cluster":
        overrides["redis_url"] = request.getfixturevalue("redis_cluster").url
    return request.param, Settings(**overrides)  # type: ignore[arg-type]


def redis_client(settings: Settings) -> redis.Redis | redis.RedisCluster:
    if settings.online_store == "redis_cluster":
        return redis.RedisCluster.from_url(settings.redis_url.split(",")[0])
    return redis.Redis.from_url(settings.redis_url)


def redis_keys(client: redis.Redis | redis.RedisCluster) -> list[bytes]:
    """Every key in a Redis, or in all masters of a Redis Cluster."""
    if isinstance(client, redis.RedisCluster):
        return list(client.keys(target_nodes=redis.RedisCluster.PRIMARIES))
    return list(client.keys("*"))


def test_profiles_round_trip_through_each_online_store(each_store: tuple[str, Settings]) -> None:
    backend, settings = each_store
    store = FeastProfileStore(apply_repo(settings))
    profile = fold([ev(1, "purchase", "a"), ev(2, "search", dt=3), ev(3, "view", "b", dt=4)])
    profile.applied_offsets = {1: 99}
    assert store.write_profiles([profile]) == 1
    back = store.read_profiles(["u", "missing"])
    assert back["u"].totals == profile.totals
    assert {n: r.newest_first() for n, r in back["u"].recent.items()} == {
        n: r.newest_first() for n, r in profile.recent.items()
    }
    assert back["u"].applied_offsets == {1: 99}
    assert back["missing"].event_count == 0
    # serving's reads: Feast's own async client on Redis, a thread on SQLite; same rows
    assert store.profiles.reads_async == backend.startswith("redis")

    async def write_times() -> list[float | None]:
        stored = await store.read_stored_profiles_async(["u", "missing"])
        return [None if s is None else s.written_at for s in stored]

    async def reads() -> tuple[dict[str, UserProfile], UserProfile, list]:  # one loop: one client
        everything = await store.read_profiles_async(["u", "missing"])
        served = (await store.read_profiles_async(["u"], worker_state=False))["u"]
        # what tells serving one write of a row from the next: its write time
        times = [await write_times(), await write_times()]
        store.write_profiles([profile])
        return everything, served, [*times, await write_times()]

    again, served, (first, same, rewritten) = asyncio.run(reads())
    assert first[1] is None and first[0] is not None and abs(first[0] - time.time()) < 60
    assert same == first and rewritten[0] not in (first[0], None)
    assert again["u"].to_row() == back["u"].to_row()
    assert again["missing"].event_count == 0
    assert served.applied_offsets == {} and served.outbox == []  # the fold's own state
    now = time.time()
    features, expected = derive_features(served, now), derive_features(back["u"], now)
    for field in dataclasses.fields(features):  # what serving reads of it is all there
        mine, theirs = getattr(features, field.name), getattr(expected, field.name)
        assert np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs
    if backend.startswith("redis"):
        client = redis_client(settings)
        keys = redis_keys(client)
        assert keys and all(client.ttl(key) > 0 for key in keys)  # every profile expires


def test_an_erased_profile_leaves_each_online_store(
    each_store: tuple[str, Settings], home: Path
) -> None:
    """Feast's store interface cannot delete an entity; both our plug-ins can."""
    backend, settings = each_store
    store = FeastProfileStore(apply_repo(settings))
    kept, erased = fold([ev(1, "view", "a")]), fold([ev(2, "purchase", "b")])
    kept.user_id, erased.user_id = "kept", "erased"
    store.write_profiles([kept, erased])
    store.write_checkpoints({0: 5})  # another view of the store: must survive
    assert store.delete_profiles(["erased", "never-there"]) > 0
    back = store.read_profiles(["kept", "erased"])
    assert back["kept"].totals["view"] == 1
    assert back["erased"].event_count == 0
    assert store.read_checkpoints([0]) == {0: 5}
    if backend.startswith("redis"):
        keys = redis_keys(redis_client(settings))
        assert not any(b"erased" in key for key in keys)  # the key itself is gone
    else:
        with sqlite3.connect(home / "online.db") as db:
            table = f"{store.store.project}_{USER_PROFILE_VIEW}"
            rows = db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        assert rows == 1  # one row per entity: the kept user's


def stock_sqlite_store(settings: Settings, home: Path, db: Path) -> FeatureStore:
    """Feast's own SQLite online store over the same definitions, writing to ``db``."""
    stock_yaml = repo_yaml(settings)
    stock_yaml["online_store"] = {"type": "sqlite", "path": str(db)}
    stock = FeatureStore(config=RepoConfig(repo_path=home, **stock_yaml))
    stock.apply(build_definitions(home, timedelta(days=settings.profile_ttl_days)))
    return stock


def three_profiles() -> list[UserProfile]:
    profiles = []
    for i in range(3):
        profiles.append(fold([ev(1, "view", "a"), ev(2, "purchase", "b", dt=5)]))
        profiles[-1].user_id = f"u{i}"
    profiles[0].interest_sum = None  # a value-less feature too
    return profiles


def test_our_sqlite_rows_read_as_feasts_own_store_reads(home: Path) -> None:
    """The plug-in changes how rows are stored (one per entity, no protos on the stream's
    path), never what is read: the same profiles written by Feast's stock SQLite store and
    by ours read back identically, through Feast's API and through the stream's, and
    Feast's own write path (``push``) into ours stores the same rows as the stream's."""
    settings = Settings(home=home)
    ours = apply_repo(settings)
    stock = stock_sqlite_store(settings, home, home / "stock.db")
    assert type(ours.provider.online_store).__name__ == "EntityRowSqliteOnlineStore"
    profiles = three_profiles()
    for store in (ours, stock):
        FeastProfileStore(store, "direct").write_profiles(profiles)

    view = ours.get_feature_view(USER_PROFILE_VIEW)
    keys = [FeastProfileStore(ours).profiles._entity_key({"user_id": p.user_id}) for p in profiles]

    def online(store: FeatureStore) -> list[dict[str, object]]:
        read = store.provider.online_read(store.config, view, keys, None)
        return [{n: v.SerializeToString() for n, v in values.items()} for _, values in read]

    assert online(ours) == online(stock)
    features = [f"{USER_PROFILE_VIEW}:{f.name}" for f in user_profile_schema()]
    rows = [{"user_id": p.user_id} for p in profiles]
    assert (
        ours.get_online_features(features=features, entity_rows=rows).to_dict()
        == stock.get_online_features(features=features, entity_rows=rows).to_dict()
    )
    ids = [p.user_id for p in profiles]
    mine, theirs = (
        FeastProfileStore(ours).read_profiles(ids),
        FeastProfileStore(stock).read_profiles(ids),
    )
    assert [mine[u].to_row() for u in ids] == [theirs[u].to_row() for u in ids]
    assert [mine[u].to_row() for u in ids] == [p.to_row() for p in profiles]

    before = online(ours)
    FeastProfileStore(ours, "push").write_profiles(profiles)  # protos in, the same rows
    assert online(ours) == before
    with sqlite3.connect(home / "online.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        table = f"{settings.feast_project}_{USER_PROFILE_VIEW}"
        assert conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone() == (3,)


def test_a_store_in_feasts_own_layout_is_converted_at_apply(home: Path) -> None:
    """An online.db written with Feast's row-per-feature layout (streamrank before this
    store) keeps every profile when the repository is applied with ours."""
    settings = Settings(home=home)
    stock = stock_sqlite_store(settings, home, home / "online.db")
    profiles = three_profiles()
    FeastProfileStore(stock).write_profiles(profiles)
    FeastProfileStore(stock).write_checkpoints({0: 41})
    del stock  # its connection must not hold the file

    ours = FeastProfileStore(apply_repo(settings))
    back = ours.read_profiles([p.user_id for p in profiles])
    assert [back[p.user_id].to_row() for p in profiles] == [p.to_row() for p in profiles]
    assert ours.read_checkpoints([0]) == {0: 41}
    with sqlite3.connect(home / "online.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(t.endswith("__feast_layout") for t in tables)
    apply_repo(settings)  # applying again changes nothing
    assert ours.read_checkpoints([0]) == {0: 41}


def test_the_worker_imports_feast_without_torch() -> None:
    """Feast imports torch eagerly; the worker must not pay ~185 MB for it."""
    code = "import sys, streams.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sqlite_forgets_users_past_the_ttl_on_disk_not_only_on_read(home: Path) -> None:
    """Feast hides expired rows on read; our SQLite store also deletes them, so a user who
    left is not kept in the file (Redis expires its keys by itself)."""
    from datetime import UTC, datetime

    store = apply_repo(Settings(home=home))
    profiles = FeastProfileStore(store)
    profiles.write_profiles([fold([ev(1, "view", "a")])])
    online = store.provider.online_store
    view = store.get_feature_view("user_profile")
    assert online.purge_expired(store.config, view) == 0  # written just now: kept
    later = datetime.now(UTC) + view.ttl + timedelta(days=1)
    assert online.purge_expired(store.config, view, now=later) > 0
    with sqlite3.connect(home / "online.db") as db:
        table = f"{store.project}_user_profile"
        assert db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone() == (0,)
    assert profiles.read_profiles(["u"])["u"].event_count == 0


def test_checkpoints_wait_until_the_redis_replicas_hold_the_rows(
    redis_cluster: RedisClusterServers, home: Path
) -> None:
    """A master's crash must not take acknowledged rows with it once a checkpoint covers
    them: the writer waits until every replica has all its master had."""
    settings = Settings(home=home, online_store="redis_cluster", redis_url=redis_cluster.url)
    store = FeastProfileStore(apply_repo(settings))
    store.wait_replicated(store.replication_marks(), timeout_s=5)  # in sync: at once
    masters = redis_cluster.masters()
    replicas = [n for n in redis_cluster.nodes if n not in masters and n.process is not None]
    assert len(replicas) == 3
    for replica in replicas:
        os.kill(replica.process.pid, signal.SIGSTOP)  # alive to its master, but applies nothing
    try:
        profiles = []
        for i in range(30):  # users on every master's slots
            profile = fold([ev(1, "view", "a")])
            profile.user_id = f"user-{i}"
            profiles.append(profile)
        store.write_profiles(profiles)
        marks = store.replication_marks()  # read after the writes: they include them
        with pytest.raises(TimeoutError):
            store.wait_replicated(marks, timeout_s=0.5)
    finally:
        for replica in replicas:
            os.kill(replica.process.pid, signal.SIGCONT)
    store.wait_replicated(marks, timeout_s=10)  # caught up


def test_a_failover_after_the_writes_is_a_lost_replication(
    redis_cluster: RedisClusterServers, home: Path
) -> None:
    """A replica promoted after the rows were written may lack some of them: the wait says
    so (``ReplicationLost``) instead of finding the new master in sync with itself."""
    settings = Settings(home=home, online_store="redis_cluster", redis_url=redis_cluster.url)
    store = FeastProfileStore(apply_repo(settings))
    store.write_profiles([fold([ev(1, "view", "a")])])
    marks = store.replication_marks()
    assert len(marks) == 3  # a history per master
    store.wait_replicated(marks, timeout_s=5)
    masters = redis_cluster.masters()
    replica = next(n for n in redis_cluster.nodes if n not in masters and n.process is not None)
    replica.client().execute_command("CLUSTER", "FAILOVER")  # promoted: a history of its own
    redis_cluster.wait_healthy()
    assert replica in redis_cluster.masters()
    with pytest.raises(ReplicationLost):
        store.wait_replicated(marks, timeout_s=5)
    store.wait_replicated(store.replication_marks(), timeout_s=5)  # marks read after it
