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
the writer reads each master's replication history and offset (``replication_marks``; the
offset includes every row acknowledged so far, whichever connection or process wrote it)
and waits until every replica has reached it (``wait_replicated``). That covers a master
lost after the wait. A master lost before it (since the last checkpoint, or while the
writer waits) shows as a history the writer has not seen: a promoted replica starts a new
one. Then ``ReplicationLost``: rows may be gone, and the writer rewinds to its checkpoints
(``streams/item_rows.py``), as after a crash.

``feature_store.redis.yaml`` selects it by class path, as ``sqlite_store.py`` does for SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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

    def replication_marks(self, config: RepoConfig) -> dict[str, int]:
        """Each master's replication history (``master_replid``: a replica promoted by a
        failover starts a new one, as does a master restarted without its data) and how
        far that history has come (``master_repl_offset``), which includes every write the
        master has acknowledged so far, whichever connection or process made it."""
        client = redis_client(self, config.online_store)
        marks = {}
        for node in _masters(client):
            info = _replication(client, node)
            marks[str(info["master_replid"])] = int(info.get("master_repl_offset", 0))
        return marks

    def wait_replicated(
        self, config: RepoConfig, marks: Mapping[str, int], timeout_s: float = 5.0
    ) -> None:
        """Until every online replica of every master holds its master's history up to
        ``marks`` (``replication_marks``, read after the writes to cover). A master with a
        history not in ``marks`` replaced one by a failover, which may have taken writes
        with it: ``ReplicationLost``. TimeoutError past ``timeout_s``: a caller that
        retries waits on."""
        client = redis_client(self, config.online_store)
        for node in _masters(client):
            deadline = time.monotonic() + timeout_s
            while True:
                info = _replication(client, node)
                history = str(info["master_replid"])
                if history not in marks:
                    raise ReplicationLost(
                        f"a Redis master's replication history changed ({history} is none of "
                        f"{sorted(marks)}): a failover or a restart may have lost writes"
                    )
                lagging = [
                    value
                    for key, value in info.items()
                    if key.startswith("slave")
                    and key[5:].isdigit()
                    and value.get("state") == "online"
                    and int(value.get("offset", 0)) < marks[history]
                ]
                if not lagging:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a Redis replica lags its master: {lagging}")
                time.sleep(0.005)


class ReplicationLost(RuntimeError):
    """A master's replication history changed since the writes to cover were made: rows
    it acknowledged may be gone. Waiting does not bring them back; the writer rewinds to
    its checkpoints and writes them again."""


def _masters(client: Any) -> list[Any]:
    """A cluster's primaries; None for the one server a plain client talks to."""
    return list(client.get_primaries()) if hasattr(client, "get_primaries") else [None]


def _replication(client: Any, node: Any) -> dict[str, Any]:
    if node is None:
        return dict(client.info("replication"))
    return dict(client.info("replication", target_nodes=node))
