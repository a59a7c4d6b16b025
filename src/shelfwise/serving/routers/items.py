"""``/v1/items``: the catalog (posting items) and similar items."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import (
    DiversityQuery,
    EngineDep,
    ItemPath,
    LangDep,
    ModelRoute,
    N,
    SessionQuery,
    UserQuery,
)
from shelfwise.serving.schemas import ItemBatch, SimilarResponse, Written

router = APIRouter(prefix="/v1", tags=["catalog"], route_class=ModelRoute)


@router.get("/items/{item_id}/similar", response_model=SimilarResponse,
            responses={404: {"description": "unknown item"}}, tags=["recommendations"],
            dependencies=[requires(Scope.READ)])
def similar(item_id: ItemPath, engine: EngineDep, lang: LangDep, n: N = 10,
            user_id: UserQuery = None,
            session_id: SessionQuery = None, diversity: DiversityQuery = None) -> SimilarResponse:
    """Items like this one (new items: popular items of its category); logged as
    impressions for ``user_id`` or the anonymous ``session_id``."""
    return engine.similar(item_id, n, user_id=user_id, session_id=session_id,
                          diversity=diversity, lang=lang)


@router.post("/items", response_model=Written, dependencies=[requires(Scope.ADMIN)])
def post_items(batch: ItemBatch, engine: EngineDep) -> Written:
    """Create or replace items; they are recommendable and searchable at once."""
    return Written(written=engine.add_items(batch.items).written)
