"""``/health``: liveness, the serving bundle and (to admins) the store's counts."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import PublicCaller
from shelfwise.serving.deps import EngineDep
from shelfwise.serving.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
def health(engine: EngineDep, caller: PublicCaller) -> Health:
    """Open to all (load balancers send no key); the row counts only to an admin key."""
    counts = engine.store.counts() if caller.may(Scope.ADMIN) else None
    return Health(status="ok", model_version=engine.version,
                  store=engine.store.url.split("://")[0], counts=counts, ready=engine.ready)
