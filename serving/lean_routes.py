"""The personalization calls' short way through the ingress.

FastAPI answers a call in several passes: it parses the JSON body into Python objects,
validates those against the body model, solves the route's dependencies (the credential
is three), runs the route, dumps the returned model to Python objects, validates those
against the response model and encodes them as JSON. In process that is ~0.1 ms of CPU a
call, as much again as what Ray Serve's own path costs a no-op ingress, and more than the
recommender's own work on a kept page (README, serving). pydantic can parse the body
straight from its JSON and write the response model's JSON in one pass each, in a tenth
of that.

``LeanRoutes`` is an ASGI middleware that answers the routes registered with it that way,
for requests FastAPI would take as they are: a JSON body that validates. Anything else
(another content type, a body that does not parse or validate) goes on to the FastAPI
route itself, which stays the contract: the OpenAPI document, and every 4xx answer in its
usual form. A registered route's handler is the one its FastAPI route calls, with the
same credential and client, so both ways do the same checks, in the same order (the body
is valid before anyone is authorized or rate-limited, as in FastAPI).

Ray Serve freezes a copy of the FastAPI app (its middleware included) when the ingress
class is decorated, so the replica cannot hand its handlers to the middleware instance;
each replica is a process of its own, and registers them here when it starts
(``register``). Until a handler is registered, its path goes to FastAPI.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request

from serving import metrics
from serving.credentials import credential_of

Answer = Callable[[Any, str | None, str], Awaitable[BaseModel]]
"""``(body, credential, client host) -> response``; raises ``HTTPException`` to refuse."""


@dataclass(frozen=True)
class LeanRoute:
    name: str
    """The route's name in metrics."""
    body: type[BaseModel]
    answer: Answer

    @functools.cached_property
    def answered(self) -> Counter:
        """The route's count of answered calls, looked up once (``labels`` is a locked
        look-up at every call)."""
        return metrics.LEAN.labels(self.name, "answered")


_ROUTES: dict[str, LeanRoute] = {}


def register(path: str, route: LeanRoute) -> None:
    """Answer ``POST path`` the short way in this process from now on."""
    _ROUTES[path] = route


def unregister(path: str) -> None:
    _ROUTES.pop(path, None)


def _json(scope: dict[str, Any]) -> bool:
    """Whether the request says its body is JSON (``application/json``, any parameters):
    what FastAPI parses as JSON too. Other types, ``+json`` ones included, go to FastAPI."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class LeanRoutes:
    """ASGI middleware: the registered POST routes, answered straight from pydantic's JSON."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or not _json(scope):
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive)
        try:
            request = route.body.model_validate_json(body)
        except ValidationError:  # FastAPI answers it (422), from the body already read
            metrics.LEAN.labels(route.name, "handed_on").inc()
            await self.app(scope, _replay(messages, receive), send)
            return
        client = scope["client"][0] if scope.get("client") else ""
        try:
            credential = await credential_of(HTTPConnection(scope))  # as the route reads it
            response = await route.answer(request, credential, client)
        except HTTPException as refused:  # as FastAPI's own handler answers it
            metrics.LEAN.labels(route.name, "refused").inc()
            reply = await http_exception_handler(Request(scope), refused)
            await reply(scope, receive, send)
            return
        route.answered.inc()
        content = response.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """The whole body, and the messages it came in (to hand on as they were). Bounded by
    ``serving/limits.py``'s middleware, which wraps this one."""
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client went away: FastAPI sees it too
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A ``receive`` that gives the messages already read, then the client's own."""
    pending = list(messages)

    async def replayed() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replayed
