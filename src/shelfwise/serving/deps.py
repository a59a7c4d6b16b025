"""Typed dependencies of the routes: the engine (services container) and the settings."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from pydantic import BaseModel

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


def _json_in_thread(endpoint: Callable[..., Any], model: type[BaseModel], status: int
                    ) -> Callable[..., Any]:
    """``endpoint`` returning its ``model`` already as JSON (with the route's ``status``):
    FastAPI would validate a model returned by a plain ``def`` endpoint in a second trip
    through its thread pool, and serialise it on the event loop."""
    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = endpoint(*args, **kwargs)
        if type(out) is model:  # exactly the declared model: nothing for FastAPI to filter
            return Response(out.model_dump_json(by_alias=True), status_code=status,
                            media_type="application/json")
        return out
    return wrapper


FILTERS = ("include", "exclude", "exclude_unset", "exclude_defaults", "exclude_none")


def _given(value: Any) -> bool:
    return bool(value.value if isinstance(value, DefaultPlaceholder) else value)


class ModelRoute(APIRoute):
    """Routes of the API routers: a plain ``def`` endpoint with a pydantic ``response_model``
    (the schema in the OpenAPI document) answers with that model's JSON, made in the thread
    the endpoint ran in, and the route's status code. Endpoints that set headers through an
    injected ``Response`` or filter the model (``response_model_exclude_*``) stay FastAPI's."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        model = kwargs.get("response_model")
        if isinstance(model, DefaultPlaceholder):
            model = model.value
        status = kwargs.get("status_code")
        if isinstance(model, type) and issubclass(model, BaseModel) and \
                not inspect.iscoroutinefunction(endpoint) and \
                not any(_given(kwargs.get(f"response_model_{k}")) for k in FILTERS) and \
                not any(p.annotation in (Response, "Response")
                        for p in inspect.signature(endpoint).parameters.values()):
            endpoint = _json_in_thread(endpoint, model, status if isinstance(status, int)
                                       else 200)
        super().__init__(path, endpoint, **kwargs)
