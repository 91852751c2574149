"""The Ray Serve application: a FastAPI ingress composed with batched scorers.

(No ``from __future__ import annotations`` here: FastAPI must see the real types.)

    client ──HTTP──▶ Api (arm, profile, candidates, rules) ──handle──▶ scorer-<arm> (@serve.batch)
                      ├──▶ impressions topic (what was shown, for CTR/CVR per arm)
                      └──▶ events topic: consent and erasure requests (streams/privacy.py)

On CPU the scorer runs inside the Api replica by default, each request scored as it comes:
the handle call, and ``@serve.batch``'s bookkeeping, cost more than the model
(``scorer_placement``, ``api_scorer_max_batch_size``, README's serving benchmark).
"""

import asyncio
import functools
import logging
import os
import threading
import time
from pathlib import Path as FilePath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from prometheus_client import generate_latest
from pydantic import AfterValidator
from ray import serve
from ray.serve.handle import DeploymentHandle

from infra.processes import keeping_stop_handlers, sigterm_as_interrupt
from serving import metrics
from serving.api import (
    CONSENT_ERRORS,
    ERASE_ERRORS,
    PROFILE_ERRORS,
    READ_ERRORS,
    ConsentRequest,
    ItemPage,
    PrivacyAccepted,
    ProfileView,
    RecommendationRequest,
    RecommendationResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.config import APP_NAME
from serving.credentials import Credential
from serving.lean_routes import LeanRoute, LeanRoutes, register
from serving.limits import BodyLimit
from serving.scorer import (
    Scored,
    Scorer,
    ScoreTask,
    freeze_loaded,
    model_directory,
    model_version,
    use_scorer_threads,
)
from streamrank.catalog import Catalog
from streamrank.settings import Settings
from streams.access import AccessPolicy, Refused, Scope
from streams.events import PrivacyAction

log = logging.getLogger(__name__)


def _exact_id(value: str) -> str:
    """An id is the user's as given: events strip surrounding whitespace (``streams.events.Id``),
    so an id with some would name another user, or none (422 instead)."""
    if value != value.strip():
        raise ValueError("a user id has no leading or trailing whitespace")
    return value


UserId = Annotated[
    str,
    Path(
        min_length=1, max_length=128, pattern=r"^\S(.*\S)?$", description="the site's own user id"
    ),
    AfterValidator(_exact_id),
]

api = FastAPI(
    title="streamrank",
    description="Real-time recommendations from live behaviour profiles",
    version="0.1.0",
)
# (the last added runs first): the body limit bounds what the lean routes read too
api.add_middleware(LeanRoutes)  # the personalization calls' short way (serving/lean_routes.py)
api.add_middleware(BodyLimit)  # 413 before a huge body is read (serving/limits.py)


def _client(http: Request) -> str:
    return http.client.host if http.client else ""


@serve.deployment(name="api")
@serve.ingress(api)
class Api:
    def __init__(self, settings: Settings, scorers: dict[str, DeploymentHandle] | None = None):
        """``scorers``: one handle per arm when the model runs in its own deployment; none
        when it runs here (``scorer_placement``)."""
        from serving.experiments import arm_model_dir
        from serving.model_switch import RegistryFollower
        from serving.recommender import Arm, Recommender
        from serving.scorer import BatchedScorer, ScorerModel, follows_registry
        from streams.impressions import ImpressionLog

        self.impressions = ImpressionLog(
            settings.kafka_client_config(),
            settings.impressions_topic,
            settings.topic_metadata_refresh_s,
        )
        self.settings = settings
        self.access = AccessPolicy.from_settings(settings)
        self._privacy_producer: object = None  # made on first use: the broker may be late
        self._privacy_lock = threading.Lock()
        from serving.platform import PlatformMonitor

        self.monitor = PlatformMonitor.from_settings(settings)
        self._http: object = None

        # (helpers live inside the class: Ray ships the ingress class by value)
        local: dict[str, BatchedScorer] = {}
        if not scorers:  # the models run in this replica
            use_scorer_threads(settings)
        catalog = Catalog.load(settings.home_dir)
        catalog.load_for_requests()

        def arm(name: str, directory: FilePath | None) -> Arm:
            """The arm's scorer, version and search for the model in ``directory``."""
            if scorers:  # the scorer deployment loads (and switches) the model itself
                handle = scorers[name]

                async def score(task: ScoreTask) -> Scored | None:
                    return await handle.score.remote(task)

                async def search(query: str, n: int) -> np.ndarray:
                    return await handle.search.remote(query, n)

                version = model_version(settings, directory)
                return Arm(score, version, search, directory is not None)
            model = ScorerModel(settings, directory, catalog=catalog)
            model.warm_up()
            if name not in local:
                local[name] = BatchedScorer(
                    model, settings.api_scorer_max_batch_size, settings.scorer_batch_wait_s
                )
            batched = local[name]
            batched.model = model  # the old version is freed once its last request ends
            return Arm(
                functools.partial(batched.score, model=model),
                model.version,
                functools.partial(batched.search, model=model),
                model.trained,
            )

        arms = {
            name: arm(name, model_directory(settings, arm_model_dir(settings, name)))
            for name in settings.experiment_arms
        }
        following = [n for n in arms if follows_registry(settings, arm_model_dir(settings, n))]
        self.recommender = Recommender.from_settings(
            settings, catalog, arms, self.impressions.publish
        )
        self.follower = None
        if following:

            def switch(directory: FilePath | None) -> None:
                """The new arms are built (the model loaded) before any is swapped in."""
                fresh = {name: arm(name, directory) for name in following}
                self.recommender.arms.update(fresh)
                freeze_loaded()

            current = model_directory(settings)
            self.follower = RegistryFollower(settings, current, switch).start()
        freeze_loaded()
        if settings.serve_lean_routes:  # off: every call through FastAPI (the bench compares)
            register(
                "/v1/recommendations",
                LeanRoute("recommendations", RecommendationRequest, self._recommend),
            )
            register("/v1/score", LeanRoute("score", ScoreRequest, self._score))

    def __del__(self) -> None:
        """Serve's shutdown hook: impressions still queued reach the topic."""
        if getattr(self, "follower", None) is not None:
            self.follower.close()  # type: ignore[union-attr]
        if hasattr(self, "impressions"):
            self.impressions.close()
        if getattr(self, "_privacy_producer", None) is not None:
            self._privacy_producer.close()  # type: ignore[attr-defined]

    def _allow(self, client: str, credential: str | None, scope: Scope, user_id: str) -> None:
        """Who may call this, on whose data (``streams/access.py``): 401/403/429 unless the
        credential allows ``scope`` on ``user_id``'s data (``client``: the caller's host)."""
        try:
            self.access.authorize(credential, scope, user_id, client=client)
        except Refused as refused:
            metrics.REFUSED.labels(str(refused.status)).inc()
            retry = refused.retry_after_s
            headers = {"Retry-After": str(retry)} if retry is not None else None
            raise HTTPException(refused.status, refused.reason, headers=headers) from None

    @api.post("/v1/recommendations", response_model=RecommendationResponse, responses=READ_ERRORS)
    async def recommendations(
        self, request: RecommendationRequest, http: Request, credential: Credential = None
    ) -> RecommendationResponse:
        """What this user should see now: a read key, or the user's own token."""
        return await self._recommend(request, credential, _client(http))

    async def _recommend(
        self, request: RecommendationRequest, credential: str | None, client: str
    ) -> RecommendationResponse:
        """``recommendations``, also as the lean route answers it (``serving/lean_routes.py``)."""
        self._allow(client, credential, Scope.READ, request.user_id)
        with metrics.LATENCY.labels("recommendations").time():
            response = await self.recommender.recommend(request)
        metrics.REQUESTS.labels("recommendations", response.strategy, response.experiment_arm).inc()
        return response

    @api.post("/v1/score", response_model=ScoreResponse, responses=READ_ERRORS)
    async def score(
        self, request: ScoreRequest, http: Request, credential: Credential = None
    ) -> ScoreResponse:
        """The model's scores of given items for this user: as for recommendations."""
        return await self._score(request, credential, _client(http))

    async def _score(
        self, request: ScoreRequest, credential: str | None, client: str
    ) -> ScoreResponse:
        self._allow(client, credential, Scope.READ, request.user_id)
        with metrics.LATENCY.labels("score").time():
            response = await self.recommender.score(request)
        strategy = "fallback" if response.fallback_reason else "model"
        metrics.REQUESTS.labels("score", strategy, self.recommender.arm_of(request.user_id)).inc()
        return response

    @api.post(
        "/v1/users/{user_id}/consent",
        status_code=202,
        response_model=PrivacyAccepted,
        responses=CONSENT_ERRORS,
    )
    async def consent(
        self,
        user_id: UserId,
        body: ConsentRequest,
        http: Request,
        credential: Credential = None,
    ) -> PrivacyAccepted:
        """Opt out of personalization (the profile is wiped and none is kept) or back in:
        an events key (the site's backend), or the user's own token."""
        self._allow(_client(http), credential, Scope.EVENTS, user_id)
        action = PrivacyAction.OPT_IN if body.personalization else PrivacyAction.OPT_OUT
        return await self._privacy(user_id, action)

    @api.delete(
        "/v1/users/{user_id}",
        status_code=202,
        response_model=PrivacyAccepted,
        responses=ERASE_ERRORS,
    )
    async def erase(
        self, user_id: UserId, http: Request, credential: Credential = None
    ) -> PrivacyAccepted:
        """Erase what is kept about the user: the profile in the online store, the
        worker's state, the experiment join and every replay namespace (admin key only:
        never a user's token, never the open single host)."""
        if not self.access.keys[Scope.ADMIN].configured:
            raise HTTPException(403, "erasure over HTTP is off: no admin key is configured")
        self._allow(_client(http), credential, Scope.ADMIN, user_id)
        return await self._privacy(user_id, PrivacyAction.ERASE)

    async def _privacy(self, user_id: str, action: PrivacyAction) -> PrivacyAccepted:
        """Put the request on the user's partition of ``events`` (pseudonymized by the
        producer) and answer once the broker has it; a broker that cannot take it is a 503."""
        from streams.privacy import privacy_request

        request = privacy_request(user_id, action)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._send_privacy, request), 15)
        except Exception as exc:
            log.warning("%s for a user not recorded: %r", action.value, exc)
            raise HTTPException(503, "the request was not recorded; try again") from exc
        metrics.PRIVACY.labels(action.value).inc()
        return PrivacyAccepted(user_id=user_id, action=action.value, request_id=request.event_id)

    def _send_privacy(self, request: object) -> None:
        from streams.producer import EventProducer
        from streams.pseudonyms import Pseudonymizer

        with self._privacy_lock:
            if self._privacy_producer is None:
                self._privacy_producer = EventProducer(
                    self.settings.kafka_client_config(),
                    self.settings.events_topic,
                    user_ids=Pseudonymizer.from_settings(self.settings),
                    batch_events=1,  # alone and at once, keyed by user like every event
                    partition_refresh_s=self.settings.topic_metadata_refresh_s,
                )
            producer = self._privacy_producer
        producer.send(request)  # type: ignore[attr-defined]
        producer.flush(timeout=10)  # type: ignore[attr-defined]

    # --- the storefront and the platform page (serving/pages.py) ---------------------------
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def storefront(
        self, request: Request, visitor: Annotated[str | None, Query(max_length=8)] = None
    ) -> Response:
        """The demo shop; ``?visitor=new`` starts over as a new anonymous visitor (a
        redirect, so that reloading the page keeps that visitor)."""
        from serving.pages import (
            VISITOR_AUDIENCE,
            VISITOR_COOKIE,
            VISITOR_COOKIE_TTL_S,
            storefront_visitor,
        )

        tokens = self.access.tokens
        fresh = visitor == "new"
        who = storefront_visitor(tokens, request.cookies.get(VISITOR_COOKIE), fresh)
        page: Response = (
            RedirectResponse("/", status_code=303)
            if fresh
            else HTMLResponse(
                self._page("storefront.html", request, {"visitor": who, "token": tokens.issue(who)})
            )
        )
        page.set_cookie(
            VISITOR_COOKIE,
            tokens.issue(who, VISITOR_COOKIE_TTL_S, audience=VISITOR_AUDIENCE),
            max_age=VISITOR_COOKIE_TTL_S,
            httponly=True,
            samesite="lax",
        )
        return page

    @api.get("/platform", response_class=HTMLResponse, include_in_schema=False)
    async def platform(self, request: Request) -> str:
        return self._page("platform.html", request, {})

    @api.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str) -> FileResponse:
        from serving.pages import asset

        found = asset(name)
        if found is None:
            raise HTTPException(404, "no such file")
        return FileResponse(found[0], media_type=found[1])

    def _page(self, name: str, request: Request, extra: dict[str, object]) -> str:
        """The page with its settings: the collector is on the worker's web server (a site's
        beacons go to a collector of their own). No key ever goes on a page."""
        from serving.pages import render

        s = self.settings
        host = request.url.hostname or "127.0.0.1"
        collector = s.collector_public_url or f"http://{host}:{s.worker_web_port}/v1/events"
        return render(name, {"collectorUrl": collector, "experiment": s.experiment_name, **extra})

    @api.get("/v1/items", response_model=ItemPage)
    async def items(
        self,
        q: Annotated[str | None, Query(max_length=256, description="words to match")] = None,
        category: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 24,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> ItemPage:
        """The catalog's available items, most popular first (the storefront's grid)."""
        from serving.storefront import list_items

        popular = await self.recommender.popular()
        return list_items(self.recommender.catalog, popular.ranked, q, category, limit, offset)

    @api.get("/v1/users/{user_id}/profile", response_model=ProfileView, responses=PROFILE_ERRORS)
    async def profile(
        self, user_id: UserId, http: Request, credential: Credential = None
    ) -> ProfileView:
        """What is kept about the user, as they may see it (the site shows it to them): a
        read key, or the user's own token."""
        from serving.storefront import profile_view

        self._allow(_client(http), credential, Scope.READ, user_id)
        user = self.recommender.pseudonyms(user_id)
        try:
            kept = await self.recommender.profile_of(user)
        except Exception as exc:
            raise HTTPException(503, "the profile store is unreachable") from exc
        return profile_view(user_id, kept, self.recommender.catalog, self.recommender.arm_of(user))

    @api.get("/v1/platform/summary")
    async def platform_summary(self) -> dict[str, object]:
        """Stream and serving health now, and the latest backtest (the platform page)."""
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient()
        return await self.monitor.summary(self._http)  # type: ignore[arg-type]

    @api.get("/v1/platform/backtest.png", include_in_schema=False)
    async def backtest_plot(self) -> FileResponse:
        from serving.platform import latest_backtest

        latest = latest_backtest(self.settings.home_dir)
        if latest is None or not os.path.exists(latest["plot"]):
            raise HTTPException(404, "no backtest report yet (streamrank backtest)")
        return FileResponse(latest["plot"], media_type="image/png")

    @api.get("/healthz")
    async def healthz(self) -> dict[str, object]:
        return {
            "status": "ok",
            "experiment": self.recommender.experiment,
            "arms": {n: a.model_version for n, a in self.recommender.arms.items()},
            "items": len(self.recommender.catalog),
        }

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> str:
        return generate_latest().decode()


def build_app(settings: Settings) -> serve.Application:
    """The deployment graph: the ingress, bound to one scorer deployment per experiment arm
    unless the model runs inside the ingress; options from ``serving/config.py``."""
    from serving.config import deployment_options, scorer_name
    from serving.experiments import arm_model_dir

    options = deployment_options(settings)
    if settings.scorer_in_ingress:
        return Api.options(**options["api"]).bind(settings)
    scorers = {
        arm: Scorer.options(name=scorer_name(arm), **options[scorer_name(arm)]).bind(
            settings, arm_model_dir(settings, arm)
        )
        for arm in settings.experiment_arms
    }
    return Api.options(**options["api"]).bind(settings, scorers)


def app_builder(args: dict[str, str]) -> serve.Application:
    """For ``serve run infra/serve.yaml``: settings from ``STREAMRANK_*`` variables, with
    ``args`` (``serve run ... key=value``) as overrides."""
    from streamrank.settings import get_settings

    return build_app(get_settings(**args))


def start(
    settings: Settings, num_cpus: int | None = None, app: serve.Application | None = None
) -> str:
    """Start Serve with the application (``build_app`` unless another is given, e.g. the
    benchmark's no-op) on the Ray cluster at ``settings.ray_address``, or on a Ray started
    here; returns the base URL. Pair with ``stop()``."""
    import ray

    from serving.config import ray_env

    env = ray_env(settings)
    if not ray.is_initialized():
        with keeping_stop_handlers():  # the caller's SIGTERM handler, not Ray's
            # "local": a new Ray here even when a `ray start` cluster runs on this machine
            where: dict[str, object] = (
                {"address": settings.ray_address}
                if settings.ray_address
                else {
                    "address": "local",
                    "num_cpus": num_cpus or os.cpu_count() or 2,
                    "include_dashboard": False,
                }
            )
            ray.init(
                **where,
                runtime_env={"env_vars": env},
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    serve.start(
        proxy_location=settings.serve_proxy_location,
        http_options={"host": settings.serve_host, "port": settings.serve_port},
    )
    serve.run(app or build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    log.info("Ray Serve application ready at %s", url)
    return url


def stop() -> None:
    import ray

    if not ray.is_initialized():
        return
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def run_forever(settings: Settings) -> None:
    """``streamrank serve``: run until SIGINT or SIGTERM, then shut Ray down, whatever
    signal disposition this process inherited (``infra/processes.py``)."""
    with sigterm_as_interrupt():
        try:
            url = start(settings)
            print(f"serving on {url} (docs at {url}/docs); Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)  # until a stop signal raises KeyboardInterrupt
        finally:
            stop()
