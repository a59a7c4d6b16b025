"""``/health``: liveness, the serving bundle and (to admins) the store's counts; ``/ready``:
readiness (503 until the search index and the query encoder are loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import PublicCaller
from shelfwise.serving.deps import EngineDep, ModelRoute
from shelfwise.serving.schemas import Health

router = APIRouter(tags=["system"], route_class=ModelRoute)


@router.get("/health", response_model=Health)
def health(engine: EngineDep, caller: PublicCaller) -> Health:
    """Open to all (load balancers send no key); the row counts only to an admin key."""
    counts = engine.store.counts() if caller.may(Scope.ADMIN) else None
    return Health(status="ok", model_version=engine.version,
                  store=engine.store.url.split("://")[0], counts=counts, ready=engine.ready)


@router.get("/ready", responses={503: {"description": "still loading"}})
def ready(engine: EngineDep, caller: PublicCaller) -> JSONResponse:
    """Readiness for a load balancer: 200 once every request will be answered at full speed
    (search index built or opened, query encoder loaded), 503 before, with what is loading."""
    state = engine.ready
    return JSONResponse(status_code=200 if all(state.values()) else 503,
                        content={"ready": all(state.values()), **state})
