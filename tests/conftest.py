"""Fixtures shared by the whole suite. Servers are real and start on free ports:
the Tansu broker once per session, Faust workers and Ray Serve per module that needs them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from infra.broker import EmbeddedBroker, ensure_topics
from infra.processes import free_port, interrupt_on_stop_signals, stop_signals_held
from infra.redis import RedisClusterServers, RedisServer
from streamrank.catalog import Catalog, copy_catalog
from streamrank.datasets import Dataset, load_dataset
from streamrank.settings import Settings

if TYPE_CHECKING:
    from training.train import TrainingData


# CI sets it: there a missing prerequisite fails the run instead of skipping (and so
# passing) every test that needs it.
REQUIRE_PREREQUISITES = os.environ.get("STREAMRANK_TESTS_REQUIRE_ALL") == "1"

EXIT_STATUS = pytest.StashKey[int]()
"""The session's exit status, as ``pytest_sessionfinish`` leaves it."""


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run as Ctrl-C does: pytest stops and tears every fixture down.

    The servers the fixtures start (the broker, Redis Cluster, workers) run in sessions of
    their own so that a test can stop each one as a group; a CI runner that stops the run
    signals pytest's group only, so without this they would outlive a stopped run."""
    interrupt_on_stop_signals()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """A stop that arrives while a test's fixtures are torn down waits until all of them
    are: an interrupt inside one finalizer would skip the rest (a test bed's network and
    the servers on it). The run then stops as it would have."""
    with stop_signals_held():
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    """The same for the teardown at the end of the run, which is where a stopped run tears
    down what its interrupted test was using; a stop held there only marks the run
    interrupted, as it is ending anyway."""
    try:
        with stop_signals_held():
            return (yield)
    except KeyboardInterrupt:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        return None
    finally:
        session.config.stash[EXIT_STATUS] = session.exitstatus


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The run ends here, with its exit status, without finalizing the interpreter.

    Every fixture is torn down and every report written by now. What finalization would
    still do is destroy what the suite's native libraries left in this process (Ray's
    driver, gRPC's, librdkafka's and torch's threads, the clients' objects), and that
    crashed now and then (SIGSEGV, exit 139) after every test had passed, failing a green
    run. ``STREAMRANK_TESTS_FINALIZE=1`` finalizes as Python does, to chase such a crash
    (``PYTHONFAULTHANDLER=1`` prints each Python thread's stack); it then lists the threads
    still alive."""
    status = config.stash.get(EXIT_STATUS, None)
    if status is None:  # a run that never got to the end of a session (--help, an error)
        return
    if os.environ.get("STREAMRANK_TESTS_FINALIZE") == "1":
        alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print(f"threads alive at exit: {alive}", file=sys.stderr)
        return
    logging.shutdown()  # the log handlers' last records, as finalization would write them
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:  # what the session's teardown printed, as pytest's cleanup would
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def missing_prerequisite(what: str) -> None:
    """Skip the test for lack of ``what``, or, where everything is required, fail it."""
    if REQUIRE_PREREQUISITES:
        pytest.fail(f"prerequisite missing: {what} (STREAMRANK_TESTS_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    settings = Settings()
    if settings.dataset_dir is None and settings.events_file is None:
        missing_prerequisite("no data set: ../shared/data/movielens-100k not found")
    return load_dataset(settings)


@pytest.fixture(scope="session")
def catalog_home(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Path:
    """Catalog + embeddings encoded once per session (the encoder is the slow part)."""
    from streamrank.catalog import prepare_catalog

    home = tmp_path_factory.mktemp("catalog")
    prepare_catalog(dataset.catalog, home)
    return home


@pytest.fixture(scope="session")
def catalog(catalog_home: Path) -> Catalog:
    return Catalog.load(catalog_home)


def make_home(base: Path, catalog_home: Path) -> Path:
    """A fresh runtime home that reuses the session's catalog artifacts."""
    copy_catalog(catalog_home, base)
    return base


@pytest.fixture(scope="session")
def movielens_examples(dataset: Dataset, catalog: Catalog) -> TrainingData:
    """All of MovieLens 100K as the fast configuration's training data (examples built once
    per session: ~20 s)."""
    from training.config import TrainConfig
    from training.train import prepare_training_data

    return prepare_training_data(dataset.events, catalog, TrainConfig.fast())


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, dataset: Dataset, catalog: Catalog, catalog_home: Path
) -> Path:
    """A home with a tiny model trained on a slice (the training and backtest tests)."""
    from training.config import TrainConfig
    from training.encoder import default_encoder_path
    from training.train import Trainer, prepare_training_data

    home = make_home(tmp_path_factory.mktemp("trained") / "home", catalog_home)
    config = TrainConfig(
        limit_users=40,
        epochs=3,
        patience=3,
        batch_size=64,
        max_minutes=None,
        history_len=20,
        dim=32,
    )
    data = prepare_training_data(dataset.events, catalog, config)
    Trainer(catalog, default_encoder_path(), "cpu").fit(data, home / "models")
    return home


@pytest.fixture
def home(tmp_path: Path, catalog_home: Path) -> Path:
    return make_home(tmp_path / "home", catalog_home)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


def isolated_settings(home: Path, bootstrap: str | None = None, **overrides: object) -> Settings:
    """Settings with their own topics, group and ports, so tests never see each other."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "home": home,
        "kafka_bootstrap": bootstrap,
        "events_topic": f"events-{tag}",
        "dlq_topic": f"events-{tag}.dlq",
        "impressions_topic": f"impressions-{tag}",
        "privacy_topic": f"privacy-{tag}",
        "consumer_group": f"profiles-{tag}",
        "experiments_group": f"experiments-{tag}",
        "experiments_web_port": free_port(),
        "feast_project": f"t{tag}",
        "serve_port": free_port(),
        "worker_web_port": free_port(),
        "worker_batch_within_s": 0.1,
        "serve_drain_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(home: Path, broker: EmbeddedBroker) -> Settings:
    s = isolated_settings(home, broker.bootstrap)
    ensure_topics(s.bootstrap(), s.topics(), compacted=s.compacted_topics())
    return s


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own on a free port (never the machine's shared one)."""
    if shutil.which("redis-server") is None:
        missing_prerequisite("redis-server is not installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    """A Redis Cluster on loopback: three masters with a replica each (one per session:
    creating it takes seconds)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing_prerequisite("redis-server and redis-cli are not installed")
    home = tmp_path_factory.mktemp("redis-cluster")
    nodes = [RedisServer(home / str(i), cluster_node_timeout_ms=1000) for i in range(6)]
    with RedisClusterServers(nodes) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_servers: RedisClusterServers) -> RedisClusterServers:
    """The session's Redis Cluster, emptied for this test."""
    for master in redis_cluster_servers.masters():
        master.client().flushall()
    return redis_cluster_servers
