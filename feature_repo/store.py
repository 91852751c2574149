"""Open the Feast store the settings describe, and apply the repository to it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlparse

import yaml
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import ITEM_VIEW, build_definitions
from streamrank.settings import Settings

log = logging.getLogger(__name__)
REPO_DIR = Path(__file__).resolve().parent


def redis_connection_string(urls: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=...]``.

    A Redis Cluster is given as comma-separated seed URLs (``redis://h1:7000,redis://h2:7000``)
    and becomes ``h1:7000,h2:7000[,password=...]``: the client learns the other nodes from
    the seeds. The seeds share one password and scheme; a cluster has only database 0."""
    seeds = [urlparse(url.strip()) for url in urls.split(",") if url.strip()]
    if not seeds:
        raise ValueError("no Redis URL given")
    for seed in seeds:
        if seed.scheme not in ("redis", "rediss") or not seed.hostname:
            raise ValueError(f"not a redis:// URL with a host: {seed.geturl()!r}")
    first = seeds[0]
    parts = [f"{seed.hostname}:{seed.port or 6379}" for seed in seeds]
    db = first.path.lstrip("/")
    if db and len(seeds) == 1:
        parts.append(f"db={int(db)}")
    if first.password:
        parts.append(f"password={first.password}")
    if first.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_yaml(
    settings: Settings, project: str | None = None, root: Path | None = None
) -> dict[str, Any]:
    """The store's ``feature_store.yaml``, filled in from the settings. ``project`` and
    ``root`` (where the registry and the SQLite file live) default to the live store's;
    a replay namespace passes its own (``feature_repo/namespaces.py``)."""
    name = "feature_store.yaml" if settings.online_store == "sqlite" else "feature_store.redis.yaml"
    text = Template((REPO_DIR / name).read_text()).substitute(
        project=project or settings.feast_project,
        home=root or settings.home_dir,
        redis_connection=redis_connection_string(settings.redis_url),
        redis_type="redis_cluster" if settings.online_store == "redis_cluster" else "redis",
        ttl_seconds=settings.profile_ttl_days * 86_400,
    )
    return yaml.safe_load(text)


def repo_config(
    settings: Settings, project: str | None = None, root: Path | None = None
) -> RepoConfig:
    return RepoConfig(repo_path=root or settings.home_dir, **repo_yaml(settings, project, root))


def open_store(
    settings: Settings, project: str | None = None, root: Path | None = None
) -> FeatureStore:
    return FeatureStore(config=repo_config(settings, project, root))


def apply_repo(
    settings: Settings, project: str | None = None, root: Path | None = None
) -> FeatureStore:
    """``feast apply`` in code: register every object and create the online tables."""
    store = open_store(settings, project, root)
    home = root or settings.home_dir
    (home / "offline").mkdir(parents=True, exist_ok=True)
    store.apply(build_definitions(home, timedelta(days=settings.profile_ttl_days)))
    log.info("feast repository applied (project %s)", store.project)
    return store


def materialize_items(store: FeatureStore) -> None:
    """Load the catalog parquet into the online ``item`` view (Feast materialization)."""
    store.materialize(
        start_date=datetime(1970, 1, 2, tzinfo=UTC),
        end_date=datetime.now(UTC) + timedelta(minutes=1),
        feature_views=[ITEM_VIEW],
    )
