"""The ingress's FastAPI routes, as declared (no Serve running)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant

from serving.app import Api


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def test_every_endpoint_and_dependency_runs_on_the_event_loop() -> None:
    """FastAPI runs a plain (non-async) endpoint or dependency on a worker thread: a thread
    hop per request, which under Serve's ingress started a new thread each time (py-spy of
    a replica: ~0.3 ms a request)."""
    cls = Api.func_or_class
    # the methods Serve's ingress made routes of (it marks them with their class)
    endpoints = {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if getattr(member, "_serve_cls", None) is not None
    }
    assert {"recommendations", "score", "profile", "erase"} <= set(endpoints)
    for name, endpoint in endpoints.items():
        root = get_dependant(path="/v1/users/{user_id}", call=endpoint)
        for dependant in [root, *dependencies(root)]:
            call = dependant.call
            assert call is not None
            target = call if inspect.isroutine(call) else call.__call__  # type: ignore[operator]
            assert inspect.iscoroutinefunction(target), f"{name}: {call} is not async"
