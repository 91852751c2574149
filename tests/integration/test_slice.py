"""The real path, end to end: producer SDK -> Tansu -> Faust worker (a real subprocess)
-> Feast SQLite online store -> Ray Serve -> HTTP. Nothing is mocked."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import jwt
import pytest
import schemathesis
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from schemathesis import GenerationMode

from feature_repo.store import open_store
from infra.broker import EmbeddedBroker
from infra.kafka_admin import committed_offsets, read_topic, wait_until_consumed
from infra.probes import wait_until_checkpointed
from infra.processes import free_port, stop_process
from streamrank.catalog import Catalog
from streamrank.datasets import Dataset
from streamrank.demo import send_raw, start_worker, worker_log
from streamrank.settings import Settings
from streams.events import Event, PrivacyAction
from streams.experiment_app import join_group
from streams.impressions import Impression, parse_impression
from streams.privacy import PrivacyLog, privacy_request
from streams.producer import EventProducer, partition_for
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore
from tests.conftest import isolated_settings, make_home
from tests.hostile_inputs import nested
from tests.integration.checks import assert_profiles_equal, offline_truth
from tests.integration.experiment_checks import (
    live_arms,
    live_join_reaches,
    live_url,
    offline_report,
)
from tests.integration.stack import (
    ADMIN_KEY,
    KEYS,
    READ_KEY,
    READER,
    SITE,
    WRITE_KEY,
    Stack,
    running_stack,
)
from tests.integration.streaming import PacedSender, checkpoints_moved
from tests.integration.test_worker import poison_for, send_keyed
from tests.polling import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    catalog_home: Path,
    broker: EmbeddedBroker,
    dataset: Dataset,
) -> Iterator[Stack]:
    home = make_home(tmp_path_factory.mktemp("stack") / "home", catalog_home)
    # the tests below kill workers: their partitions free 3 s after, not 10
    settings = isolated_settings(home, broker.bootstrap, worker_session_timeout_s=3.0, **KEYS)
    with running_stack(settings, dataset) as running:
        yield running


def items_in(catalog: Catalog, category: str, n: int) -> list[str]:
    """Items whose only category is ``category``."""
    chosen = [i for i in catalog.ids if tuple(catalog.categories(i)) == (category,)]
    assert len(chosen) >= n, category
    return chosen[:n]


def send(settings: Settings, events: list[Event]) -> dict[int, int]:
    with EventProducer(
        settings.kafka_client_config(),
        settings.events_topic,
        user_ids=Pseudonymizer.from_settings(settings),
        batch_events=50,
    ) as producer:
        producer.send_many(events)
        producer.flush()
        return dict(producer.delivered_offsets)


def actions(user: str, done: list[tuple[str, str]], ids: str, minutes_ago: float) -> list[Event]:
    """``user`` did ``done`` ((type, item) pairs), a second apart, ending just before now."""
    now = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return [
        Event(
            event_id=f"{ids}-{n}",
            user_id=user,
            type=kind,  # type: ignore[arg-type]
            item_id=item,
            ts=now + timedelta(seconds=n),
        )
        for n, (kind, item) in enumerate(done)
    ]


def behaviour(user: str, views: list[str], buys: list[str]) -> list[Event]:
    return actions(user, [("view", i) for i in views] + [("purchase", i) for i in buys], user, 10)


def wait(stack: Stack, delivered: dict[int, int]) -> None:
    s = stack.settings
    wait_until_consumed(s.bootstrap(), s.consumer_group, s.events_topic, delivered, timeout=120)
    wait_until_checkpointed(FeastProfileStore(open_store(s)), delivered, timeout=60)


def recommend(stack: Stack, user: str, **body: object) -> dict:
    reply = httpx.post(
        f"{stack.url}/v1/recommendations",
        json={"user_id": user, "k": 10, **body},
        headers=READER,
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def share_with(items: list[dict], categories: set[str]) -> float:
    return sum(bool(categories & set(i["categories"])) for i in items) / len(items)


def test_recommendations_reflect_what_each_user_did(stack: Stack) -> None:
    horror = items_in(stack.catalog, "Horror", 8)
    kids = [i for i in stack.catalog.ids if "Children's" in stack.catalog.categories(i)][:8]
    delivered = send(
        stack.settings,
        behaviour("it-horror", horror[:6], horror[6:8]) + behaviour("it-kids", kids[:6], kids[6:8]),
    )
    wait(stack, delivered)

    profile = stack.profile("it-horror")
    assert profile.totals["view"] == 6
    assert profile.totals["purchase"] == 2
    assert max(profile.categories, key=profile.categories.get) == "Horror"  # type: ignore[arg-type]

    scary = recommend(stack, "it-horror")
    assert scary["strategy"] == "personalized"
    assert scary["profile"]["events"] == 8
    assert len(scary["items"]) == 10
    assert not {i["item_id"] for i in scary["items"]} & set(horror)  # seen and bought are out
    assert share_with(scary["items"], {"Horror"}) >= 0.5, scary["items"]
    assert all(i["reason"] for i in scary["items"])

    family = recommend(stack, "it-kids")
    assert share_with(family["items"], {"Children's", "Animation"}) >= 0.5, family["items"]
    assert share_with(family["items"], {"Horror"}) < share_with(scary["items"], {"Horror"})

    # each answer was logged as an impression of its arm, on the user's partition
    logged = {
        i.request_id: (record.partition, i)
        for record in read_topic(stack.settings.bootstrap(), stack.settings.impressions_topic, 50)
        if (i := Impression.model_validate_json(record.value or b""))
    }
    for answer in (scary, family):
        partition, impression = logged[answer["request_id"]]
        user = stack.pseudonym(answer["user_id"])
        assert impression.user_id == user
        assert partition == partition_for(user, stack.settings.events_partitions)
        assert impression.arm == answer["experiment_arm"] == "main"
        assert impression.items == [i["item_id"] for i in answer["items"]]


def test_new_visitors_get_popular_items_not_errors(stack: Stack) -> None:
    reply = recommend(stack, "never-seen-before")
    assert reply["strategy"] == "cold_start"
    assert len(reply["items"]) == 10
    assert reply["profile"] is None
    searched = recommend(stack, "never-seen-either", context={"query": "haunted house horror"})
    assert searched["strategy"] == "personalized"
    assert share_with(searched["items"], {"Horror"}) >= 0.5


def test_malformed_messages_go_to_the_dlq_and_valid_ones_still_count(stack: Stack) -> None:
    s = stack.settings
    valid = behaviour("it-dlq", stack.catalog.ids[:5], [])
    event = {**valid[0].to_wire(), "user_id": stack.pseudonym("it-dlq")}  # a producer that
    # hashes ids itself, as every producer of a deployment must
    malformed = [
        b"{broken json",
        json.dumps({**event, "event_id": "m1", "type": "teleport"}).encode(),
        json.dumps({"event_id": "m2", "type": "view"}).encode(),
        json.dumps({**event, "event_id": "m3", "ts": "2999-01-01T00:00:00Z"}).encode(),
        json.dumps({**event, "event_id": "m4", "query": "x" * 70_000, "type": "search"}).encode(),
        # a batch: two valid elements and one invalid, sent by "another producer"
        json.dumps(
            [
                {**event, "event_id": "it-dlq-b1"},
                {"event_id": "m5", "user_id": event["user_id"], "type": "view", "ts": event["ts"]},
                {**event, "event_id": "it-dlq-b2"},
            ]
        ).encode(),
    ]
    delivered = send(s, valid[:2])
    for part, off in send_raw(s, malformed).items():
        delivered[part] = max(delivered.get(part, -1), off)
    for part, off in send(s, valid[2:]).items():
        delivered[part] = max(delivered.get(part, -1), off)
    wait(stack, delivered)

    dead = read_topic(s.bootstrap(), s.dlq_topic, 100, timeout=5)
    reasons = sorted(r.headers["reason"].split(":")[0] for r in dead)
    assert reasons == ["json", "schema", "schema", "schema", "size", "time"]
    assert all("source_offset" in r.headers for r in dead)
    profile = stack.profile("it-dlq")
    assert profile.totals["view"] == 5 + 2


def test_bad_requests_are_4xx_with_reasons(stack: Stack) -> None:
    post = lambda body: httpx.post(  # noqa: E731
        f"{stack.url}/v1/recommendations", json=body, headers=READER, timeout=30
    )
    assert post({"user_id": "u", "k": 0}).status_code == 422
    assert post({"k": 3}).status_code == 422
    assert post({"user_id": "u", "k": 3, "surprise": 1}).status_code == 422
    assert post({"user_id": "u", "candidate_ids": ["1"] * 501}).status_code == 422
    bad_json = httpx.post(
        f"{stack.url}/v1/recommendations",
        content=b"{nope",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert bad_json.status_code == 422
    huge = httpx.post(
        f"{stack.url}/v1/recommendations",
        content=b'{"user_id": "u", "exclude_ids": ["' + b"x" * 2_000_000 + b'"]}',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert huge.status_code == 413, huge.text  # refused before it is read
    assert "user_id" in post({"k": 3}).text

    # a user of this test's own, with a profile to score from
    wait(stack, send(stack.settings, behaviour("it-bad-requests", stack.catalog.ids[10:14], [])))
    ranked = post(
        {"user_id": "it-bad-requests", "candidate_ids": ["1", "2", "unknown-item"], "k": 5}
    )
    assert ranked.status_code == 200
    assert {i["item_id"] for i in ranked.json()["items"]} <= {"1", "2"}

    scored = httpx.post(
        f"{stack.url}/v1/score",
        json={"user_id": "it-bad-requests", "item_ids": ["1", "zzz"]},
        headers=READER,
        timeout=30,
    ).json()
    assert scored["scores"][0]["score"] is not None
    assert scored["scores"][1] == {"item_id": "zzz", "score": None}
    assert httpx.get(f"{stack.url}/healthz", timeout=30).json()["status"] == "ok"
    exposed = httpx.get(f"{stack.url}/metrics", timeout=30).text
    assert "streamrank_serve_requests_total" in exposed
    # the valid calls took the lean route, the rest went on to FastAPI (serving/lean_routes.py)
    for outcome in ("answered", "handed_on"):
        labels = f'outcome="{outcome}",route="recommendations"'
        assert f"streamrank_serve_lean_requests_total{{{labels}}}" in exposed, outcome


def test_a_killed_worker_neither_loses_nor_double_counts(stack: Stack) -> None:
    """SIGKILL mid-stream, restart: every profile equals the offline fold of its events."""
    s = stack.settings
    items = stack.catalog.ids
    start = datetime.now(UTC) - timedelta(hours=2)  # all 4000 seconds stay in the past
    events = [
        Event(
            event_id=f"crash-{n}",
            user_id=f"crash-u{n % 40}",
            type=("view", "click", "add_to_cart", "purchase")[n % 4],  # type: ignore[arg-type]
            item_id=items[(n * 7) % len(items)],
            ts=start + timedelta(seconds=n),
        )
        for n in range(4000)
    ]
    dead_before = len(read_topic(s.bootstrap(), s.dlq_topic, 1000, timeout=2))
    before = stack.store.read_checkpoints(list(range(s.events_partitions)))
    sender = PacedSender(partial(send, s), events, chunk=100, pause_s=0.15)
    until(lambda: checkpoints_moved(stack.store, before), 60, "no checkpoint was written")
    assert sender.sending  # the kill lands mid-stream: part checkpointed, more to come
    os.killpg(os.getpgid(stack.worker.pid), signal.SIGKILL)  # type: ignore[attr-defined]
    stack.worker.wait(10)  # type: ignore[attr-defined]
    stack.worker = start_worker(s)
    wait(stack, sender.finish())
    assert len(read_topic(s.bootstrap(), s.dlq_topic, 1000, timeout=2)) == dead_before

    seen = [e.model_copy(update={"user_id": stack.pseudonym(e.user_id)}) for e in events]
    truth = offline_truth(seen, stack.catalog)
    assert_profiles_equal(stack.store.read_profiles(sorted(truth)), truth)


def test_raw_user_ids_reach_no_topic_no_state_and_no_store(stack: Stack) -> None:
    """Ids that name people go in through the SDK, the HTTP collector and the API; after
    the stream and serving have run, no topic, state or store holds any of them."""
    s = stack.settings
    raw = ["alice@example.com", "customer-0042-bob"]
    items = stack.catalog.ids[:6]

    def neutral(events: list[Event], tag: str) -> list[Event]:  # ids that name no one
        return [e.model_copy(update={"event_id": f"{tag}-{n}"}) for n, e in enumerate(events)]

    delivered = send(s, neutral(behaviour(raw[0], items[:3], items[3:4]), "scan-a"))
    beacon = neutral(behaviour(raw[1], items[2:5], []), "scan-b")
    collector = f"http://{s.worker_web_host}:{s.worker_web_port}/v1/events"
    reply = httpx.post(collector, json=[e.to_wire() for e in beacon], headers=SITE, timeout=30)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 60
    while stack.profile(raw[1]).event_count < 3:  # the beacon went its own way to Kafka
        assert time.monotonic() < deadline, "the collector's events never arrived"
        time.sleep(0.5)
    wait(stack, delivered)
    for user in raw:
        answer = recommend(stack, user)
        assert answer["strategy"] == "personalized", answer  # found under the pseudonym
        assert answer["user_id"] == user  # the caller gets its own id back
        assert stack.profile(user).event_count >= 3
        assert stack.store.read_profiles([user])[user].event_count == 0  # nothing raw

    # the consent API takes raw ids too; the state it leads to is keyed by the pseudonym
    consent = httpx.post(
        f"{stack.url}/v1/users/{raw[1]}/consent",
        json={"personalization": False},
        headers=SITE,
        timeout=30,
    )
    assert consent.status_code == 202, consent.text
    privacy = PrivacyLog(s.bootstrap(), s.privacy_topic)
    until(lambda: stack.pseudonym(raw[1]) in privacy.read(), 60, "the opt-out was not applied")

    needles = [u.encode() for u in raw]
    for topic in (s.events_topic, s.dlq_topic, s.impressions_topic, s.privacy_topic):
        for record in read_topic(s.bootstrap(), topic, timeout=10, idle_s=2):
            blob = (record.key or b"") + (record.value or b"")
            assert not any(n in blob for n in needles), (topic, record.offset)
    changelogs = [
        t
        for t in AdminClient({"bootstrap.servers": s.bootstrap()}).list_topics().topics
        if t.startswith(s.experiments_group)  # the experiment join's Faust table
    ]
    assert changelogs
    for topic in changelogs:
        for record in read_topic(s.bootstrap(), topic, timeout=10, idle_s=2):
            blob = (record.key or b"") + (record.value or b"")
            assert not any(n in blob for n in needles), (topic, record.offset)
    with sqlite3.connect(s.home_dir / "online.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                blob = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
                assert not any(n in blob for n in needles), table


def test_the_experiment_report_joins_impressions_with_later_clicks(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = recommend(stack, "it-exp")
    clicked, bought = shown["items"][0]["item_id"], shown["items"][1]["item_id"]
    later = datetime.now(UTC)
    events = [
        Event(event_id="exp-c", user_id="it-exp", type="click", item_id=clicked, ts=later),  # type: ignore[arg-type]
        Event(event_id="exp-p", user_id="it-exp", type="purchase", item_id=bought, ts=later),  # type: ignore[arg-type]
    ]
    # poison between the impression and the clicks, on the user's keys, on both topics the
    # join reads: judged (dead-lettered) as the profile worker judges, never a restart
    s = stack.settings
    key = stack.pseudonym("it-exp").encode()
    send_keyed(s, [(key, value) for value in poison_for(stack.pseudonym("it-exp"), 1)])
    bad_impressions = [b'{"request_id": ["x"]}', nested(100_000), b"\xff\xfe", b"null"]
    send_keyed(s, [(key, value) for value in bad_impressions], s.impressions_topic)
    wait(stack, send(stack.settings, events))

    report = offline_report(stack.settings, capsys)
    arm = report["arms"][shown["experiment_arm"]]
    # this user's page was clicked and converted; other tests' pages add impressions only
    # (their users bought before being shown anything)
    assert (arm["clicked"], arm["converted"]) == (1, 1)
    assert arm["ctr"] == pytest.approx(1 / arm["impressions"])

    # the live join (Faust agent, table with changelog) reaches the same numbers, and
    # exposes them as per-arm Prometheus gauges
    live_join_reaches(stack.settings, report["arms"], 60)
    metrics = httpx.get(f"{live_url(stack.settings)}/metrics", timeout=5).text
    assert f'streamrank_experiment_clicked{{arm="{shown["experiment_arm"]}"}} 1.0' in metrics

    # Killed without warning and restarted: its table comes back from the changelog. The
    # join commits rarely here, so the kill lands after it has counted a new page's click
    # and before it committed the messages: the redelivered tail is recognised, so
    # nothing is counted twice.
    def restart(settings: Settings) -> None:
        os.kill(stack.experiment_worker.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        stack.experiment_worker.wait()  # type: ignore[attr-defined]
        stack.experiment_worker = start_worker(settings, "experiment-worker")

    restart(s.model_copy(update={"experiments_commit_interval_s": 600.0}))
    live_join_reaches(stack.settings, report["arms"], 120)
    again = recommend(stack, "it-exp-tail")
    item = again["items"][0]["item_id"]
    tail = [
        Event.model_validate(
            {
                "event_id": "exp-t",
                "user_id": "it-exp-tail",
                "type": "click",
                "item_id": item,
                "ts": datetime.now(UTC),
            }
        )
    ]
    delivered = send(s, tail)
    wait(stack, delivered)
    report = offline_report(stack.settings, capsys)
    live_join_reaches(stack.settings, report["arms"], 60)
    ((partition, click_offset),) = delivered.items()
    committed = committed_offsets(
        s.bootstrap(), join_group(s, s.events_partitions), s.events_topic, [partition]
    )
    assert committed[partition] <= click_offset  # counted, not committed: it comes again
    restart(s)
    live_join_reaches(stack.settings, report["arms"], 120)
    log = (s.home_dir / "logs" / "experiment-worker.log").read_text(errors="replace")
    assert "Restarting" not in log and "Crashed" not in log, log[-3000:]
    assert log.count("bad impression at offset") >= len(bad_impressions)


def publish_pages(stack: Stack, users: list[str], arm: str) -> dict[int, int]:
    """One impression per user on the impressions topic, keyed by pseudonym as a replica
    publishes them; returns the last offset per partition."""
    pages = []
    for user in users:
        pseudonym = stack.pseudonym(user)
        page = Impression(
            request_id=f"{arm}-{user}",
            user_id=pseudonym,
            arm=arm,
            model_version="test",
            strategy="personalized",
            items=stack.catalog.ids[:2],
            propensities=[1.0, 1.0],
            ts=datetime.now(UTC) - timedelta(seconds=1),
        )
        pages.append((pseudonym.encode(), page.model_dump_json().encode()))
    return send_keyed(stack.settings, pages, stack.settings.impressions_topic)


def joined(stack: Stack, topic: str, offsets: dict[int, int]) -> None:
    """Until the experiment join has committed past ``offsets`` of ``topic``."""
    s = stack.settings
    wait_until_consumed(s.bootstrap(), join_group(s, s.events_partitions), topic, offsets, 120)


def one_user_per_partition(stack: Stack, prefix: str) -> list[str]:
    """Raw user ids whose pseudonyms cover every partition of the topics."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < stack.settings.events_partitions:
        user = f"{prefix}-{n}"
        found.setdefault(
            partition_for(stack.pseudonym(user), stack.settings.events_partitions), user
        )
        n += 1
    return [found[p] for p in sorted(found)]


