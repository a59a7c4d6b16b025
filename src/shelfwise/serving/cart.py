"""``POST /v1/cart/recommend``: the next items to add to a cart, with the reason for each."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.services.cart import CartService
from shelfwise.services.recommender import Recommender


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CartRequest(_Body):
    items: list[str] = Field(
        max_length=500,
        description="item ids in the cart, in the order they were added (oldest first); an "
        "empty cart gets popular items")
    user_id: str | None = Field(default=None, min_length=1, max_length=256,
                                description="the shopper, for their history as an extra "
                                "signal; anonymous when absent")
    n: int = Field(default=10, ge=1, le=100, description="how many items")


class CartItem(_Body):
    item_id: str
    score: float
    source: str = Field(description="the signal behind this item: cooccurrence, sequential, "
                        "user_cooccurrence, user_repeat or popularity")
    reason: str = Field(description="why, for people: 'often bought with <cart item>'")
    because_of: str | None = Field(description="the cart item the reason names")
    title: str | None = None


class CartResponse(_Body):
    request_id: str = Field(description="cite it in follow-up cart/purchase events")
    model_version: str
    user_id: str | None
    cold_start: bool = Field(description="no cart item is known to the models: popular items")
    personalized: bool = Field(description="the user's history contributed")
    sources: list[str] = Field(description="signals that contributed to this answer")
    cart: list[str] = Field(description="cart items the models know (they shaped the answer)")
    unscored_items: list[str] = Field(
        description="cart items in the catalog but newer than the model bundle: they are "
        "excluded from the answer but give no signal until the next training")
    items: list[CartItem]


def _first_repeat(ids: list[str]) -> str | None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return None


def get_cart_service(request: Request) -> CartService:
    """One service per loaded recommender (rebuilt when the bundle is swapped)."""
    rec: Recommender = request.app.state.recommender
    service: CartService | None = getattr(request.app.state, "cart_service", None)
    if service is None or service.recommender is not rec:
        service = CartService(rec)
        request.app.state.cart_service = service
    return service


CartDep = Annotated[CartService, Depends(get_cart_service)]


def cart_router() -> APIRouter:
    router = APIRouter(tags=["recommendations"])

    @router.post("/cart/recommend", response_model=CartResponse,
                 responses={404: {"description": "a cart item id is unknown"},
                            422: {"description": "bad body (e.g. an item listed twice)"}})
    def recommend(body: CartRequest, service: CartDep) -> CartResponse:
        """Items to add next, from co-occurrence with the cart items (and the sequential
        model when the bundle has one), never the cart's own or unavailable items."""
        dup = _first_repeat(body.items)
        if dup is not None:
            raise HTTPException(422, f"items: {dup!r} appears twice; send each cart item "
                                "once, in the order it was first added")
        result = service.recommend(body.items, body.user_id, body.n)
        catalog = service.recommender.store.get_items([r.item_id for r in result.items])
        return CartResponse(
            request_id=uuid.uuid4().hex, model_version=service.recommender.bundle.version,
            user_id=body.user_id, cold_start=result.cold_start,
            personalized=result.personalized, sources=result.sources, cart=result.cart,
            unscored_items=result.unscored,
            items=[CartItem(item_id=r.item_id, score=r.score, source=r.source,
                            reason=r.reason, because_of=r.because_of,
                            title=(catalog[r.item_id].title or None)
                            if r.item_id in catalog else None)
                   for r in result.items],
        )

    return router
