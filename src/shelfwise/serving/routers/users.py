"""``/v1/users/{id}/…``: the feed, the profile and promotions of one user (read scope), and
their onboarding picks (ingest scope)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from shelfwise.apikeys import Scope
from shelfwise.services.onboarding import onboard
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import DiversityQuery, EngineDep, LangDep, ModelRoute, N, UserPath
from shelfwise.serving.schemas import (
    FeedResponse,
    InterestOut,
    OnboardingRequest,
    OnboardingResponse,
    ProfileResponse,
    PromotionRequest,
    PromotionsResponse,
)

# each route declares its scope (reads, and onboarding)
router = APIRouter(prefix="/v1", route_class=ModelRoute)
READ, INGEST = [requires(Scope.READ)], [requires(Scope.INGEST)]


@router.get("/users/{user_id}/feed", response_model=FeedResponse, tags=["recommendations"],
            dependencies=READ)
def feed(
    user_id: UserPath,
    engine: EngineDep,
    lang: LangDep,
    n: N = 10,
    exclude_seen: bool = Query(True, description="leave out items the user interacted with"),
    explore: int | None = Query(None, ge=0, le=20, description=(
        "feed slots given to the exploration bandit (logged with propensities); "
        "default: serve.exploration.slots")),
    diversity: DiversityQuery = None,
) -> FeedResponse:
    """The user's feed; every item carries its explanation, the list is logged as
    impressions under ``request_id``. An id never seen gets the cold-start list."""
    return engine.feed(user_id, n, exclude_seen=exclude_seen, explore=explore,
                       diversity=diversity, lang=lang)


@router.get("/users/{user_id}/profile", response_model=ProfileResponse,
            tags=["recommendations"], dependencies=READ)
def profile(
    user_id: UserPath,
    engine: EngineDep,
    vector: bool = Query(False, description="include the profile vector"),
) -> ProfileResponse:
    """What the recommender knows of a user now: recent items, interests, tags."""
    p = engine.profile(user_id, include_vector=vector)
    return ProfileResponse(
        user_id=p.user_id, history_length=p.history_length, recent_items=p.recent_items,
        interests=[InterestOut(label=i.label, weight=i.weight, items=i.items)
                   for i in p.interests],
        tags=p.tags, encoder=p.encoder, vector=p.vector,
    )


@router.post("/users/{user_id}/promotions", response_model=PromotionsResponse,
             tags=["recommendations", "promotions"], dependencies=READ)
def choose_promotions(user_id: UserPath, body: PromotionRequest,
                      engine: EngineDep, lang: LangDep) -> PromotionsResponse:
    """The bandit's choice among the user's eligible promotions, logged with its
    propensity as a promotion_shown event before this answer is sent."""
    return engine.promotions(user_id, body.n, lang=lang)


@router.post("/users/{user_id}/onboarding", response_model=OnboardingResponse,
             tags=["feedback"], dependencies=INGEST)
def onboarding(user_id: UserPath, body: OnboardingRequest,
               engine: EngineDep) -> OnboardingResponse:
    """A new shopper's picks, so the very next feed follows them: items become ``view``
    events (context ``onboarding: true``; a repeated submission stores nothing new),
    categories are merged into the user attribute ``interests``. Unknown items or categories
    are a 404 naming them, and nothing is stored."""
    return onboard(engine, user_id, body.items, body.categories)

