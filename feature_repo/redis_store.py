"""Feast's Redis online store, plus the one thing its interface lacks: deleting entities.

An erased user's profile must leave the store at once (``streams/privacy.py``); Feast's
``OnlineStore`` can only write, tear a whole view down, or wait for the key's TTL. Feast
keeps an entity's views in one Redis hash (key: entity key + project; a field per feature
plus a ``_ts:<view>`` field), so deleting one view's row of an entity removes those fields
only; Redis drops the key once its last field is gone. Everything else is Feast's own;
the key and field layout come from Feast's helpers (``infra/private_apis.py``).

``feature_store.redis.yaml`` selects it by class path, as ``sqlite_store.py`` does for SQLite.
"""

from __future__ import annotations

from typing import Literal

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
