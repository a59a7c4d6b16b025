"""Typed dependencies of the routes: the engine (services container) and the settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request

from shelfwise.config import ServeConfig
from shelfwise.data.schemas import ID_PATTERN
from shelfwise.services.engine import Engine
from shelfwise.services.explain_text import request_language
from shelfwise.serving.schemas import SESSION_ID_MAX


# These dependencies are ``async``: FastAPI runs a plain ``def`` dependency in its thread
# pool, a hand-off per dependency and request, for work that takes microseconds.
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> ServeConfig:
    """The ``[serve]`` settings the app was built with (auth and limits hang from here)."""
    engine: Engine = request.app.state.engine
    return engine.settings


async def get_language(accept_language: Annotated[str | None, Header(
        description="zh… for explanations in Chinese, any other language for English; "
        "absent: each item's language")] = None) -> str | None:
    """The explanations' language from ``Accept-Language`` (None: each item's own)."""
    return request_language(accept_language)


EngineDep = Annotated[Engine, Depends(get_engine)]
LangDep = Annotated[str | None, Depends(get_language)]
SettingsDep = Annotated[ServeConfig, Depends(get_settings)]
N = Annotated[int, Query(ge=1, le=500, description="how many items")]
SessionQuery = Annotated[str | None, Query(
    min_length=1, max_length=SESSION_ID_MAX, pattern=ID_PATTERN, description="an anonymous "
    "visitor's session id: the impressions of this list are logged under it")]
UserPath = Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN,
                               description="your user id (1-256 characters, no control "
                               "characters); one never seen is a new visitor")]
ItemPath = Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN,
                               description="your item id")]
DiversityQuery = Annotated[float | None, Query(
    ge=0.0, le=1.0, description="diversity knob: 0 = the model's order, 1 = most varied; "
    "default serve.diversity.default")]
UserQuery = Annotated[str | None, Query(
    min_length=1, max_length=256, pattern=ID_PATTERN, description="the shopper, when known: "
    "the impressions of this list are logged under their id")]

