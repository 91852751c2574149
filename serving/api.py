"""Request and response models of the HTTP API (the OpenAPI schema at ``/docs``).

Every bound is explicit so that a bad request is a 422 with the reason, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Validation is exactly what the published schema says (no stripping: Python strips
# characters, e.g. U+0085, that JSON Schema's whitespace does not include, so a schema-valid
# id was refused; found by the fuzzing test). An id is an opaque string.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MAX_CANDIDATES = 500


class RecommendationContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id | None = Field(default=None, description="the item the user is looking at")
    query: Annotated[str, StringConstraints(max_length=256, strip_whitespace=True)] | None = None
    page: Annotated[str, StringConstraints(max_length=64)] | None = None


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    k: int = Field(default=10, ge=1, le=100)
    context: RecommendationContext | None = None
    candidate_ids: list[Id] | None = Field(
        default=None, max_length=MAX_CANDIDATES, description="rank only these items"
    )
    exclude_ids: list[Id] = Field(default_factory=list, max_length=MAX_CANDIDATES)


class RecommendedItem(BaseModel):
    """Frozen: the responses of one kept page share them (``serving.ranking.Shortlist``)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    categories: list[str]
    score: float
    reason: str
    propensity: float = Field(
        description="probability that the ranking policy showed this item here (exploration)"
    )


class ProfileSummary(BaseModel):
    events: int
    top_categories: list[tuple[str, float]]
    recent_items: list[str]


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str
    items: list[RecommendedItem]
    model_version: str
    experiment_arm: str
    strategy: Literal["personalized", "cold_start", "opted_out", "fallback"] = Field(
        description="opted_out: the user declined personalization (no profile is read or kept)"
    )
    fallback_reason: str | None = None
    profile: ProfileSummary | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_CANDIDATES)


class ItemScore(BaseModel):
    item_id: str
    score: float | None = Field(description="null for an item the catalog does not know")


class ScoreResponse(BaseModel):
    user_id: str
    scores: list[ItemScore]
    model_version: str
    fallback_reason: str | None = Field(
        default=None, description="why scores are missing (store or scorer unavailable)"
    )


class ConsentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personalization: bool = Field(
        description="false: opt out (the profile is wiped, no new one is kept); true: opt in"
    )


class PrivacyAccepted(BaseModel):
    """The request is on the user's partition of the events topic; the profile worker
    applies it in order with the user's events (typically well under a second)."""

    user_id: str
    action: Literal["opt_out", "opt_in", "erase"]
    request_id: str


class ItemCard(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    price: float | None
    available: bool


class ItemPage(BaseModel):
    """A page of the catalog (the storefront's grid), most popular first."""

    items: list[ItemCard]
    total: int
    categories: list[str] = Field(description="every category of the catalog, for filters")


class ProfileView(BaseModel):
    """What the system keeps about a user, as the user may see it (seed 002: transparency)."""

    user_id: str
    opted_out: bool
    experiment_arm: str
    events: int
    totals: dict[str, int] = Field(description="events per type, ever")
    last_24h: dict[str, float] = Field(description="decayed events per type, 24 h window")
    top_categories: list[tuple[str, float]]
    recent: dict[str, list[ItemCard]] = Field(description="viewed, clicked, carted, purchased")
    recent_queries: list[str]
    sessions: int
    session_events: int
    last_event_at: float | None


class ErrorMessage(BaseModel):
    detail: str


# Documented so that clients (and the OpenAPI fuzzing in the tests) know every status a
# POST can answer with: 400 when the body is not JSON at all, 422 when it is but invalid.
BAD_BODY: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorMessage, "description": "the body is not parseable JSON"},
    413: {"model": ErrorMessage, "description": "the body is over 256 KiB (serving/limits.py)"},
}


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorMessage, "description": description}


UNRECORDED = _error("the events topic is unreachable: nothing was recorded, try again")
# Access (streams/access.py): what every operation that touches a user's data can refuse.
ACCESS_ERRORS: dict[int | str, dict[str, object]] = {
    401: _error("no credential where one is required, an unknown key, or a bad token"),
    403: _error("the credential does not allow this, or the token is for another user"),
    429: _error("too many refused calls from this address: retry after Retry-After"),
}
READ_ERRORS: dict[int | str, dict[str, object]] = {**BAD_BODY, **ACCESS_ERRORS}
CONSENT_ERRORS: dict[int | str, dict[str, object]] = {**READ_ERRORS, 503: UNRECORDED}
PROFILE_ERRORS: dict[int | str, dict[str, object]] = {
    **ACCESS_ERRORS,
    503: _error("the profile store is unreachable"),
}
ERASE_ERRORS: dict[int | str, dict[str, object]] = {
    **ACCESS_ERRORS,
    403: _error(
        "no admin key given, or erasure over HTTP is off: no admin key is configured"
        " (STREAMRANK_ADMIN_KEYS)"
    ),
    503: UNRECORDED,
}
