"""The collector's door: keys and user tokens, per-client rate limits, and any body answered
with a deliberate status (its way to Kafka is tested through a real worker in
tests/integration/test_worker.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from pydantic_core import from_json

from streamrank.settings import Settings
from streams.access import AccessPolicy, FailureLimiter, RateLimiter, Scope, UserTokens
from streams.collector import Collector
from streams.producer import EventProducer
from streams.pseudonyms import RAW_IDS
from tests.hostile_inputs import hostile_messages, nested


@pytest.fixture
def producer(settings: Settings) -> Iterator[EventProducer]:
    with EventProducer(settings.bootstrap(), settings.events_topic, user_ids=RAW_IDS) as sdk:
        yield sdk


BODY = json.dumps(
    {
        "event_id": "e1",
        "user_id": "u",
        "type": "view",
        "item_id": "1",
        "ts": datetime.now(UTC).isoformat(),
    }
).encode()


TOKENS = UserTokens(b"s" * 32)


def keyed(failures: FailureLimiter | None = None) -> AccessPolicy:
    return AccessPolicy(
        {Scope.EVENTS: ["k-site-1", "k-site-2"], Scope.READ: ["k-read"]}, TOKENS, failures
    )


def body(*users: str) -> bytes:
    event = json.loads(BODY)
    return json.dumps([{**event, "event_id": f"e-{u}", "user_id": u} for u in users]).encode()


def test_keys_are_required_once_configured(producer: EventProducer) -> None:
    door = Collector(producer, access=keyed())
    assert door.accept(BODY, "1.2.3.4").status == 401
    assert door.accept(BODY, "1.2.3.4", "wrong").status == 401
    assert door.accept(BODY, "1.2.3.4", "k-site-1x").status == 401
    assert door.accept(BODY, "1.2.3.4", "k-read").status == 403  # a read key posts nothing
    producer.flush()
    assert producer.sent_events == 0  # refused before anything was produced
    assert door.accept(BODY, "1.2.3.4", "k-site-2").status == 202
    producer.flush()
    assert producer.sent_events == 1
    assert Collector(producer).accept(BODY, "1.2.3.4").status == 202  # none configured: open


def test_a_user_token_posts_only_that_users_events(producer: EventProducer) -> None:
    door = Collector(producer, access=keyed())
    token = TOKENS.issue("u")
    assert door.accept(body("u", "u"), "b", token).status == 202
    mixed = door.accept(body("u", "someone-else"), "b", token)
    assert mixed.status == 403 and "another user" in mixed.body["error"]
    assert door.accept(body("someone-else"), "b", token).status == 403
    assert door.accept(body("u"), "b", UserTokens(b"t" * 32).issue("u")).status == 401  # forged
    producer.flush()
    assert producer.sent_events == 2  # only the token's own user's two


def test_repeated_refusals_are_rate_limited_per_address(producer: EventProducer) -> None:
    door = Collector(producer, access=keyed(FailureLimiter(per_minute=6, burst=3)))
    assert [door.accept(BODY, "guesser", f"k-{n}").status for n in range(4)] == [401] * 3 + [429]
    blocked = door.accept(BODY, "guesser", "k-site-1")  # even a right key, for a while
    assert blocked.status == 429 and blocked.body["retry_after_s"] >= 1
    assert door.accept(BODY, "someone-else", "k-site-1").status == 202


def test_each_client_has_its_own_bucket_and_gets_a_retry_after(producer: EventProducer) -> None:
    door = Collector(producer, limiter=RateLimiter(rate_per_s=1.0, burst=3))
    statuses = [door.accept(BODY, "flood").status for _ in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    limited = door.accept(BODY, "flood")
    assert limited.body["retry_after_s"] >= 1
    assert door.accept(BODY, "someone-else").status == 202  # not punished for the flood


def test_buckets_refill_and_stay_bounded() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2, max_clients=100)
    assert [limiter.wait_s("c", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert limiter.wait_s("c", now=0.6) == 0.0  # refilled at 2 per second
    for n in range(1000):
        limiter.wait_s(f"spoofed-{n}", now=1.0)
    assert len(limiter._buckets) == 100
    assert RateLimiter(rate_per_s=0.0, burst=1).wait_s("c") == 0.0  # 0 turns it off


def test_a_browser_may_send_its_consent_choice_but_never_an_erasure(
    settings: Settings, producer: EventProducer
) -> None:
    from infra.kafka_admin import read_topic

    now = datetime.now(UTC).isoformat()
    choice = {"event_id": "c1", "user_id": "u-consent", "type": "opt_out", "ts": now}
    erase = {"event_id": "c2", "user_id": "u-other", "type": "erase", "ts": now}
    reply = Collector(producer).accept(json.dumps([choice, erase]).encode(), "1.2.3.4")
    assert reply.status == 202
    assert reply.body["accepted"] == 1
    assert reply.body["rejected"][0]["index"] == 1
    assert reply.body["rejected"][0]["reason"].startswith("erase:")
    producer.flush()
    records = read_topic(settings.bootstrap(), settings.events_topic, timeout=10, idle_s=2)
    sent = [json.loads(r.value) for r in records]
    assert [e["type"] for batch in sent for e in batch] == ["opt_out"]


@fuzz_settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=hostile_messages)
def test_any_body_gets_a_deliberate_answer_never_an_exception(
    producer: EventProducer, body: bytes
) -> None:
    """Whatever the body, a 2xx or a 4xx with its reasons: the shapes that once raised out
    of the collector (a list for ``type``, nesting 100,000 deep) among them. What is
    accepted plus what is rejected is what was sent."""
    reply = Collector(producer).accept(body, "fuzz")
    assert reply.status in {202, 400, 413, 422}, (body[:200], reply)
    if reply.status == 202:
        try:
            sent = from_json(body)
        except ValueError:
            raise AssertionError(f"accepted a body that is not JSON: {body[:200]!r}") from None
        count = len(sent) if isinstance(sent, list) else 1
        assert reply.body["accepted"] + len(reply.body["rejected"]) == count
    for rejected in reply.body.get("rejected", []):
        assert not rejected["reason"].startswith("internal"), (body[:200], rejected)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({**json.loads(BODY), "type": ["view"]}).encode(),
        nested(100_000),
        b'{"event_id": ' + b"1" * 5000 + b"}",
        json.dumps({**json.loads(BODY), "ts": "0001-01-01T00:00:00+01:00"}).encode(),
    ],
)
def test_bodies_that_once_got_a_500_get_a_4xx(producer: EventProducer, body: bytes) -> None:
    reply = Collector(producer).accept(body, "1.2.3.4")
    assert reply.status in {400, 422}, reply


def test_with_the_broker_down_beacons_get_a_503_at_once_and_nothing_accepted_is_lost() -> None:
    """The broker stops answering (frozen with SIGSTOP: it keeps its log, as a real broker
    that is restarted or cut off does) while beacons keep coming. Each request is answered
    within 100 ms, so the worker's event loop is never held: 202 while the events waiting
    for the broker stay under ``max_pending``, then 503 with ``Retry-After``. When the
    broker answers again, every event answered 202 is on the topic, once."""
    import os
    import signal

    from infra.broker import EmbeddedBroker, ensure_topics
    from infra.kafka_admin import read_topic
    from streams.collector import COLLECTOR_PRODUCER_CONFIG

    def body(n: int) -> bytes:
        now = datetime.now(UTC).isoformat()
        events = [
            {"event_id": f"b{n}-{i}", "user_id": f"u{i}", "type": "view", "item_id": "1", "ts": now}
            for i in range(20)
        ]
        return json.dumps(events).encode()

    with EmbeddedBroker() as broker:
        assert broker.process is not None
        ensure_topics(broker.bootstrap, {"events": 4})
        producer = EventProducer(
            broker.bootstrap, "events", user_ids=RAW_IDS, config=COLLECTOR_PRODUCER_CONFIG
        )
        door = Collector(producer, max_pending=300)
        accepted: set[str] = set()
        for n in range(3):
            assert door.accept(body(n)).status == 202
            accepted |= {f"b{n}-{i}" for i in range(20)}
        producer.flush()
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            statuses = []
            for n in range(3, 40):
                started = time.monotonic()
                reply = door.accept(body(n))
                assert time.monotonic() - started < 0.1, reply
                statuses.append(reply.status)
                if reply.status == 202:
                    accepted |= {f"b{n}-{i}" for i in range(20)}
                else:
                    assert reply.status == 503 and reply.body["retry_after_s"] >= 1
            assert statuses[:15] == [202] * 15 and set(statuses[15:]) == {503}  # 300 / 20
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        producer.close()  # flushes: what waited is delivered now
        assert producer.pending() == 0
        records = read_topic(broker.bootstrap, "events", idle_s=3.0)
        delivered = [e["event_id"] for r in records for e in json.loads(r.value or b"[]")]
        assert sorted(delivered) == sorted(accepted)
