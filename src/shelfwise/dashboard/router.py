"""The dashboard's routes: HTML pages under ``/dashboard``, for admins only.

Access: the admin API key, sent as ``Authorization: Bearer`` or kept by the sign-in form in an
HttpOnly, SameSite=Strict cookie scoped to ``/dashboard`` (so other sites cannot make the
browser send it with a form post). Local mode is the API's: a loopback server with no keys is
open to this machine only. A refused page answers 401 with the sign-in form.
"""

# No ``from __future__ import annotations``: FastAPI reads ``Require.__call__``'s annotations.

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import escape

from shelfwise import __version__
from shelfwise.apikeys import Scope
from shelfwise.dashboard import views
from shelfwise.dashboard.i18n import COOKIE, LANGUAGES, language, strings
from shelfwise.exceptions import ShelfwiseError
from shelfwise.experiments.model import ExperimentIn
from shelfwise.serving.auth import Authenticator, Caller, PublicCaller, Require, bearer

KEY_COOKIE = "shelfwise_dashboard"
STATIC = Path(__file__).parent / "static"
PAGES = (("overview", ""), ("shopper", "/shopper"), ("item", "/item"),
         ("search", "/search"), ("experiments", "/experiments"),
         ("promotions", "/promotions"), ("evaluation", "/evaluation"))

templates = Environment(loader=PackageLoader("shelfwise.dashboard", "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True,
                        lstrip_blocks=True)


class LoginRequired(Exception):
    """A dashboard request without an admin key: answered with the sign-in form."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class DashboardAccess(Require):
    """Admin scope, from the bearer header or the sign-in cookie."""

    def __init__(self) -> None:
        super().__init__(Scope.ADMIN)

    async def __call__(self, request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        auth: Authenticator = request.app.state.auth
        raw = credentials.credentials if credentials else request.cookies.get(KEY_COOKIE)
        try:
            return auth.authorize(raw, Scope.ADMIN,
                                  request.client.host if request.client else None)
        except HTTPException as exc:
            raise LoginRequired(exc.status_code, str(exc.detail)) from None


router = APIRouter(prefix="/dashboard", include_in_schema=False,
                   dependencies=[Depends(DashboardAccess())])
public = APIRouter(prefix="/dashboard", include_in_schema=False)


def render(request: Request, name: str, page: str, status: int = 200,
           **context: Any) -> HTMLResponse:
    lang = language(request)
    t = strings(lang)
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    lang_links = {code: f"{request.url.path}?{urlencode([*params, ('lang', code)])}"
                  for code in LANGUAGES}
    html = templates.get_template(name).render(
        t=t, lang=lang, page=page, pages=PAGES, version=__version__, lang_links=lang_links,
        **context)
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(COOKIE, lang, max_age=365 * 86400, samesite="strict",
                            path="/dashboard")
    return response


def _state(request: Request) -> Any:
    return request.app.state.dashboard


def login_page(request: Request, exc: LoginRequired) -> HTMLResponse:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "login.html", "login", status=exc.status, detail=exc.detail,
                  next=nxt)


# ---- public: sign-in and the static files ------------------------------------------------
@public.get("/login", response_class=HTMLResponse)
def login_form(request: Request, caller: PublicCaller, next: str = "/dashboard") -> Response:
    del caller
    return render(request, "login.html", "login", detail=None, next=_safe_next(next))


@public.post("/login", response_class=HTMLResponse)
async def login(request: Request, caller: PublicCaller) -> Response:
    del caller
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    nxt = _safe_next((form.get("next") or ["/dashboard"])[0])
    auth: Authenticator = request.app.state.auth
    try:
        auth.authorize(key or None, Scope.ADMIN,
                       request.client.host if request.client else None)
    except HTTPException as exc:
        return render(request, "login.html", "login", status=exc.status_code,
                      detail=str(exc.detail), next=nxt)
    response = RedirectResponse(nxt, status_code=303)
    response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/dashboard",
                        secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


@public.post("/logout")
def logout(caller: PublicCaller) -> Response:
    del caller
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/dashboard")
    return response


def _safe_next(nxt: str) -> str:
    """Only a dashboard path (no open redirect to another site)."""
    return nxt if nxt.startswith("/dashboard") and "//" not in nxt else "/dashboard"


@public.get("/static/{name}")
def static(name: str, caller: PublicCaller) -> Response:
    """The dashboard's script and style, and plotly.js from the plotly package (PyPI)."""
    del caller
    if name == "plotly.min.js":
        import plotly  # type: ignore[import-untyped]

        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    elif name in ("dashboard.js", "dashboard.css"):
        path = STATIC / name
    else:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


# ---- the pages ----------------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
def overview_page(request: Request) -> Response:
    st = _state(request)
    metrics = request.app.state.metrics
    ctx = views.overview(request.app.state.engine, st.activity,
                         metrics.render() if metrics is not None else None,
                         strings(language(request)))
    return render(request, "overview.html", "overview", **ctx)


@router.get("/shopper", response_class=HTMLResponse)
def shopper_page(request: Request, user: Annotated[str, Query(max_length=256)] = "",
                 diversity: Annotated[float | None, Query(ge=0, le=1)] = None) -> Response:
    engine = request.app.state.engine
    lang = language(request)
    if diversity is None:
        diversity = engine.settings.diversity.default
    ctx = views.shopper(engine, user.strip(), diversity, lang)
    return render(request, "shopper.html", "shopper", **ctx)


@router.get("/shopper/feed", response_class=HTMLResponse)
def shopper_feed(request: Request, user: Annotated[str, Query(min_length=1, max_length=256)],
                 diversity: Annotated[float, Query(ge=0, le=1)]) -> Response:
    """The feed list alone, for the diversity slider."""
    engine = request.app.state.engine
    lang = language(request)
    try:
        feed = engine.feed(user, 12, diversity=diversity, lang=lang, preview=True)
    except ShelfwiseError as exc:
        return HTMLResponse(f"<p class=error>{escape(str(exc))}</p>", status_code=400)
    return render(request, "_feed.html", "shopper", feed=feed, user_id=user,
                  diversity=diversity)


@router.get("/item", response_class=HTMLResponse)
def item_page(request: Request, item: Annotated[str, Query(max_length=256)] = "") -> Response:
    lang = language(request)
    ctx = views.item(request.app.state.engine, item.strip(), lang, strings(lang))
    return render(request, "item.html", "item", status=404 if "error" in ctx and
                  "item" not in ctx else 200, **ctx)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, q: Annotated[str, Query(max_length=500)] = "",
                user: Annotated[str, Query(max_length=256)] = "") -> Response:
    lang = language(request)
    ctx = views.search(request.app.state.engine, q.strip(), user.strip(), strings(lang))
    return render(request, "search.html", "search", **ctx)


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, error: str = "", spec: str = "") -> Response:
    st = _state(request)
    ctx = views.experiments(request.app.state.engine, st.cache, st.config.report_seconds,
                            strings(language(request)))
    return render(request, "experiments.html", "experiments", form_error=error, spec=spec,
                  **ctx)


