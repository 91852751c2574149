"""Prometheus metrics of the serving application.

A module of their own, used as ``metrics.X`` from the deployments: Ray ships a Serve
deployment class to its replica by value, and a module is always re-imported there, so these
register in the replica's own registry, the one ``/metrics`` exposes.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "streamrank_serve_requests_total",
    "API requests, by endpoint, strategy and experiment arm",
    ["endpoint", "strategy", "arm"],
)
LATENCY = Histogram(
    "streamrank_serve_latency_seconds",
    "End-to-end latency inside the ingress",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PRIVACY = Counter(
    "streamrank_serve_privacy_requests_total",
    "Consent and erasure requests accepted by the API",
    ["action"],
)
REFUSED = Counter(
    "streamrank_serve_refused_total",
    "Calls refused by access control (streams/access.py), by status: 401, 403, 429",
    ["status"],
)
MODEL_SWITCHES = Counter(
    "streamrank_serve_model_switches_total",
    "Promotions and rollbacks followed by this replica (serving/model_switch.py), by outcome",
    ["outcome"],
)
MODEL_LOAD_SECONDS = Histogram(
    "streamrank_serve_model_load_seconds",
    "Time to load a promoted model beside the serving one",
    buckets=(0.5, 1, 2, 5, 10, 30, 60),
)
USER_SUMMARIES = Counter(
    "streamrank_serve_user_summaries_total",
    "User-tower history summaries taken from the scorer's cache (hit) or computed (miss)",
    ["outcome"],
)
USER_STATES = Counter(
    "streamrank_serve_user_states_total",
    "Requests whose user's features, stream signals and user vector were kept from an "
    "earlier request on the same profile (hit) or built (miss)",
    ["outcome"],
)
COVISIT_ROWS = Counter(
    "streamrank_serve_covisit_anchors_total",
    "Anchors whose merged co-visitation rows were kept from an earlier request (hit) or "
    "read from the online store (miss)",
    ["outcome"],
)
LEAN = Counter(
    "streamrank_serve_lean_requests_total",
    "Personalization calls taken by the lean route (serving/lean_routes.py), by route and "
    "outcome: answered, refused (401/403/429), or handed on to FastAPI (to answer 422)",
    ["route", "outcome"],
)