def test_a_page_read_after_its_users_opt_out_stays_out_of_the_live_join(stack: Stack) -> None:
    """The live join reads impressions and events side by side, so a page shown just before
    an opt-out can reach it after the opt-out (the impression producer lingers; under load
    one topic runs behind the other). Such a page is left out, as the offline report leaves
    it out, instead of starting a new record of a user who asked to be forgotten; a page of
    another user read with it is joined (the worker did read them)."""
    s = stack.settings
    optout = privacy_request("it-late-page", PrivacyAction.OPT_OUT)
    joined(stack, s.events_topic, send(s, [optout]))  # type: ignore[list-item]
    joined(
        stack, s.impressions_topic, publish_pages(stack, ["it-late-page", "it-late-other"], "late")
    )
    assert live_arms(stack.settings)["late"]["impressions"] == 1


def test_an_opt_out_made_while_another_join_worker_owned_the_partition_holds(
    stack: Stack, tmp_path: Path
) -> None:
    """A second experiment worker joins the group, takes some partitions, applies opt-outs
    of their users and commits past them, then stops: the first worker gets the partitions
    back with their privacy states restored afresh, so those users' later pages stay out.
    (Users on every partition, so whichever the second worker took, some were its own.)"""
    s = stack.settings
    warm = one_user_per_partition(stack, "it-moved-warm")
    joined(stack, s.impressions_topic, publish_pages(stack, warm, "moved-warm"))  # all known here
    log = worker_log(s, "experiment-worker").read_text(errors="replace")
    rebalances = log.count("Setting newly assigned partitions")
    second = s.model_copy(update={"home": tmp_path / "second", "experiments_web_port": free_port()})
    other = start_worker(second, "experiment-worker")
    try:

        def split() -> bool:
            mine = worker_log(s, "experiment-worker").read_text(errors="replace")
            theirs = worker_log(second, "experiment-worker").read_text(errors="replace")
            taken = "Setting newly assigned partitions" in theirs
            return taken and mine.count("Setting newly assigned partitions") > rebalances

        until(split, 120, "the second join worker never got partitions")
        users = one_user_per_partition(stack, "it-moved")
        delivered = send(s, [privacy_request(u, PrivacyAction.OPT_OUT) for u in users])  # type: ignore[misc]
        privacy = PrivacyLog(s.bootstrap(), s.privacy_topic)
        gone = {stack.pseudonym(u) for u in users}
        until(lambda: gone <= set(privacy.read()), 60, "the opt-outs were not applied")
        joined(stack, s.events_topic, delivered)  # by both join workers, and committed
    finally:
        stop_process(other, "second experiment worker")
    assert other.returncode == 0
    joined(stack, s.impressions_topic, publish_pages(stack, [*users, "it-moved-other"], "moved"))
    assert live_arms(stack.settings)["moved"]["impressions"] == 1  # the other user's page alone
    theirs = worker_log(second, "experiment-worker").read_text(errors="replace")
    assert "Traceback" not in theirs, theirs[-3000:]


