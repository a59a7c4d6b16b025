"""``/health``: liveness, the serving bundle and the store's counts."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.serving.deps import EngineDep
from shelfwise.serving.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
def health(engine: EngineDep) -> Health:
    return Health(status="ok", model_version=engine.version,
                  store=engine.store.url.split("://")[0], counts=engine.store.counts(),
                  ready=engine.ready)
