"""HTTP request and response bodies (kept apart from domain objects)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.data.schemas import ID_PATTERN, EventType, Item, Promotion, User


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Body):
    """An event as a client sends it. Send your own ``id`` to make retries safe; without one
    the server assigns a fresh id (and a retry would be stored twice)."""

    id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN)
    type: EventType
    user_id: str = Field(min_length=1, max_length=256, pattern=ID_PATTERN)
    item_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN,
                                description="required by view, click, cart and purchase")
    query: str | None = None
    request_id: str | None = None
    position: int | None = Field(default=None, ge=0)
    propensity: float | None = Field(default=None, gt=0, le=1)
    value: float | None = None
    timestamp: datetime | None = Field(default=None, description="defaults to arrival time")
    context: dict[str, Any] = Field(default_factory=dict)


class EventBatch(_Body):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class EventsAccepted(_Body):
    accepted: int = Field(description="events newly stored")
    duplicates: int = Field(description="events whose id was already stored (ignored)")
    event_ids: list[str]


class ItemBatch(_Body):
    items: list[Item] = Field(min_length=1, max_length=10_000)


class UserBatch(_Body):
    users: list[User] = Field(min_length=1, max_length=10_000)


class Written(_Body):
    written: int


class Explanation(_Body):
    """Why an item is in a list: one shape on every surface."""

    reason: str = Field(description="reason code: similar_to (related_item: a history item, "
                        "or the item viewed), matches_interest (label: a profile tag), "
                        "bought_with (related_item: a cart item), popular_in / trending / "
                        "new_arrival (label: the category; related_item: the history, viewed "
                        "or cart item a new item is like), explore (an exploration slot or "
                        "an exploring bandit), matches_query (label: query words in the title, "
                        "or on a cold feed the user's search), popular_with (label: 'key: "
                        "value', the user attribute whose shoppers favour it)")
    source: str = Field(description="the stage that produced the list: blend, pipeline, "
                        "cold_start, category, new_item, explore:<generator>, cart, "
                        "search:<ranker>")
    parts: dict[str, float] = Field(
        default_factory=dict, description="the contributing parts and their values (weighted "
        "generator scores, retriever scores, signal weights, propensity)")
    related_item: str | None = Field(default=None, description="the item the reason names "
                                     "(the cart item, the item it is similar to)")
    label: str | None = Field(default=None, description="what the reason names besides an "
                              "item: a profile tag, a category, the matched query words")
    text: str = Field(description="the reason for people, in Chinese or English "
                      "(Accept-Language, else the item's language)")


class RecommendedItem(_Body):
    item_id: str
    score: float
    title: str | None = None
    propensity: float | None = Field(default=None, description=(
        "exploration slots only: the probability the bandit chose this slot's source"))
    explanation: Explanation


class RecommendationResponse(_Body):
    request_id: str = Field(description="cite it in follow-up events to join outcomes")
    model_version: str
    cold_start: bool
    experiments: dict[str, str] = Field(default_factory=dict, description=(
        "experiment id -> the variant this request was served by (logged with its "
        "impressions)"))
    items: list[RecommendedItem]


class FeedResponse(RecommendationResponse):
    user_id: str


class SimilarResponse(RecommendationResponse):
    item_id: str


class OnboardingRequest(_Body):
    """A new shopper's picks: items they like and categories they are into (at least one)."""

    items: list[Annotated[str, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]] = \
        Field(default_factory=list, max_length=50, description="picked item ids: stored as "
              "view events (context onboarding: true), so they join the history at once")
    categories: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=20, description="picked categories: a level "
        "('Kitchen') or path prefix ('Home > Kitchen') of catalog items; merged into the "
        "user attribute 'interests'")

    @model_validator(mode="after")
    def _something(self) -> OnboardingRequest:
        if not self.items and not self.categories:
            raise ValueError("give at least one of items or categories")
        return self


class OnboardingResponse(_Body):
    user_id: str
    items: list[str] = Field(description="the picked items (stored as view events)")
    interests: list[str] = Field(description="the user's picked categories now")
    accepted: int = Field(description="pick events newly stored")
    duplicates: int = Field(description="pick events already stored (a repeated submission)")


class InterestOut(_Body):
    label: str = Field(description="the most central item's category (or title)")
    weight: float = Field(description="share of the user's recency-weighted history")
    items: list[str]


class ProfileResponse(_Body):
    user_id: str
    history_length: int
    recent_items: list[str] = Field(description="most recent first")
    interests: list[InterestOut] = Field(description="long-term interest clusters")
    tags: list[tuple[str, float]] = Field(description="readable interest tags with weights")
    encoder: str | None = Field(description="text encoder behind the profile vector")
    vector: list[float] | None = Field(default=None, description="with ?vector=true")


class PromotionBatch(_Body):
    promotions: list[Promotion] = Field(min_length=1, max_length=1_000)


