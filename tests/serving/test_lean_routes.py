"""The lean route answers as the FastAPI route does (serving/lean_routes.py), on a real ASGI
app arranged as the ingress is: the body limit, then the lean routes, then FastAPI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from serving.api import (
    ProfileSummary,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)
from serving.credentials import Credential
from serving.lean_routes import LeanRoute, LeanRoutes, register, unregister
from serving.limits import BodyLimit

PATH = "/v1/recommendations"
calls: list[tuple[str, str | None, str]] = []


async def answer(
    request: RecommendationRequest, credential: str | None, client: str
) -> RecommendationResponse:
    """Refuses as access control does; otherwise a response with the floats and tuples whose
    JSON the two ways write differently (Python's ``json`` against pydantic's)."""
    calls.append((request.user_id, credential, client))
    if credential is None:
        raise HTTPException(401, "no credential where one is required")
    if credential == "busy":
        raise HTTPException(429, "over the rate", headers={"Retry-After": "2"})
    scores = [1e-7, 1e16, 0.1 + 0.2, -0.0, 123456789.125]
    items = [
        RecommendedItem(
            item_id=f"{request.user_id}-{i}",
            title='Amélie (2001) \u2603 "quoted"',
            categories=["Comedy", "Romance"],
            score=score,
            reason="because you watched <b>this</b>",
            propensity=0.95 if i else 0.05 / 3,
        )
        for i, score in enumerate(scores[: request.k])
    ]
    return RecommendationResponse(
        request_id="r" * 32,
        user_id=request.user_id,
        items=items,
        model_version=credential,
        experiment_arm=client,
        strategy="personalized",
        profile=ProfileSummary(events=3, top_categories=[("Drama", 1 / 3)], recent_items=["1"]),
    )


def app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(LeanRoutes)
    api.add_middleware(BodyLimit, max_bytes=10_000)

    @api.post(PATH, response_model=RecommendationResponse)
    async def recommendations(
        request: RecommendationRequest, http: Request, credential: Credential = None
    ) -> RecommendationResponse:
        return await answer(request, credential, http.client.host if http.client else "")

    return api


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app()) as test_client:
        yield test_client
    unregister(PATH)


def answered() -> float:
    labels = {"route": "recommendations", "outcome": "answered"}
    return REGISTRY.get_sample_value("streamrank_serve_lean_requests_total", labels) or 0.0


JSON = {"content-type": "application/json"}
CASES: dict[str, dict] = {
    "a read key": {"json": {"user_id": "u1", "k": 5}, "headers": {"X-API-Key": "key"}},
    "a bearer token": {"json": {"user_id": "u1"}, "headers": {"Authorization": "Bearer tok"}},
    "bearer in lower case": {"json": {"user_id": "u1"}, "headers": {"authorization": "bearer t"}},
    "both: the token wins": {
        "json": {"user_id": "u1"},
        "headers": {"Authorization": "Bearer tok", "X-API-Key": "key"},
    },
    "basic auth is no credential": {
        "json": {"user_id": "u1"},
        "headers": {"Authorization": "Basic dTpw", "X-API-Key": "key"},
    },
    "an empty bearer": {"json": {"user_id": "u1"}, "headers": {"Authorization": "Bearer "}},
    "no credential": {"json": {"user_id": "u1"}},
    "rate-limited": {"json": {"user_id": "u1"}, "headers": {"X-API-Key": "busy"}},
    "charset parameter": {
        "content": b'{"user_id": "u\\u00e9", "k": 2}',
        "headers": {"content-type": "Application/JSON; charset=utf-8", "X-API-Key": "k"},
    },
    "a repeated key: the last one counts": {
        "content": b'{"user_id": "u1", "user_id": "u2"}',
        "headers": {**JSON, "X-API-Key": "key"},
    },
    "k out of range": {"json": {"user_id": "u1", "k": 0}, "headers": {"X-API-Key": "key"}},
    "an unknown field": {"json": {"user_id": "u1", "x": 1}, "headers": {"X-API-Key": "key"}},
    "invalid and no credential": {"json": {"k": 3}},
    "not JSON": {"content": b"{nope", "headers": {**JSON, "X-API-Key": "key"}},
    "a JSON list": {"content": b"[1, 2]", "headers": {**JSON, "X-API-Key": "key"}},
    "empty body": {"content": b"", "headers": {**JSON, "X-API-Key": "key"}},
    "no content type": {"content": b'{"user_id": "u1"}', "headers": {"X-API-Key": "key"}},
    "a text body": {
        "content": b'{"user_id": "u1"}',
        "headers": {"content-type": "text/plain", "X-API-Key": "key"},
    },
    "a +json type": {
        "content": b'{"user_id": "u1"}',
        "headers": {"content-type": "application/vnd.x+json", "X-API-Key": "key"},
    },
    "a byte-order mark": {
        "content": b'\xef\xbb\xbf{"user_id": "u1"}',
        "headers": {**JSON, "X-API-Key": "key"},
    },
}


def reply(client: TestClient, case: dict) -> tuple[int, object, str | None, str | None]:
    response: httpx.Response = client.post(PATH, **case)
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    ctype = response.headers.get("content-type")
    return response.status_code, body, ctype, response.headers.get("retry-after")


def test_every_request_gets_the_answer_the_fastapi_route_gives(client: TestClient) -> None:
    through_fastapi = {name: reply(client, case) for name, case in CASES.items()}
    fastapi_calls = list(calls)
    calls.clear()
    register(PATH, LeanRoute("recommendations", RecommendationRequest, answer))
    before = answered()
    lean = {name: reply(client, case) for name, case in CASES.items()}
    for name in CASES:
        assert lean[name] == through_fastapi[name], name
    assert calls == fastapi_calls  # the same handler calls, credentials and clients
    statuses = {name: status for name, (status, *_) in lean.items()}
    assert statuses["a read key"] == statuses["a bearer token"] == 200
    assert statuses["no credential"] == statuses["an empty bearer"] == 401
    assert lean["basic auth is no credential"][1]["model_version"] == "key"  # type: ignore[index]
    assert lean["both: the token wins"][1]["model_version"] == "tok"  # type: ignore[index]
    assert statuses["rate-limited"] == 429 and lean["rate-limited"][3] == "2"
    assert statuses["not JSON"] == statuses["k out of range"] == 422
    assert lean["a repeated key: the last one counts"][1]["user_id"] == "u2"  # type: ignore[index]
    assert answered() - before == 7  # the valid, credentialed JSON calls


def test_the_body_limit_still_bounds_what_the_lean_route_reads(client: TestClient) -> None:
    register(PATH, LeanRoute("recommendations", RecommendationRequest, answer))
    body = b'{"user_id": "u1", "exclude_ids": ["' + b"x" * 20_000 + b'"]}'
    assert client.post(PATH, content=body, headers=JSON).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: bounded as it arrives
        yield b'{"user_id": "u1", "exclude_ids": ['
        for _ in range(2_000):
            yield b'"abcdefghij",'
        yield b'"z"]}'

    assert client.post(PATH, content=chunks(), headers=JSON).status_code == 413

    def small() -> Iterator[bytes]:  # a body in several messages is read whole
        yield b'{"user_id": '
        yield b'"u2", "k": 1}'

    streamed = client.post(PATH, content=small(), headers={**JSON, "X-API-Key": "key"})
    assert streamed.status_code == 200 and streamed.json()["items"][0]["item_id"] == "u2-0"
