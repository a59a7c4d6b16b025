"""``DELETE /v1/users/{id}``: forget a user (erasure on request), admins only."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, ModelRoute, UserPath
from shelfwise.serving.schemas import ForgetResponse

router = APIRouter(prefix="/v1", tags=["privacy"], dependencies=[requires(Scope.ADMIN)],
                   route_class=ModelRoute)


@router.delete("/users/{user_id}", response_model=ForgetResponse)
def forget_user(user_id: UserPath, engine: EngineDep) -> ForgetResponse:
    """Delete the user's events of every type, their user row and every other stored row
    naming them in one transaction, and drop what this server holds in memory about them;
    other servers on the same store follow within ``[privacy] sync_seconds``. The next feed
    for this id is a cold start. An id never seen removes nothing (200, zero counts)."""
    return engine.forget_user(user_id)