def page_config(html: str) -> dict:
    """What a public page holds: the JSON object the server put in it."""
    found = re.search(r"window\.STREAMRANK = (\{.*?\});</script>", html)
    assert found, html[:500]
    return json.loads(found.group(1))


def forged(claims: dict, secret: bytes | None = b"x" * 32, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)  # type: ignore[arg-type]


def test_what_a_public_page_holds_opens_no_one_elses_data(stack: Stack) -> None:
    """The attacker has only what the storefront hands any visitor (their own token and
    cookie). Every way into another user's data is refused, and nothing of it is stored."""
    s = stack.settings
    victim = "it-victim"
    wait(stack, send(s, visits(victim, "own", stack.catalog.ids[40:44])))
    before = stack.profile(victim)

    page = httpx.get(f"{stack.url}/", timeout=30)
    assert page.status_code == 200
    for key in (ADMIN_KEY, WRITE_KEY, READ_KEY):
        assert key not in page.text  # no server key is ever on a page
    config = page_config(page.text)
    own, token = config["visitor"], config["token"]
    assert own.startswith("visitor-") and own != victim
    cookie = page.cookies["streamrank_visitor"]
    collector = config["collectorUrl"]

    now = int(time.time())
    claims = {"sub": victim, "aud": "streamrank", "iat": now, "exp": now + 600}
    secret = s.home_dir / "token.secret"
    payload = jwt.decode(token, options={"verify_signature": False})
    header, _, signature = token.split(".")
    swapped = base64.urlsafe_b64encode(json.dumps({**payload, "sub": victim}).encode())
    credentials = {
        "own token": token,
        "forged (another secret)": forged(claims),
        "the own token's payload changed to the victim": (
            f"{header}.{swapped.decode().rstrip('=')}.{signature}"
        ),
        "unsigned (alg none)": forged(claims, None, "none"),
        "expired": forged({**claims, "iat": now - 7200, "exp": now - 3600}, secret.read_bytes()),
        "the storefront's cookie": cookie,
        "a guessed key": "site-key",
    }
    event = {"event_id": "atk-1", "user_id": victim, "type": "view", "item_id": "1"}
    event["ts"] = datetime.now(UTC).isoformat()
    attempts = {
        "read the profile": lambda h: httpx.get(
            f"{stack.url}/v1/users/{victim}/profile", headers=h
        ),
        "opt them out": lambda h: httpx.post(
            f"{stack.url}/v1/users/{victim}/consent", json={"personalization": False}, headers=h
        ),
        "erase them": lambda h: httpx.delete(f"{stack.url}/v1/users/{victim}", headers=h),
        "their recommendations": lambda h: httpx.post(
            f"{stack.url}/v1/recommendations", json={"user_id": victim}, headers=h
        ),
        "score items for them": lambda h: httpx.post(
            f"{stack.url}/v1/score", json={"user_id": victim, "item_ids": ["1"]}, headers=h
        ),
        "post events in their name": lambda h: httpx.post(collector, json=[event], headers=h),
        "hide one among their own": lambda h: httpx.post(
            collector, json=[{**event, "event_id": "atk-2", "user_id": own}, event], headers=h
        ),
    }
    for name, attempt in attempts.items():
        assert attempt({}).status_code == 401, name  # no credential at all
        for what, credential in credentials.items():
            reply = attempt({"Authorization": f"Bearer {credential}"})
            expected = 403 if what == "own token" else 401
            assert reply.status_code == expected, (name, what, reply.text)
            assert reply.json().get("detail") or reply.json().get("error"), "a reason"

    # the visitor's own token opens their own data, and only that
    mine = {"Authorization": f"Bearer {token}"}
    mine_event = {**event, "event_id": "own-1", "user_id": own}
    assert httpx.post(collector, json=[mine_event], headers=mine).status_code == 202
    ranked = httpx.post(f"{stack.url}/v1/recommendations", json={"user_id": own}, headers=mine)
    assert ranked.status_code == 200, ranked.text
    assert httpx.get(f"{stack.url}/v1/users/{own}/profile", headers=mine).status_code == 200

    # nothing of the attacks was stored: a legitimate event of the victim's, sent after them
    # through the site's key, is the only change once it is in the profile
    late = {**event, "event_id": "late-1", "item_id": stack.catalog.ids[45]}
    assert httpx.post(collector, json=[late], headers=SITE).status_code == 202
    until(lambda: stack.profile(victim).event_count > before.event_count, 60, "no late event")
    after = stack.profile(victim)
    assert after.event_count == before.event_count + 1 and not after.opted_out
    assert stack.pseudonym(victim) not in PrivacyLog(s.bootstrap(), s.privacy_topic).read()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_requests_generated_from_the_openapi_spec_never_get_a_5xx(
    stack: Stack, mode: GenerationMode
) -> None:
    """Schemathesis, from the running API's ``/openapi.json``: valid bodies (positive) and
    invalid ones (negative) for every operation; no server error, responses match their
    documented schema and status codes. (Driven through Hypothesis directly: the
    Schemathesis pytest plugin does not run on pytest 9.)"""
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/recommendations", "/v1/score", "/healthz"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @fuzz_settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases on every CI run; raise max_examples to explore
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            # an admin key: every operation is reachable; Schemathesis's ignored_auth check
            # sends each again with no credential and a wrong one, and expects 401/403
            case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"})

        call()


