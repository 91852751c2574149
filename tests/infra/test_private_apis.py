"""The adapter around the required libraries' internals: versions, shapes, and that it is
the only place that touches them.

These fail when an upgrade changes an internal under us, before a worker silently stops
committing its checkpoints or an erasure misses its keys. What each internal does is
covered where it is used (rewind: the worker's crash tests; Redis delete: the store's
erasure test; the torch stand-in: the worker's import test).
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata
import inspect
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import aiokafka
import pytest
from faust.transport.drivers import aiokafka as faust_driver
from packaging.requirements import Requirement

from infra import private_apis
from streamrank.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["streamrank", "streams", "feature_repo", "serving", "training", "infra", "bench"]
LIBRARIES = ("faust", "feast", "ray", "aiokafka", "mode")
ADAPTER = ROOT / "infra" / "private_apis.py"

# Underscore names this code base reads on objects that are not its own classes, and why
# they are not library internals. Anything else must go through the adapter.
NOT_INTERNAL = {
    "_exit": "os._exit: the documented way out of a forked child",
    "_make": "namedtuple._make: public API with an underscore against field clashes",
    "_PARTITION_EOF": "confluent_kafka.KafkaError's documented local error codes",
    "_UNKNOWN_TOPIC": "confluent_kafka.KafkaError's documented local error codes",
    "_unsummed": "streams.profile's own Profile, read by the same module",
    "_add_unsummed": "streams.profile's own Profile, read by the same module",
}


def _pins() -> dict[str, Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [Requirement(line) for line in pyproject["project"]["dependencies"]]
    return {r.name: r for r in requirements}


def test_the_adapter_was_checked_for_exactly_the_versions_pyproject_allows() -> None:
    pins = _pins()
    for distribution, tested in private_apis.TESTED.items():
        assert pins[distribution].specifier == tested, (
            f"pyproject allows {distribution}{pins[distribution].specifier}, the adapter was "
            f"checked for {tested}: re-read infra/private_apis.py's uses and align them"
        )
        private_apis.require(distribution)  # and what is installed is in that range


def test_an_unchecked_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.16.0")
    private_apis.require.cache_clear()
    try:
        unchecked = pytest.raises(private_apis.UnsupportedLibraryVersion, match=r"0\.16\.0 is")
        with unchecked:
            private_apis.require("faust-streaming")
    finally:
        monkeypatch.undo()
        private_apis.require.cache_clear()


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_faust_still_commits_arbitrary_offsets_through_the_same_call() -> None:
    assert _parameters(faust_driver.Consumer._commit) == ["self", "offsets"]
    assert inspect.iscoroutinefunction(faust_driver.Consumer._commit)


def test_the_worker_consumer_fetches_with_the_configured_wait(tmp_path: Path) -> None:
    """Faust's factory hooks still exist, and aiokafka's fetcher reads the attribute set."""
    assert _parameters(faust_driver.AIOKafkaConsumerThread._create_worker_consumer) == [
        "self",
        "transport",
    ]
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    settings = Settings(home=tmp_path, worker_fetch_max_wait_ms=123)

    async def build() -> aiokafka.AIOKafkaConsumer:
        from streams.transport import stream_app

        app = stream_app(settings, "adapter-test", web_port=6066)  # never bound
        thread = app.consumer._new_consumer_thread()
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert consumer._fetch_max_wait_ms == 123


def test_feasts_redis_layout_helpers_keep_their_shape() -> None:
    from feast.infra.online_stores import helpers
    from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name

    assert _parameters(helpers._redis_key)[:3] == [
        "project",
        "entity_key",
        "entity_key_serialization_version",
    ]
    assert _parameters(helpers._mmh3) == ["key"]
    assert _parameters(_versioned_fv_name) == ["table", "config"]
    assert _parameters(RedisOnlineStore._get_client) == ["self", "online_store_config"]
    # the timestamp field name the adapter deletes is the one Feast writes
    assert 'f"_ts:{' in inspect.getsource(RedisOnlineStore.online_write_batch)


def test_feast_imports_from_its_torch_module_only_what_the_stand_in_provides() -> None:
    spec = importlib.util.find_spec("feast")
    assert spec is not None and spec.submodule_search_locations
    feast_root = Path(next(iter(spec.submodule_search_locations)))
    imported: set[str] = set()
    for source in feast_root.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "feast.torch_wrapper":
                imported |= {alias.name for alias in node.names}
            if isinstance(node, ast.Import):
                assert "feast.torch_wrapper" not in {a.name for a in node.names}, source
    assert imported, "Feast no longer imports feast.torch_wrapper: drop the stand-in"
    stand_in = importlib.import_module("feast.torch_wrapper")
    assert imported <= set(vars(stand_in)), imported - set(vars(stand_in))


def _our_modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ADAPTER
    ]


def test_no_module_but_the_adapter_imports_a_library_internal() -> None:
    found = []
    for path in _our_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(LIBRARIES):
                private = [a.name for a in node.names if a.name.startswith("_")]
                inner = [p for p in (node.module or "").split(".") if p.startswith("_")]
                if private or inner:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_no_module_but_the_adapter_reads_an_underscore_name_of_another_object() -> None:
    """``self._x`` is a class's own business; ``thing._x`` is someone else's internals."""
    found = []
    for path in _our_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in NOT_INTERNAL:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


def test_no_class_of_ours_overrides_or_uses_a_library_classs_private_member() -> None:
    """A subclass's ``self._x`` is a library internal when a library base defines ``_x``."""
    found = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name == "infra.private_apis" or info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                    continue
                library_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith(LIBRARIES)]
                if not library_bases:
                    continue
                tree = ast.parse(inspect.getsource(cls).strip() + "\n")
                names = {
                    n.attr
                    for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name)
                    and n.value.id in ("self", "cls")
                } | {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
                private = sorted(n for n in names if n.startswith("_") and not n.startswith("__"))
                found += [
                    f"{info.name}.{cls.__name__}.{name}"
                    for name in private
                    if any(name in vars(base) for base in library_bases)
                ]
    assert not found, found


UNINSTRUMENTED = """
{first}
from feast import FeatureView
import typeguard
checks = "TypeCheckMemo" in FeatureView.__init__.__code__.co_names
print(checks, typeguard.typechecked.__name__)
"""


@pytest.mark.parametrize(
    ("first", "instrumented"), [("", True), ("import feature_repo", False)], ids=["plain", "ours"]
)
def test_feast_is_imported_without_its_type_instrumentation(first: str, instrumented: bool) -> None:
    """Plain ``import feast`` recompiles its definition classes with type checks (so the
    check below can tell); through ``feature_repo`` it does not, and typeguard itself is
    left as it was."""
    code = UNINSTRUMENTED.format(first=first)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(instrumented), "typechecked"], out.stderr
