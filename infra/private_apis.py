"""The private internals of the required libraries that streamrank cannot do without.

Everything else uses public APIs. What is here has no public equivalent in the pinned
versions, and each use is small enough to re-read on an upgrade:

- **Faust** commits only the offsets its own stream acknowledged (``Consumer.commit``). The
  profile worker must set the group's committed offsets to the store's checkpoints after a
  rebalance (``streams/app.py``), which only ``Consumer._commit(offsets)`` does.
- **Faust** hard-codes aiokafka's ``fetch_max_wait_ms=1500``; the embedded broker holds
  fetches close to that deadline, so the worker saw events ~0.6 s late with nothing else
  running. Overriding the consumer factory sets it (``faust_app_class``).
- **Feast's Redis store** has no per-entity delete (erasure, ``feature_repo/redis_store.py``).
  Deleting must address Feast's own key and field layout, so it calls the helpers Feast
  writes with rather than re-deriving them.
- **Feast** imports torch at import time (``feast.torch_wrapper``) for helpers the stream
  never calls: ~185 MB of a worker's memory. A lazy stand-in for that module is registered
  before Feast is imported (``defer_feast_torch_import``).
- **Feast** decorates its definition classes with typeguard's ``@typechecked``, which
  re-parses and recompiles the whole module for each of ~240 functions at import: ~2 s of
  every process that imports Feast (a worker, a Serve replica, each CLI command), to check
  argument types of objects this project builds in one place (``feature_repo``). Feast is
  loaded with the decorator standing aside (``import_feast_uninstrumented``).

Each function checks, on first use, that the installed library is a version these uses
were read against (``TESTED``); an upgrade past it fails loudly at start-up instead of
breaking exactly-once or erasure silently. ``tests/infra/test_private_apis.py`` checks
that every internal used here still exists with the shape used, and that nothing outside
this module reaches into those libraries' private names. This module imports none of
them at import time: the torch stand-in must be in place before Feast is first imported.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

if TYPE_CHECKING:
    import faust
    from feast import FeatureView
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.repo_config import RepoConfig

# The versions each internal below was read against; kept equal to pyproject's pins.
TESTED: dict[str, SpecifierSet] = {
    "faust-streaming": SpecifierSet(">=0.15.3,<0.16"),
    "aiokafka": SpecifierSet(">=0.10,<0.15"),
    "feast": SpecifierSet("==0.67.0"),
    "typeguard": SpecifierSet(">=4,<5"),
}

FAUST_DEFAULT_FETCH_MAX_WAIT_MS = 1500
_TORCH_WRAPPER = "feast.torch_wrapper"


class UnsupportedLibraryVersion(RuntimeError):
    """An installed library is outside the versions whose internals were checked."""


@functools.cache
def require(distribution: str) -> Version:
    """The installed version of ``distribution``, if ``TESTED`` covers it; raises if not."""
    installed = Version(importlib.metadata.version(distribution))
    if installed not in TESTED[distribution]:
        raise UnsupportedLibraryVersion(
            f"{distribution} {installed} is installed, but streamrank's use of its internals "
            f"(infra/private_apis.py) was checked for {distribution}{TESTED[distribution]}: "
            "install a version in that range, or re-check the uses and widen it"
        )
    return installed


# --- Faust -----------------------------------------------------------------------------


async def commit_offsets(consumer: Any, offsets: Mapping[Any, int]) -> None:
    """Commit exactly ``offsets`` (TP -> next offset to read) for the consumer's group."""
    require("faust-streaming")
    await consumer._commit(offsets)


