"""Serving with its online store (Redis) stopped: answers keep coming, flagged, never 5xx,
and personalization comes back with the store. Real Redis, real Ray Serve."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from feature_repo.store import open_store
from infra.broker import EmbeddedBroker, ensure_topics
from infra.redis import RedisServer
from streamrank.catalog import Catalog
from streamrank.prepare import prepare
from streams.pseudonyms import Pseudonymizer
from streams.sink import FeastProfileStore
from tests.conftest import isolated_settings
from tests.serving.test_ranking import profile_of

pytestmark = pytest.mark.integration


def test_recommendations_survive_the_profile_store_going_down(
    home: Path, broker: EmbeddedBroker, catalog: Catalog, redis_server: RedisServer, dataset
) -> None:
    from serving import app as serve_app

    settings = isolated_settings(
        home, broker.bootstrap, online_store="redis", redis_url=redis_server.url
    )
    prepare(settings, dataset)
    ensure_topics(settings.bootstrap(), settings.topics(), compacted=settings.compacted_topics())
    profile = profile_of(catalog, ["1", "2", "3"], [])
    user = profile.user_id  # the raw id the site asks with; the store knows the pseudonym
    profile.user_id = Pseudonymizer.from_settings(settings)(user)
    FeastProfileStore(open_store(settings)).write_profiles([profile])
    url = serve_app.start(settings, num_cpus=2)
    try:

        def ask(path: str, body: dict) -> dict:
            started = time.monotonic()
            reply = httpx.post(f"{url}{path}", json=body, timeout=30)
            assert reply.status_code == 200, reply.text
            assert time.monotonic() - started < 5  # bounded: no hanging on the dead store
            return reply.json()

        page = {"user_id": user, "k": 5}
        assert ask("/v1/recommendations", page)["strategy"] == "personalized"

        redis_server.stop()
        for _ in range(3):
            answer = ask("/v1/recommendations", page)
            assert answer["strategy"] == "fallback"
            assert answer["fallback_reason"] == "profile store unavailable"
            assert len(answer["items"]) == 5
        scored = ask("/v1/score", {"user_id": user, "item_ids": ["10", "11"]})
        assert scored["fallback_reason"] == "profile store unavailable"
        assert [s["score"] for s in scored["scores"]] == [None, None]

        redis_server.start()  # same port and data directory: the profile is back
        deadline = time.monotonic() + 30
        while ask("/v1/recommendations", page)["strategy"] != "personalized":
            assert time.monotonic() < deadline, "personalization did not come back"
            time.sleep(0.5)
    finally:
        serve_app.stop()


def test_past_its_queue_bound_the_ingress_sheds_with_503_and_retry_after(
    home: Path, broker: EmbeddedBroker, dataset
) -> None:
    """A burst far over ``max_ongoing + max_queued``: every request gets 200 or a 503 with
    ``Retry-After`` (Serve's backpressure, before our code), none waits in an unbounded
    queue, nothing else."""
    import asyncio

    from serving import app as serve_app

    settings = isolated_settings(
        home, broker.bootstrap, api_max_ongoing_requests=2, api_max_queued_requests=2
    )
    prepare(settings, dataset)
    url = serve_app.start(settings, num_cpus=2)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # a search: the query's encoder pass runs on a thread, so the replica takes in
            # more requests meanwhile (a page kept in the user's state is answered in a
            # fraction of a millisecond, too soon for a burst to fill the queue)
            body = {"user_id": "someone", "k": 10, "context": {"query": "space adventure"}}
            return await asyncio.gather(
                *(client.post("/v1/recommendations", json=body) for _ in range(48))
            )

    try:
        assert httpx.post(f"{url}/v1/recommendations", json={"user_id": "a"}).status_code == 200
        replies = asyncio.run(burst())
    finally:
        serve_app.stop()
    statuses = [r.status_code for r in replies]
    assert set(statuses) == {200, 503}, statuses
    shed = [r for r in replies if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" for r in shed)
