"""The whole system on seven hosts: the broker, a Redis Cluster over three, a profile
worker, and the Serve application on a Ray cluster of a head and a worker node, its
ingress replicas spread over both; the site and the clients reach it from the test's own
namespace and from a client host. A user's events become a personalized list and are
erased across hosts; losing the Ray worker node under load, serving keeps answering."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from feature_repo.store import open_store
from infra.redis import RedisClusterServers
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from streamrank.prepare import prepare
from streamrank.settings import Settings
from streams.events import Event
from streams.producer import EventProducer
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore
from tests.cluster.hosts import Host, Network
from tests.cluster.system import ServingHosts, WorkerHost, replicas_on
from tests.integration.stack import ADMIN_KEY, KEYS, READ_KEY, READER
from tests.polling import until


@dataclass
class System:
    settings: Settings
    serving: ServingHosts
    worker: WorkerHost
    client: Host

    def profile_events(self, user: str) -> int:
        pseudonym = Pseudonymizer.from_settings(self.settings)(user)
        store = FeastProfileStore(open_store(self.settings))
        return store.read_profiles([pseudonym])[pseudonym].event_count


@pytest.fixture
def system(
    network: Network, cluster_settings: Settings, dataset: Dataset, tmp_path: Path
) -> Iterator[System]:
    secrets = {  # one value on every host: a home's generated secrets are per machine
        "user_id_key": SecretStr("cluster-pseudonym-key"),
        "token_secret": SecretStr("cluster-token-secret-of-32-bytes+"),
    }
    settings = cluster_settings.model_copy(update={**KEYS, **secrets, "api_replicas": 2})
    prepare(settings, dataset)
    worker = WorkerHost(network.add("worker"), settings, tmp_path / "hosts")
    serving = ServingHosts(
        network.add("ray-head"), network.add("ray-node"), settings, tmp_path / "serve.log"
    )
    try:
        serving.start()
        yield System(settings, serving, worker, network.add("client"))
        worker.assert_clean_log()
    finally:
        for host in (serving.head, serving.node):
            host.kill()
        serving.remove()


def site_sends(settings: Settings, events: list[Event]) -> None:
    """The shop's backend: events with raw user ids, pseudonymized by the producer SDK."""
    user_ids = Pseudonymizer.from_settings(settings)
    with EventProducer(
        settings.kafka_client_config(), settings.events_topic, user_ids=user_ids
    ) as sdk:
        sdk.send_many(events)
        sdk.flush()


