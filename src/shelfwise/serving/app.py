"""FastAPI app factory: thin routes over the recommender service and the store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from shelfwise import __version__
from shelfwise.bundle.bundle import load_bundle
from shelfwise.data.schemas import Event
from shelfwise.exceptions import NotFoundError, ShelfwiseError
from shelfwise.services.exploration import ExplorationConfig, FeedExplorer
from shelfwise.services.profiles import build_profile
from shelfwise.services.promotions import PromotionService
from shelfwise.services.recommender import RecommendationList, Recommender
from shelfwise.services.search import SearchFilters, SearchResult, SearchService
from shelfwise.serving.cart import cart_router
from shelfwise.serving.schemas import (
    ChosenPromotion,
    EventBatch,
    EventsAccepted,
    FeedResponse,
    Health,
    InterestOut,
    ItemBatch,
    ProfileResponse,
    PromotionBatch,
    PromotionRequest,
    PromotionsResponse,
    RecommendationResponse,
    RecommendedItem,
    RerankRequest,
    SearchItem,
    SearchRequest,
    SearchResponse,
    SimilarResponse,
    UserBatch,
    Written,
)
from shelfwise.storage import open_store
from shelfwise.storage.base import Store


def create_app(store_url: str, bundle_path: Path,
               exploration: ExplorationConfig | None = None) -> FastAPI:
    """Build the HTTP app for the store at ``store_url`` and the bundle at ``bundle_path``;
    ``exploration`` sets the feed's default exploration slots and their bandit."""
    store = open_store(store_url)
    recommender = Recommender(load_bundle(bundle_path), store)
    app = FastAPI(
        title="shelfwise",
        version=__version__,
        description="Recommendations and personalized search for online shops.",
    )
    app.state.store = store
    app.state.recommender = recommender
    app.state.promotions = PromotionService(store, recommender)
    app.state.explorer = FeedExplorer(store, recommender, exploration)
    app.state.search = SearchService(recommender)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ShelfwiseError)
    async def _bad(_: Request, exc: ShelfwiseError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    app.include_router(_system_router())
    app.include_router(_recommend_router(), prefix="/v1")
    app.include_router(_feedback_router(), prefix="/v1")
    app.include_router(_promotions_router(), prefix="/v1")
    app.include_router(_search_router(), prefix="/v1")
    app.include_router(cart_router(), prefix="/v1")
    return app


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_recommender(request: Request) -> Recommender:
    rec: Recommender = request.app.state.recommender
    return rec


def get_promotions(request: Request) -> PromotionService:
    service: PromotionService = request.app.state.promotions
    return service


def get_explorer(request: Request) -> FeedExplorer:
    explorer: FeedExplorer = request.app.state.explorer
    return explorer


def get_search(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


StoreDep = Annotated[Store, Depends(get_store)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
PromotionsDep = Annotated[PromotionService, Depends(get_promotions)]
SearchDep = Annotated[SearchService, Depends(get_search)]
ExplorerDep = Annotated[FeedExplorer, Depends(get_explorer)]
N = Annotated[int, Query(ge=1, le=500, description="how many items")]


def _items(rec: Recommender, result: RecommendationList) -> list[RecommendedItem]:
    catalog = rec.store.get_items([r.item_id for r in result.items])
    return [
        RecommendedItem(
            item_id=r.item_id,
            score=r.score,
            source=r.source,
            propensity=r.propensity,
            title=(catalog[r.item_id].title or None) if r.item_id in catalog else None,
        )
        for r in result.items
    ]


def _system_router() -> APIRouter:
    router = APIRouter(tags=["system"])

    @router.get("/health", response_model=Health)
    def health(store: StoreDep, rec: RecommenderDep) -> Health:
        return Health(
            status="ok", model_version=rec.bundle.version, store=store.url.split("://")[0],
            counts=store.counts(),
        )

    return router


def _recommend_router() -> APIRouter:
    router = APIRouter(tags=["recommendations"])

    @router.get("/users/{user_id}/feed", response_model=FeedResponse)
    def feed(
        user_id: str,
        rec: RecommenderDep,
        explorer: ExplorerDep,
        n: N = 10,
        exclude_seen: bool = Query(True, description="leave out items the user interacted with"),
        explore: int | None = Query(None, ge=0, le=20, description=(
            "feed slots given to the exploration bandit (logged with propensities); "
            "default: the server's setting")),
    ) -> FeedResponse:
        request_id, result = explorer.feed(user_id, n, slots=explore,
                                           exclude_seen=exclude_seen)
        return FeedResponse(
            request_id=request_id, model_version=rec.bundle.version, user_id=user_id,
            cold_start=result.cold_start, items=_items(rec, result),
        )

    @router.get("/users/{user_id}/profile", response_model=ProfileResponse)
    def profile(
        user_id: str,
        rec: RecommenderDep,
        vector: bool = Query(False, description="include the profile vector"),
    ) -> ProfileResponse:
        """What the recommender knows of a user now: recent items, interests, tags."""
        p = build_profile(rec, user_id, include_vector=vector)
        return ProfileResponse(
            user_id=p.user_id, history_length=p.history_length, recent_items=p.recent_items,
            interests=[InterestOut(label=i.label, weight=i.weight, items=i.items)
                       for i in p.interests],
            tags=p.tags, encoder=p.encoder, vector=p.vector,
        )

    @router.get("/items/{item_id}/similar", response_model=SimilarResponse,
                responses={404: {"description": "unknown item"}})
    def similar(item_id: str, rec: RecommenderDep, n: N = 10) -> RecommendationResponse:
        result = rec.similar(item_id, n)
        return SimilarResponse(
            request_id=uuid.uuid4().hex, model_version=rec.bundle.version, item_id=item_id,
            cold_start=result.cold_start, items=_items(rec, result),
        )

    return router


def _feedback_router() -> APIRouter:
    router = APIRouter(tags=["feedback"])

    @router.post("/events", response_model=EventsAccepted)
    def post_events(batch: EventBatch, store: StoreDep, rec: RecommenderDep,
                    promotions: PromotionsDep, explorer: ExplorerDep) -> EventsAccepted:
        """Store a batch durably (all or nothing), then refresh the users' state."""
        now = datetime.now(UTC)
        events = []
        for row, e in enumerate(batch.events):
            data = e.model_dump()
            data["id"] = e.id or uuid.uuid4().hex
            data["timestamp"] = e.timestamp or now
            try:
                events.append(Event(**data))
            except ValueError as exc:
                raise HTTPException(422, f"events[{row}]: {exc}") from exc
        result = store.add_events(events)
        rec.observe(events)
        promotions.notify(events)
        explorer.notify(events)
        return EventsAccepted(accepted=result.written, duplicates=result.skipped,
                              event_ids=[e.id for e in events])

    @router.post("/items", response_model=Written)
    def post_items(batch: ItemBatch, store: StoreDep, rec: RecommenderDep) -> Written:
        ids = [it.id for it in batch.items]
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "items: the same id appears twice in one batch")
        result = store.upsert_items(batch.items)
        rec.catalog_updated(batch.items)
        return Written(written=result.written)

    @router.post("/users", response_model=Written)
    def post_users(batch: UserBatch, store: StoreDep) -> Written:
        return Written(written=store.upsert_users(batch.users).written)

    return router


def _promotions_router() -> APIRouter:
    router = APIRouter(tags=["promotions"])

    @router.post("/promotions", response_model=Written)
    def post_promotions(batch: PromotionBatch, store: StoreDep) -> Written:
        """Create or replace promotions (text, eligibility rules, start/end)."""
        ids = [p.id for p in batch.promotions]
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "promotions: the same id appears twice in one batch")
        return Written(written=store.upsert_promotions(batch.promotions).written)

    @router.post("/users/{user_id}/promotions", response_model=PromotionsResponse)
    def choose_promotions(user_id: str, body: PromotionRequest,
                          service: PromotionsDep) -> PromotionsResponse:
        """The bandit's choice among the user's eligible promotions, logged with its
        propensity as a promotion_shown event before this answer is sent."""
        request_id, chosen = service.choose(user_id, body.n)
        return PromotionsResponse(
            request_id=request_id, user_id=user_id, policy=service.policy_name,
            promotions=[ChosenPromotion(promotion_id=c.promotion.id, text=c.promotion.text,
                                        position=c.position, propensity=c.propensity,
                                        score=c.score) for c in chosen],
        )

    return router


def _search_response(store: Store, rec: Recommender, query: str, user_id: str | None,
                     result: SearchResult, endpoint: str = "search") -> SearchResponse:
    """The answer, after the search is logged (for a known user) under its request id."""
    request_id = uuid.uuid4().hex
    if user_id:
        store.add_events([Event(id=f"search-{request_id}", type="search", user_id=user_id,
                                query=query, request_id=request_id,
                                timestamp=datetime.now(UTC),
                                context={"items": [h.item_id for h in result.hits[:50]],
                                         "endpoint": endpoint})])
    catalog = store.get_items([h.item_id for h in result.hits])
    return SearchResponse(
        request_id=request_id, model_version=rec.bundle.version, query=query, user_id=user_id,
        personalized=result.personalized, ranker=result.ranker,
        items=[SearchItem(item_id=h.item_id, score=h.score, scores=h.scores,
                          title=(catalog[h.item_id].title or None) if h.item_id in catalog
                          else None) for h in result.hits],
    )


def _search_router() -> APIRouter:
    router = APIRouter(tags=["search"])

    @router.post("/search", response_model=SearchResponse)
    def search(body: SearchRequest, service: SearchDep, store: StoreDep,
               rec: RecommenderDep) -> SearchResponse:
        """Search the whole catalog: BM25 words + typo-tolerant n-grams + dense vectors, fused,
        then ranked (personalized when ``user_id`` has a history)."""
        filters = SearchFilters(**body.filters.model_dump()) if body.filters else None
        result = service.search(body.query, body.user_id, body.n, filters)
        return _search_response(store, rec, body.query, body.user_id, result)

    @router.post("/rerank", response_model=SearchResponse,
                 responses={404: {"description": "an item id is unknown"}})
    def rerank(body: RerankRequest, service: SearchDep, store: StoreDep,
               rec: RecommenderDep) -> SearchResponse:
        """Re-order the shop's own result list for this query (and user)."""
        if len(set(body.items)) != len(body.items):
            raise HTTPException(422, "items: the same id appears twice; send each once")
        result = service.rerank(body.query, body.items, body.user_id)
        return _search_response(store, rec, body.query, body.user_id, result, "rerank")

    return router
