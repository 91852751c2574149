"""The API's body bound, on a real ASGI app (FastAPI, served in-process by httpx)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serving.limits import BodyLimit


def app() -> FastAPI:
    echo = FastAPI()
    echo.add_middleware(BodyLimit, max_bytes=100)

    @echo.post("/echo")
    async def handler(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    return echo


def test_small_bodies_pass_and_large_ones_are_413_declared_or_not() -> None:
    client = TestClient(app())
    assert client.post("/echo", content=b"x" * 100).json() == {"read": 100}
    declared = client.post("/echo", content=b"x" * 101)
    assert declared.status_code == 413
    assert "over 100 bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"y" * 50

    streamed = client.post("/echo", content=chunks())
    assert streamed.status_code == 413
    assert client.get("/openapi.json").status_code == 200  # other requests untouched
