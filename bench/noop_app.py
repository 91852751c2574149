"""The framework's own ceiling: a Serve ingress that parses the same request and does nothing.

The serving benchmark runs it beside the real application at the same concurrency, so the
report says how much of the latency is Ray Serve + FastAPI and how much is streamrank.
(No ``from __future__ import annotations``: FastAPI must see the real types.)
"""

from fastapi import FastAPI
from ray import serve

from serving.api import RecommendationRequest

noop_api = FastAPI()


@serve.deployment(name="api", logging_config={"enable_access_log": False})
@serve.ingress(noop_api)
class NoOpApi:
    @noop_api.post("/v1/recommendations")
    async def recommendations(self, request: RecommendationRequest) -> dict[str, object]:
        return {"user_id": request.user_id, "items": []}


def noop_app(num_cpus: float) -> serve.Application:
    return NoOpApi.options(ray_actor_options={"num_cpus": num_cpus}).bind()