def test_a_users_events_personalize_and_erase_across_hosts(
    system: System, catalog: Catalog
) -> None:
    s, url = system.settings, system.serving.url
    user, viewed = "shopper-1", catalog.ids[100:106]
    events = [
        Event.model_validate(
            {"event_id": f"{user}-{i}", "user_id": user, "type": "view", "item_id": item,
             "ts": time.time() - 60 + i}
        )
        for i, item in enumerate(viewed)
    ]  # fmt: skip
    site_sends(s, events)
    until(lambda: system.profile_events(user) == len(viewed), 90, "the profile was not written")
    reply = httpx.post(f"{url}/v1/recommendations", json={"user_id": user}, headers=READER)
    assert reply.status_code == 200, reply.text
    assert reply.json()["strategy"] == "personalized"
    assert not {i["item_id"] for i in reply.json()["items"]} & set(viewed)
    erased = httpx.delete(f"{url}/v1/users/{user}", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    assert erased.status_code == 202, erased.text
    took = until(lambda: system.profile_events(user) == 0, 60, "the profile was not erased")
    print(f"\nerasure across hosts (DELETE -> gone from the Redis Cluster): {took:.2f} s")


class Load:
    """``tests/cluster/load.py`` running on the client host."""

    def __init__(self, system: System, out: Path, seconds: float, users: int = 300):
        self.out, self.seconds = out, seconds
        self.process = system.client.spawn(
            [
                sys.executable, "-m", "tests.cluster.load", "--url", system.serving.url,
                "--key", READ_KEY, "--seconds", str(seconds), "--concurrency", "4",
                "--users", str(users), "--out", str(out),
            ],
            log=out.with_suffix(".log"),
        )  # fmt: skip
        started = out.with_suffix(".started")
        until(lambda: started.exists() or self.process.poll() is not None, 30, "no load")
        self.started = float(started.read_text())

    def now(self) -> float:
        """Seconds since the load started, on the clients' clock."""
        return time.time() - self.started

    def records(self) -> list[dict]:
        self.process.wait(self.seconds + 60)
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def outcomes(records: list[dict]) -> dict[str, int]:
    return {o: sum(r["outcome"] == o for r in records) for o in {r["outcome"] for r in records}}


def test_losing_the_ray_worker_node_under_load_keeps_serving(
    system: System, tmp_path: Path
) -> None:
    head, node = system.serving.head, system.serving.node
    assert replicas_on(head) == 1 and replicas_on(node) == 1  # spread over both hosts
    load = Load(system, tmp_path / "load.jsonl", seconds=50)
    time.sleep(10)
    killed_at = load.now()
    node.kill()  # every Ray process on the node: raylet, workers, the replica
    # Serve replaces the lost replica on the surviving node once Ray knows the node is dead
    replaced = until(lambda: replicas_on(head) == 2, 90, "the lost replica was not replaced")
    records = load.records()
    failed = [r for r in records if r["outcome"] not in ("200", "503")]
    share = len(failed) / len(records)
    answering_again = max((r["t"] for r in failed), default=killed_at) - killed_at
    print(
        f"\nRay worker node lost under load: {len(records)} requests, {len(failed)} failed "
        f"({100 * share:.2f} %), last failure {answering_again:.1f} s after the loss, "
        f"replica replaced after {replaced:.1f} s; outcomes {outcomes(records)}"
    )
    assert share < 0.01
    assert answering_again < 30 and replaced < 30


def test_a_redis_master_lost_under_load_serving_falls_back_and_recovers(
    system: System, redis_hosts: RedisClusterServers, catalog: Catalog, tmp_path: Path
) -> None:
    """Users with profiles on every shard; one master stopped while they are served: the
    requests that cannot read a profile get the fallback list (200, never a 5xx), and once
    the replica has taken over every one is personalized again."""
    users = 60
    now = time.time()
    events = [
        Event.model_validate(
            {"event_id": f"u{u}-{i}", "user_id": f"u{u}", "type": "view",
             "item_id": catalog.ids[(7 * u + i) % 400], "ts": now - 60 + i}
        )
        for u in range(users)
        for i in range(4)
    ]  # fmt: skip
    site_sends(system.settings, events)
    until(lambda: system.profile_events(f"u{users - 1}") == 4, 90, "profiles not written")
    load = Load(system, tmp_path / "load.jsonl", seconds=35, users=users)
    time.sleep(8)
    stopped_at = load.now()
    redis_hosts.masters()[0].stop()
    redis_hosts.wait_healthy(timeout=30)
    failed_over = load.now() - stopped_at
    records = load.records()
    failed = [r for r in records if r["outcome"] not in ("200", "503")]
    fallback = [r for r in records if r["strategy"] == "fallback"]
    last_fallback = max((r["t"] for r in fallback), default=stopped_at) - stopped_at
    tail = [r for r in records if r["t"] > load.seconds - 5]
    print(
        f"\nRedis master stopped under load: {len(records)} requests, {len(failed)} failed, "
        f"{len(fallback)} fallback lists (the last {last_fallback:.1f} s after the stop), "
        f"failover took {failed_over:.1f} s; outcomes {outcomes(records)}"
    )
    assert len(failed) / len(records) < 0.01
    assert tail and all(r["strategy"] == "personalized" for r in tail)  # recovered
    assert last_fallback < 30
