"""``/v1/search`` and ``/v1/rerank``: personalized search over the catalog or a given list."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from shelfwise.apikeys import Scope
from shelfwise.services.search import SearchFilters
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, LangDep, ModelRoute
from shelfwise.serving.schemas import RerankRequest, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[requires(Scope.READ)],
                   route_class=ModelRoute)


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, engine: EngineDep, lang: LangDep) -> SearchResponse:
    """Search the whole catalog: BM25 words + typo-tolerant n-grams + dense vectors, fused,
    then ranked (personalized when ``user_id`` has a history)."""
    filters = SearchFilters(**body.filters.model_dump()) if body.filters else None
    return engine.search(body.query, body.user_id, body.n, filters,
                         session_id=body.session_id, diversity=body.diversity, lang=lang)


@router.post("/rerank", response_model=SearchResponse,
             responses={404: {"description": "an item id is unknown"}})
def rerank(body: RerankRequest, engine: EngineDep, lang: LangDep) -> SearchResponse:
    """Re-order the shop's own result list for this query (and user)."""
    if len(set(body.items)) != len(body.items):
        raise HTTPException(422, "items: the same id appears twice; send each once")
    return engine.rerank(body.query, body.items, body.user_id, session_id=body.session_id,
                         lang=lang)
