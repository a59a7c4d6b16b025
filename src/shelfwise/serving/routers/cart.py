"""``POST /v1/cart/recommend``: the next items to add to a cart, with the reason for each."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, LangDep, ModelRoute
from shelfwise.serving.schemas import CartRequest, CartResponse

router = APIRouter(prefix="/v1", tags=["recommendations"], dependencies=[requires(Scope.READ)],
                   route_class=ModelRoute)


def _first_repeat(ids: list[str]) -> str | None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return None


@router.post("/cart/recommend", response_model=CartResponse,
             responses={404: {"description": "a cart item id is unknown"},
                        422: {"description": "bad body (e.g. an item listed twice)"}})
def recommend(body: CartRequest, engine: EngineDep, lang: LangDep) -> CartResponse:
    """Items to add next, from co-occurrence with the cart items (and the sequential
    model when the bundle has one), never the cart's own or unavailable items."""
    dup = _first_repeat(body.items)
    if dup is not None:
        raise HTTPException(422, f"items: {dup!r} appears twice; send each cart item "
                            "once, in the order it was first added")
    return engine.cart(body.items, body.user_id, body.n, session_id=body.session_id,
                       lang=lang)
