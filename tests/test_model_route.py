"""The API's routes: light dependencies run on the event loop, and a plain ``def`` endpoint's
model is turned into JSON in its own worker thread, identical to FastAPI's answer."""

from __future__ import annotations

import inspect
import threading

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from shelfwise.serving.auth import Require
from shelfwise.serving.deps import ModelRoute, get_engine, get_language, get_settings


class Inner(BaseModel):
    score: float
    note: str | None = None


class Answer(BaseModel):
    name: str
    items: list[Inner]
    extra: dict[str, float] = {}


class Wider(Answer):
    secret: str = "not in the schema"


def _app(route_class: type | None, answer: Answer, threads: list[str]) -> FastAPI:
    router = APIRouter(route_class=route_class) if route_class else APIRouter()

    @router.get("/a", response_model=Answer)
    def a() -> Answer:
        threads.append(threading.current_thread().name)
        return answer

    @router.post("/made", response_model=Answer, status_code=201)
    def made() -> Answer:
        return answer

    @router.get("/lean", response_model=Answer, response_model_exclude_none=True)
    def lean() -> Answer:
        return answer

    app = FastAPI()
    app.include_router(router)
    return app


def test_a_model_route_answers_exactly_what_fastapi_would() -> None:
    answer = Answer(name="茶 tea", items=[Inner(score=0.5), Inner(score=1e-9, note="x")],
                    extra={"a": 1.0})
    seen: list[str] = []
    plain = TestClient(_app(None, answer, seen)).get("/a")
    ours = TestClient(_app(ModelRoute, answer, seen)).get("/a")
    assert ours.status_code == plain.status_code == 200
    assert ours.json() == plain.json() and ours.headers["content-type"] == "application/json"
    assert all(name != threading.main_thread().name for name in seen)
    for method, path in (("POST", "/made"), ("GET", "/lean")):
        mine = TestClient(_app(ModelRoute, answer, seen)).request(method, path)
        theirs = TestClient(_app(None, answer, seen)).request(method, path)
        assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json())
    assert "note" not in TestClient(_app(ModelRoute, answer, seen)).get("/lean").json()[
        "items"][0], "a filtering route stays FastAPI's"
    # a wider model than declared is left to FastAPI, which keeps to the declared fields
    wider = Wider(name="w", items=[])
    body = TestClient(_app(ModelRoute, wider, seen)).get("/a").json()
    assert "secret" not in body and body["name"] == "w"


def test_the_api_dependencies_run_without_a_thread_pool_trip() -> None:
    for dep in (get_engine, get_language, get_settings, Require.__call__):
        assert inspect.iscoroutinefunction(dep), dep
    from shelfwise.serving.routers import users

    routes = [r for r in users.router.routes if getattr(r, "path", "").endswith("/feed")]
    assert routes and all(isinstance(r, ModelRoute) for r in routes)
