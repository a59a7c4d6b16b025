"""FastAPI app factory: one engine (services container), one router per resource."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shelfwise import __version__
from shelfwise.config import ShelfwiseConfig
from shelfwise.dashboard.app import install_dashboard
from shelfwise.exceptions import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ShelfwiseError,
)
from shelfwise.services.engine import Engine
from shelfwise.services.exploration import ExplorationConfig
from shelfwise.serving.auth import Authenticator, check_routes
from shelfwise.serving.metrics import install_monitoring
from shelfwise.serving.routers import ROUTERS

logger = logging.getLogger(__name__)
WARM_TIMEOUT_S = 300
"""How long a starting server waits for its search index and query encoder before it
listens anyway (requests then wait for them, as `GET /ready` says)."""


def create_app(store_url: str | None = None, bundle_path: Path | str | None = None,
               exploration: ExplorationConfig | None = None, *,
               config: ShelfwiseConfig | None = None, engine: Engine | None = None) -> FastAPI:
    """The HTTP app over ``engine``, or over a new one built from ``config`` (default: built-in
    defaults); ``store_url``, ``bundle_path`` and ``exploration`` override its
    ``storage.url``, ``storage.bundles`` and ``[serve.exploration]``."""
    if engine is None:
        cfg = config or ShelfwiseConfig()
        if exploration is not None:
            cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(
                update={"exploration": exploration})})
        if store_url is not None:
            cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(
                update={"url": store_url})})
        engine = Engine(cfg, bundle_path=bundle_path)
    built = engine

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # uvicorn listens once this returns: no request waits behind the warm-up
        if not await anyio.to_thread.run_sync(built.wait_warm, WARM_TIMEOUT_S):
            logger.warning("still loading the search index after %d s; serving anyway",
                           WARM_TIMEOUT_S)
        # What loading built lives as long as the process: keep it out of the cyclic
        # collector, whose full passes over it took ~95 ms each on the 100k bench shop
        # (200k objects), every request of the process waiting meanwhile.
        gc.collect()
        gc.freeze()
        if app.state.metrics is not None:  # gauges refreshed in the background while serving
            app.state.metrics.start()
        if app.state.dashboard is not None:  # the overview's counts: from the first look on
            app.state.dashboard.activity.serve()
        yield
        if app.state.dashboard is not None:
            app.state.dashboard.activity.stop()
        built.impressions.close()  # queued impressions are stored before the process exits
        built.experiments.close()  # and queued experiment exposures
        if app.state.metrics is not None:
            app.state.metrics.stop()
        gc.unfreeze()  # an app stopped inside a longer-lived process leaves no garbage behind

    app = FastAPI(title="shelfwise", version=__version__, lifespan=lifespan,
                  description="Recommendations and personalized search for online shops.")
    app.state.engine = engine
    # read-only shortcuts for tests and benchmarks
    app.state.store = engine.store
    app.state.recommender = engine.recommender
    app.state.promotions = engine.promotion_service
    app.state.explorer = engine.explorer
    app.state.search = engine.search_service
    app.state.auth = Authenticator(engine.store, engine.settings.auth, engine.settings.host)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(ShelfwiseError)
    async def _bad(_: Request, exc: ShelfwiseError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    for router in ROUTERS:
        app.include_router(router)
    install_monitoring(app, engine, engine.settings.monitoring)  # /metrics, request log
    install_dashboard(app, engine)  # /dashboard, when [serve.dashboard] enabled
    check_routes(app)  # every route declares its scope (or that it is public)
    return app
