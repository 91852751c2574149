"""How a call names its caller: a bearer token (a server key or a user's token) or a
server key in ``X-API-Key``.

Declared as FastAPI security schemes, so the OpenAPI document (and the fuzzing in the
tests) knows which operations need a credential; what a credential allows is
``streams.access.AccessPolicy``'s to say. ``credential_of`` reads it the same way for
the calls that skip FastAPI's dependencies (``serving/lean_routes.py``).

(No ``from __future__ import annotations`` here: FastAPI must see the real types.)
"""

from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

_bearer = HTTPBearer(auto_error=False, description="a server key or a user token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="a server key")


async def _credential(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str | None:
    """Async, like every dependency here: FastAPI runs a plain function on a worker thread,
    a thread hop (and under Serve a new thread) for every request."""
    return bearer.credentials if bearer is not None else api_key


Credential = Annotated[str | None, Depends(_credential)]


async def credential_of(connection: HTTPConnection) -> str | None:
    """The credential ``Credential`` gives a route, read from the request's headers."""
    return await _credential(await _bearer(connection), await _api_key(connection))
