"""Feast's Redis online store, plus what its interface lacks: deleting entities, and
waiting until the replicas hold what was written.

An erased user's profile must leave the store at once (``streams/privacy.py``); Feast's
``OnlineStore`` can only write, tear a whole view down, or wait for the key's TTL. Feast
keeps an entity's views in one Redis hash (key: entity key + project; a field per feature
plus a ``_ts:<view>`` field), so deleting one view's row of an entity removes those fields
only; Redis drops the key once its last field is gone. Everything else is Feast's own;
the key and field layout come from Feast's helpers (``infra/private_apis.py``).

Replicas. Redis replicates asynchronously: a master that crashes can take writes it
acknowledged with it when its replica takes over. The stream's exactly-once rests on its
checkpoints never running ahead of the rows they cover, so before a checkpoint is written
the writer waits until every replica has what its master had (``wait_replicated``): each
master's replication offset, read after the rows were acknowledged, includes them, whichever
connection or process wrote them. That covers a master lost after the wait. One lost while
the writer waits is still a gap: the retry finds the promoted replica, which may lack rows,
and nothing tells the writer so (README, Known limits).

``feature_store.redis.yaml`` selects it by class path, as ``sqlite_store.py`` does for SQLite.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from feast import FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.repo_config import RepoConfig

from infra.private_apis import redis_client, redis_entity_key, redis_view_fields

STORE_TYPE = "feature_repo.redis_store.ErasableRedisOnlineStore"


class ErasableRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["feature_repo.redis_store.ErasableRedisOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


class ErasableRedisOnlineStore(RedisOnlineStore):
    def online_delete(
        self, config: RepoConfig, table: FeatureView, entity_keys: list[EntityKeyProto]
    ) -> int:
        """Delete ``table``'s fields of ``entity_keys``; returns the fields deleted."""
        if not entity_keys:
            return 0
        client = redis_client(self, config.online_store)
        fields = redis_view_fields(config, table)
        with client.pipeline(transaction=False) as pipe:
            for key in entity_keys:
                pipe.hdel(redis_entity_key(config, key), *fields)
            return int(sum(pipe.execute()))

    def wait_replicated(self, config: RepoConfig, timeout_s: float = 5.0) -> None:
        """Until every online replica of every master holds all its master has now (a
        master without replicas has nothing to wait for). TimeoutError past
        ``timeout_s``: a caller that retries waits on."""
        client = redis_client(self, config.online_store)
        targets: list[Any] = client.get_primaries() if hasattr(client, "get_primaries") else [None]
        for node in targets:
            deadline = time.monotonic() + timeout_s
            wanted: int | None = None
            while True:
                info = (
                    client.info("replication")
                    if node is None
                    else client.info("replication", target_nodes=node)
                )
                if wanted is None:
                    wanted = int(info.get("master_repl_offset", 0))
                lagging = [
                    value
                    for key, value in info.items()
                    if key.startswith("slave")
                    and key[5:].isdigit()
                    and value.get("state") == "online"
                    and int(value.get("offset", 0)) < wanted
                ]
                if not lagging:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a Redis replica lags its master: {lagging}")
                time.sleep(0.005)