class PromotionRequest(_Body):
    n: int = Field(default=1, ge=1, le=20, description="how many promotions (sequential choice)")


class ChosenPromotion(_Body):
    promotion_id: str
    text: str
    position: int
    propensity: float = Field(description="probability the policy gave this choice, in (0, 1]")
    score: float = Field(description="the policy's score (estimated reward or bound)")
    explanation: Explanation


class PromotionsResponse(_Body):
    request_id: str = Field(description="cite it in promotion_redeemed events")
    user_id: str
    policy: str
    promotions: list[ChosenPromotion]


class SearchFiltersIn(_Body):
    category: str | None = Field(default=None, description="category path prefix "
                                 "('Home > Kitchen') or one level ('Kitchen')")
    brand: str | None = None
    min_price: float | None = Field(default=None, ge=0)
    max_price: float | None = Field(default=None, ge=0)


SESSION_ID_MAX = 256 - len("anon:")
"""A session's impressions are stored under the user id 'anon:<session_id>', itself ≤ 256."""
SessionId = Field(default=None, min_length=1, max_length=SESSION_ID_MAX, pattern=ID_PATTERN,
                  description="an anonymous visitor's session: its impressions are logged "
                  "under it (as user 'anon:<session_id>')")


class SearchRequest(_Body):
    query: str = Field(min_length=1, max_length=1000)
    user_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN,
                                description="personalize for this user; anonymous when absent")
    session_id: str | None = SessionId
    n: int = Field(default=10, ge=1, le=500)
    filters: SearchFiltersIn | None = None
    diversity: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "diversity knob: 0 = the ranker's order, 1 = most varied; default "
        "serve.diversity.default"))


class RerankRequest(_Body):
    query: str = Field(min_length=1, max_length=1000)
    user_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN)
    session_id: str | None = SessionId
    items: list[str] = Field(min_length=1, max_length=1000,
                             description="the shop's own result list, item ids")


class SearchItem(_Body):
    item_id: str
    score: float = Field(description="the ranker's score (higher first)")
    title: str | None = None
    explanation: Explanation = Field(description="parts: retriever scores behind it (bm25, "
                                     "ngram, dense) and profile_sim")


class SearchResponse(_Body):
    request_id: str = Field(description="cite it in click/cart/purchase events")
    model_version: str
    query: str
    user_id: str | None
    personalized: bool
    ranker: str = Field(description="lambdamart when a trained ranker is loaded, else rrf")
    experiments: dict[str, str] = Field(default_factory=dict, description=(
        "experiment id -> the variant this request was served by (logged with its "
        "impressions)"))
    items: list[SearchItem]


class Health(_Body):
    status: str = Field(description="ok when the server answers; see ready for warm-up")
    model_version: str
    store: str
    counts: dict[str, int] | None = Field(
        default=None, description="rows per kind; shown to admin keys (and in local mode)")
    ready: dict[str, bool] = Field(
        default_factory=dict, description="parts warmed at start: search_index is true once "
        "searches no longer pay for building the index")


class ErrorBody(_Body):
    detail: str


class CartRequest(_Body):
    items: list[str] = Field(
        max_length=500,
        description="item ids in the cart, in the order they were added (oldest first); an "
        "empty cart gets popular items")
    user_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN,
                                description="the shopper, for their history as an extra "
                                "signal; anonymous when absent")
    session_id: str | None = SessionId
    n: int = Field(default=10, ge=1, le=100, description="how many items")


class CartItem(_Body):
    item_id: str
    score: float
    title: str | None = None
    explanation: Explanation = Field(description="reason: the signal (cooccurrence, "
                                     "sequential, user_cooccurrence, user_repeat, popularity); "
                                     "related_item: the cart item it goes with")


class CartResponse(_Body):
    request_id: str = Field(description="cite it in follow-up cart/purchase events")
    model_version: str
    user_id: str | None
    cold_start: bool = Field(description="no cart item is known to the models: popular items")
    personalized: bool = Field(description="the user's history contributed")
    sources: list[str] = Field(description="signals that contributed to this answer")
    cart: list[str] = Field(description="cart items that shaped the answer: ones the models "
                            "know, and newer ones through their look-alikes (similar text)")
    unscored_items: list[str] = Field(
        description="cart items in the catalog but newer than the model bundle and without "
        "look-alikes (no text, or no text model): excluded from the answer, no signal")
    experiments: dict[str, str] = Field(default_factory=dict, description=(
        "experiment id -> the variant this request was served by (logged with its "
        "impressions)"))
    items: list[CartItem]


class ForgetResponse(_Body):
    user_id: str
    rows: dict[str, int] = Field(description="store rows deleted per table (events, users, …), "
                                 "in one transaction")
    events: dict[str, int] = Field(description="the deleted events per type")
    memory: dict[str, int] = Field(
        description="entries this server dropped from memory (cached histories, queued "
        "impressions, bandit decisions); other servers on the store drop theirs within "
        "[privacy] sync_seconds")