@functools.cache
def faust_app_class() -> type[faust.App]:
    """``faust.App`` whose aiokafka consumer fetches with the app's ``fetch_max_wait_ms``.

    A broker answers a fetch as soon as one byte is there or at that deadline; a short
    wait costs an idle worker a few empty fetches per second and bounds the delay."""
    require("faust-streaming")
    require("aiokafka")
    import faust
    from faust.transport.drivers import aiokafka as driver

    class FetchWaitConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka reads it when the consumer starts its fetcher, which happens later
            consumer._fetch_max_wait_ms = getattr(
                self.app, "fetch_max_wait_ms", FAUST_DEFAULT_FETCH_MAX_WAIT_MS
            )
            return consumer

    class FetchWaitConsumer(driver.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(driver.Transport):  # type: ignore[misc]
        Consumer = FetchWaitConsumer

    class FetchWaitApp(faust.App):  # type: ignore[misc]
        def __init__(
            self,
            *args: Any,
            fetch_max_wait_ms: int = FAUST_DEFAULT_FETCH_MAX_WAIT_MS,
            **kwargs: Any,
        ) -> None:
            self.fetch_max_wait_ms = fetch_max_wait_ms
            super().__init__(*args, **kwargs)

        def _new_transport(self) -> Any:
            return FetchWaitTransport(self.conf.broker_consumer, self)

    return FetchWaitApp


# --- Feast -----------------------------------------------------------------------------


def prepare_feast_import() -> None:
    """Before Feast is first imported: the lazy torch stand-in, and Feast loaded without
    its type instrumentation (``import_feast_uninstrumented``)."""
    defer_feast_torch_import()
    import_feast_uninstrumented()


def defer_feast_torch_import() -> None:
    """Register the lazy ``feast.torch_wrapper``; a no-op once it (or Feast's) is there."""
    if _TORCH_WRAPPER in sys.modules:
        return
    require("feast")
    module = types.ModuleType(_TORCH_WRAPPER, "streamrank's lazy stand-in (infra/private_apis.py)")
    module.TORCH_AVAILABLE = importlib.util.find_spec("torch") is not None  # type: ignore[attr-defined]
    module.get_torch = _get_torch  # type: ignore[attr-defined]
    sys.modules[_TORCH_WRAPPER] = module


def import_feast_uninstrumented() -> None:
    """When Feast is first imported, import it with typeguard's ``@typechecked`` passing
    functions through unchanged; typeguard is itself again afterwards. Nothing is
    imported now: a producer that never touches the store never pays for Feast.

    Every Feast module that uses the decorator is imported by ``feast/__init__.py``, so
    the decorator is bound, uninstrumented, before anything else of Feast is loaded."""
    if "feast" in sys.modules or any(isinstance(f, _FeastFinder) for f in sys.meta_path):
        return
    require("feast")
    require("typeguard")
    sys.meta_path.insert(0, _FeastFinder())


class _FeastFinder(importlib.abc.MetaPathFinder):
    """Finds ``feast`` as the other finders do, and loads it uninstrumented (once)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "feast":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Uninstrumented(spec.loader)
        return spec


class _Uninstrumented(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        import typeguard

        instrumenting = typeguard.typechecked
        typeguard.typechecked = _as_written  # type: ignore[assignment]
        try:
            self.loader.exec_module(module)
        finally:
            typeguard.typechecked = instrumenting


def _as_written(target: Any = None, **_: Any) -> Any:
    """``typechecked``'s signature (bare, or with options), returning what it is given."""
    return target if target is not None else _as_written


def _get_torch() -> Any:
    try:
        return importlib.import_module("torch")
    except Exception as exc:  # the same contract as Feast's own get_torch
        raise ImportError(f"Torch is not available or failed to import: {exc}") from exc


def redis_client(store: RedisOnlineStore, online_config: RedisOnlineStoreConfig) -> Any:
    """The Redis (or Redis Cluster) client the Feast store itself writes with."""
    require("feast")
    return store._get_client(online_config)


def redis_entity_key(config: RepoConfig, entity_key: EntityKeyProto) -> bytes:
    """The Redis key under which Feast keeps all of one entity's views in ``config``."""
    require("feast")
    from feast.infra.online_stores.helpers import _redis_key

    version = config.entity_key_serialization_version
    return bytes(_redis_key(config.project, entity_key, version))


def redis_view_fields(config: RepoConfig, table: FeatureView) -> list[bytes]:
    """The hash fields of ``table`` in an entity's Redis key: one per feature, and the
    view's timestamp field."""
    require("feast")
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    view = _versioned_fv_name(table, config)
    fields = [bytes(_mmh3(f"{view}:{feature.name}")) for feature in table.features]
    fields.append(f"_ts:{view}".encode())
    return fields