@router.post("/experiments")
async def create_experiment(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    spec = (form.get("spec") or [""])[0]
    try:
        doc = json.loads(spec)
        request.app.state.engine.experiments.create(ExperimentIn.model_validate(doc))
    except (ValueError, ShelfwiseError) as exc:
        return RedirectResponse(f"/dashboard/experiments?error={quote(str(exc)[:500])}"
                                f"&spec={quote(spec[:4000])}", status_code=303)
    return RedirectResponse("/dashboard/experiments", status_code=303)


@router.post("/experiments/{experiment_id}/{action}")
def experiment_action(request: Request, experiment_id: str, action: str) -> Response:
    service = request.app.state.engine.experiments
    try:
        if action == "start":
            service.start(experiment_id)
        elif action == "stop":
            service.stop(experiment_id)
        else:
            raise ShelfwiseError(f"unknown action {action!r}: use start or stop")
    except ShelfwiseError as exc:
        return RedirectResponse(f"/dashboard/experiments?error={quote(str(exc)[:500])}",
                                status_code=303)
    return RedirectResponse("/dashboard/experiments", status_code=303)


@router.get("/promotions", response_class=HTMLResponse)
def promotions_page(request: Request, candidate: Annotated[str, Query(
        pattern="^(|uniform|egreedy|linucb|thompson)$")] = "") -> Response:
    st = _state(request)
    ctx = views.promotions(request.app.state.engine, candidate or None, st.cache,
                           st.config.report_seconds, strings(language(request)))
    return render(request, "promotions.html", "promotions", **ctx)


@router.get("/evaluation", response_class=HTMLResponse)
def evaluation_page(request: Request) -> Response:
    st = _state(request)
    ctx = views.evaluation(st.results, strings(language(request)))
    return render(request, "evaluation.html", "evaluation", **ctx)