def visits(user: str, tag: str, items: list[str], kind: str = "view") -> list[Event]:
    """Events with ids of their own (a user's second visit must not look like a retry)."""
    return actions(user, [(kind, i) for i in items], f"{user}-{tag}", 5)


def impressions_of(stack: Stack, request_ids: set[str]) -> list[Impression]:
    records = read_topic(stack.settings.bootstrap(), stack.settings.impressions_topic, idle_s=2)
    parsed = (parse_impression(r.value) for r in records)  # poison: the join's to dead-letter
    shown = [i for i in parsed if isinstance(i, Impression)]
    return [i for i in shown if i.request_id in request_ids]


def test_an_opted_out_user_keeps_no_profile_and_gets_no_personalization(stack: Stack) -> None:
    s = stack.settings
    user, items = "it-optout", stack.catalog.ids[20:32]
    wait(stack, send(s, visits(user, "a", items[:4])))
    assert recommend(stack, user)["strategy"] == "personalized"

    # the site's consent banner sends the choice as an event, through the collector
    collector = f"http://{s.worker_web_host}:{s.worker_web_port}/v1/events"
    choice = {"event_id": f"{user}-no", "user_id": user, "type": "opt_out"}
    choice["ts"] = datetime.now(UTC).isoformat()
    assert httpx.post(collector, json=choice).status_code == 401  # the site's key is needed
    reply = httpx.post(collector, json=choice, headers=SITE)
    assert reply.status_code == 202, reply.text
    until(lambda: stack.profile(user).opted_out, 60, "the opt-out never reached the profile")
    wait(stack, send(s, visits(user, "b", items[4:8])))  # browsing on: none of it is kept

    profile = stack.profile(user)
    assert profile.opted_out and profile.event_count == 0 and profile.interest_sum is None
    answer = recommend(stack, user)
    assert answer["strategy"] == "opted_out" and answer["profile"] is None
    assert len(answer["items"]) == 10
    scored = httpx.post(
        f"{stack.url}/v1/score", json={"user_id": user, "item_ids": items[:2]}, headers=READER
    )
    assert scored.json()["fallback_reason"] == "the user opted out of personalization"
    assert impressions_of(stack, {answer["request_id"]}) == []  # not even what was shown

    # back in, through the API: a fresh start, nothing from before the opt-out
    consent = f"{stack.url}/v1/users/{user}/consent"
    assert httpx.post(consent, json={"personalization": True}).status_code == 401
    back = httpx.post(consent, json={"personalization": True}, headers={"X-API-Key": WRITE_KEY})
    assert back.status_code == 202 and back.json()["action"] == "opt_in"
    until(lambda: not stack.profile(user).opted_out, 60, "the opt-in never applied")
    wait(stack, send(s, visits(user, "c", items[8:11])))
    assert stack.profile(user).totals["view"] == 3
    assert recommend(stack, user)["strategy"] == "personalized"


