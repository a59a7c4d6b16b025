"""Typed dependencies of the routes: the engine (services container) and the settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from shelfwise.config import ServeConfig
from shelfwise.services.engine import Engine


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> ServeConfig:
    """The ``[serve]`` settings the app was built with (auth and limits hang from here)."""
    return get_engine(request).settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[ServeConfig, Depends(get_settings)]
N = Annotated[int, Query(ge=1, le=500, description="how many items")]
SessionQuery = Annotated[str | None, Query(
    min_length=1, max_length=256, description="an anonymous visitor's session id: the "
    "impressions of this list are logged under it")]
UserQuery = Annotated[str | None, Query(
    min_length=1, max_length=256, description="the shopper, when known: the impressions of "
    "this list are logged under their id")]
