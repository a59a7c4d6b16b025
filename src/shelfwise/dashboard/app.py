"""Mounting the dashboard on the HTTP app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from shelfwise.dashboard.activity import Activity
from shelfwise.dashboard.settings import DashboardConfig

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine


@dataclass
class DashboardState:
    config: DashboardConfig
    activity: Activity
    results: list[Path]
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)


def install_dashboard(app: FastAPI, engine: Engine) -> None:
    """Add ``/dashboard`` to ``app`` when ``[serve.dashboard] enabled``; the app's lifespan
    starts and stops ``app.state.dashboard.activity``."""
    config = engine.settings.dashboard
    if not config.enabled:
        app.state.dashboard = None
        return
    from shelfwise.dashboard.router import LoginRequired, login_page, public, router

    results = [Path(p) for p in config.results]
    default = engine.bundles_root.parent / "evaluation.jsonl"
    if default not in results:
        results.append(default)
    app.state.dashboard = DashboardState(
        config, Activity(engine.store, config.refresh_seconds, config.recount_minutes),
        results)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> HTMLResponse:
        return login_page(request, exc)

    app.include_router(public)
    app.include_router(router)