def test_an_erased_user_is_gone_everywhere_and_a_replay_does_not_bring_them_back(
    stack: Stack,
) -> None:
    from feature_repo.namespaces import Namespace
    from streams.replay import plan, replay

    s = stack.settings
    user, items = "it-erase", stack.catalog.ids[40:52]
    shown = recommend(stack, user)
    clicks = [shown["items"][0]["item_id"]]
    delivered = send(s, visits(user, "a", items[:5]) + visits(user, "k", clicks, "click"))
    wait(stack, delivered)
    assert stack.profile(user).event_count == 6
    ((partition, last_event),) = delivered.items()  # one user: one partition
    before = Namespace(s, "before_erase")
    replay(s, before, plan(s, None), workers=1, progress=False)
    copy = FeastProfileStore(before.open_store())
    pseudonym = stack.pseudonym(user)
    assert copy.read_profiles([pseudonym])[pseudonym].event_count == 6

    url = f"{stack.url}/v1/users/{user}"
    assert httpx.delete(url, timeout=30).status_code == 401
    wrong = httpx.delete(url, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    started = time.monotonic()
    reply = httpx.delete(url, headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    assert reply.status_code == 202, reply.text
    until(lambda: stack.profile(user).event_count == 0, 60, "the profile was not erased")
    print(
        f"\ntime to erase (DELETE -> profile gone from the online store): "
        f"{time.monotonic() - started:.2f}s"
    )

    privacy = PrivacyLog(s.bootstrap(), s.privacy_topic)
    until(lambda: pseudonym in privacy.read(), 30, "no privacy state was published")
    state = privacy.read()[pseudonym]
    # the erasure's marker follows the user's events in their partition: all are wiped
    assert state.partition == partition and state.wiped_through > last_event, state
    assert copy.read_profiles([pseudonym])[pseudonym].event_count == 0  # the old replay too

    # the experiment join forgot them (a changelog tombstone), before anything new came
    changelog = next(
        t
        for t in AdminClient({"bootstrap.servers": s.bootstrap()}).list_topics().topics
        if t.startswith(s.experiments_group)
    )

    def join_forgot() -> bool:
        mine = [
            r
            for r in read_topic(s.bootstrap(), changelog, idle_s=1)
            if pseudonym.encode() in (r.key or b"")
        ]
        return bool(mine) and mine[-1].value is None

    until(join_forgot, 60, "the experiment join still holds the user")
    assert recommend(stack, user)["strategy"] == "cold_start"

    # a replay of the whole log, after the erasure, does not rebuild them; when they come
    # back, only what they do from now on counts
    after = Namespace(s, "after_erase")
    replay(s, after, plan(s, None), workers=1, progress=False)
    rebuilt = FeastProfileStore(after.open_store()).read_profiles([pseudonym])[pseudonym]
    assert rebuilt.event_count == 0
    wait(stack, send(s, visits(user, "b", items[5:7])))
    assert stack.profile(user).event_count == 2


def test_the_privacy_command_waits_until_a_worker_applied_it(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamrank.cli import main as cli

    user = "it-cli"
    wait(stack, send(stack.settings, visits(user, "a", stack.catalog.ids[60:63])))
    for key, value in stack.settings.as_env().items():
        monkeypatch.setenv(key, value)
    assert cli(["privacy", "opt-out", user]) == 0
    out = capsys.readouterr().out
    assert "applied in" in out and "opted out=True" in out, out
    assert stack.profile(user).opted_out  # applied before the command returned
    assert cli(["privacy", "erase", user]) == 0
    assert "opted out=True" in capsys.readouterr().out  # an erasure keeps the choice
    assert cli(["privacy", "opt-in", user]) == 0
    assert not stack.profile(user).opted_out
