"""``/v1/promotions``: the promotions a bandit chooses among."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, ModelRoute
from shelfwise.serving.schemas import PromotionBatch, Written

router = APIRouter(prefix="/v1", tags=["promotions"], dependencies=[requires(Scope.ADMIN)],
                   route_class=ModelRoute)


@router.post("/promotions", response_model=Written)
def post_promotions(batch: PromotionBatch, engine: EngineDep) -> Written:
    """Create or replace promotions (text, eligibility rules, start/end)."""
    return Written(written=engine.add_promotions(batch.promotions).written)
