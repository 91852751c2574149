"""Request and response models of the HTTP API (the OpenAPI schema at ``/docs``).

Every bound is explicit so that a bad request is a 422 with the reason, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
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
    strategy: Literal["personalized", "cold_start", "fallback"]
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
