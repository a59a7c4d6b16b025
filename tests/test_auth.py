"""API keys: each scope's allow/deny on every route, 401/403/429 bodies, revocation, hashed
storage, local mode and the non-loopback refusal, and ``shelfwise keys``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shelfwise.apikeys import GRANTS, AuthConfig, Scope, create_key, hash_key, is_loopback
from shelfwise.cli.main import app as cli
from shelfwise.config import ShelfwiseConfig
from shelfwise.exceptions import ShelfwiseError
from shelfwise.serving import create_app
from shelfwise.serving.auth import Authenticator, api_routes, check_routes
from shelfwise.serving.routers import ROUTERS
from shelfwise.storage import SqlStore, open_store
from tests.conftest import two_group_frame
from tests.helpers import build


def declared(app: FastAPI) -> list[tuple[str, str, Scope | None]]:
    """(method, path, scope needed) of every API route of ``app``."""
    return sorted((m, path, access[0].scope) for path, methods, access in api_routes(app)
                  for m in methods)


def _routers_app() -> FastAPI:
    app = FastAPI()
    for router in ROUTERS:
        app.include_router(router)
    return app


#: The resource routers' /v1 routes (the app adds /health and /metrics, also checked below).
V1 = [r for r in declared(_routers_app()) if r[1].startswith("/v1")]


def config(host: str = "127.0.0.1", **auth: Any) -> ShelfwiseConfig:
    """Keys looked up on every request (no cache), so tests see revocations at once."""
    return ShelfwiseConfig.model_validate(
        {"serve": {"host": host, "auth": {"cache_seconds": 0, **auth}}})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A trained demo shop (store URL, bundles), module-wide: training takes seconds."""
    return build(two_group_frame(), tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def keyed(shop: tuple[str, Path]) -> Iterator[tuple[TestClient, dict[Scope, str]]]:
    """The shop's app with a key of every scope."""
    url, bundles = shop
    app = create_app(url, bundles, config=config())
    keys = {s: create_key(app.state.store, s, f"test {s}")[1] for s in Scope}
    with TestClient(app) as client:
        yield client, keys


@pytest.fixture
def client(keyed: tuple[TestClient, dict[Scope, str]]) -> TestClient:
    return keyed[0]


@pytest.fixture
def keys(keyed: tuple[TestClient, dict[Scope, str]]) -> dict[Scope, str]:
    return keyed[1]


def call(client: TestClient, method: str, path: str, key: str | None = None) -> Any:
    url = re.sub(r"\{[^}]+\}", "a1", path)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, url, json=body, headers=bearer(key) if key else {})


# ---- every route declares its scope ----------------------------------------------------------
def test_every_route_of_the_app_declares_one_scope(client: TestClient) -> None:
    routes = list(api_routes(client.app))  # type: ignore[arg-type]
    assert all(len(access) == 1 for _, _, access in routes)
    public = {path for path, _, access in routes if access[0].scope is None}
    # the dashboard's sign-in, sign-out and script/style files; its pages need admin
    assert public == {"/health", "/ready", "/dashboard/login", "/dashboard/logout",
                      "/dashboard/static/{name}"}
    assert all(access[0].scope == Scope.ADMIN for path, _, access in routes
               if path.startswith("/dashboard") and path not in public)
    v1 = {path for path, _, _ in routes if path.startswith("/v1")}
    assert v1 == {p for _, p, _ in V1}, "every /v1 route is covered by the test below"
    assert v1 >= {"/v1/events", "/v1/items", "/v1/search", "/v1/users/{user_id}/feed"}


def test_an_app_with_a_route_without_a_scope_is_refused() -> None:
    app, router = FastAPI(), APIRouter()

    @router.get("/v1/forgotten")
    def forgotten() -> None: ...

    app.include_router(router)
    with pytest.raises(ShelfwiseError, match="/v1/forgotten must declare its access"):
        check_routes(app)


@pytest.mark.parametrize("held", list(Scope))
@pytest.mark.parametrize(("method", "path", "needed"), V1)
def test_each_scope_on_each_route(client: TestClient, keys: dict[Scope, str], method: str,
                                  path: str, needed: Scope, held: Scope) -> None:
    """Allowed: anything but 401/403/429 (a body of ``{}`` is a 422: auth runs first)."""
    r = call(client, method, path, keys[held])
    if needed in GRANTS[held]:
        assert r.status_code not in (401, 403, 429), r.text
    else:
        assert r.status_code == 403, r.text
        assert f"'{needed}' scope" in r.json()["detail"] and f"'{held}'" in r.json()["detail"]
    missing = call(client, method, path)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"


def test_routes_outside_v1_are_admin_or_public(client: TestClient,
                                               keys: dict[Scope, str]) -> None:
    """/metrics (and whatever else the app adds beside the routers) by the same rules."""
    for method, path, needed in declared(client.app):  # type: ignore[arg-type]
        if path.startswith("/v1"):
            continue
        assert needed in (None, Scope.ADMIN), path
        for held in Scope:
            code = call(client, method, path, keys[held]).status_code
            if path.startswith("/dashboard"):  # pages take their own parameters and forms
                assert (code == 403) == (needed is Scope.ADMIN and held is not Scope.ADMIN)
                assert code != 401 or needed is None, path
                continue
            allowed = 200 if needed is None or held is Scope.ADMIN else 403
            # /ready answers 503 while the search index is still loading
            assert code == allowed or (path == "/ready" and code == 503), path


def test_scopes_nest_admin_over_ingest_and_read_which_are_disjoint() -> None:
    assert GRANTS[Scope.ADMIN] == set(Scope)
    assert GRANTS[Scope.INGEST] & GRANTS[Scope.READ] == set()


# ---- 401 and 403 bodies ----------------------------------------------------------------------
def test_missing_key_says_how_to_send_one(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        r = client.get("/v1/users/u0/feed", headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        detail = r.json()["detail"]
        assert "Authorization: Bearer <key>" in detail and "'read' scope" in detail
        assert "shelfwise keys create" in detail


def test_wrong_key_is_401(client: TestClient, keys: dict[Scope, str]) -> None:
    for wrong in ("sw_not-a-key", keys[Scope.READ] + "x", "x" * 10_000):
        r = client.get("/v1/users/u0/feed", headers=bearer(wrong))
        assert r.status_code == 401, wrong[:20]
        assert r.json() == {"detail": "invalid or revoked API key: check the key you send "
                            "(`shelfwise keys list` shows active keys by their last characters)"}
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_wrong_scope_is_403_naming_the_scope(client: TestClient, keys: dict[Scope, str]) -> None:
    r = client.post("/v1/items", json={"items": []}, headers=bearer(keys[Scope.INGEST]))
    assert r.status_code == 403
    key_id = client.app.state.store.api_key(hash_key(keys[Scope.INGEST])).id  # type: ignore
    assert r.json() == {"detail": f"this needs a key with the 'admin' scope; key {key_id} has "
                        "the 'ingest' scope"}
    r = client.get("/v1/users/u0/feed", headers=bearer(keys[Scope.INGEST]))
    assert r.status_code == 403 and "the 'read' scope (or admin)" in r.json()["detail"]


def test_a_revoked_key_is_refused(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    key, raw = create_key(store, Scope.READ, "soon gone")
    assert client.get("/v1/users/u0/profile", headers=bearer(raw)).status_code == 200
    store.revoke_api_key(key.id)
    r = client.get("/v1/users/u0/profile", headers=bearer(raw))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_revocation_takes_effect_when_the_cached_lookup_expires(store: SqlStore) -> None:
    now = [100.0]
    auth = Authenticator(store, AuthConfig(cache_seconds=5), "127.0.0.1", clock=lambda: now[0])
    key, raw = create_key(store, Scope.READ)
    assert auth.key(raw) == key
    store.revoke_api_key(key.id)
    now[0] += 4.9
    assert auth.key(raw) == key, "cached for cache_seconds: no store query per request"
    now[0] += 0.2
    assert auth.key(raw) is None


# ---- /health ---------------------------------------------------------------------------------
def test_health_is_open_but_counts_are_for_admins(client: TestClient,
                                                   keys: dict[Scope, str]) -> None:
    for headers in ({}, bearer(keys[Scope.READ]), bearer(keys[Scope.INGEST]), bearer("bad")):
        r = client.get("/health", headers=headers)
        assert r.status_code == 200 and r.json()["counts"] is None
    r = client.get("/health", headers=bearer(keys[Scope.ADMIN]))
    assert r.json()["counts"]["events"] > 0 and r.json()["status"] == "ok"


# ---- storage ---------------------------------------------------------------------------------
def test_keys_are_stored_hashed(client: TestClient, shop: tuple[str, Path]) -> None:
    key, raw = create_key(client.app.state.store, Scope.ADMIN, "hashed")  # type: ignore
    assert client.get("/v1/users/u0/profile", headers=bearer(raw)).status_code == 200
    db = Path(shop[0].removeprefix("sqlite:///"))
    data = b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    assert hash_key(raw).encode() in data and key.hint == raw[-4:]
    assert raw.encode() not in data and raw[3:-4].encode() not in data


# ---- rate limits -----------------------------------------------------------------------------
def test_rate_limit_is_429_with_retry_after(shop: tuple[str, Path]) -> None:
    url, bundles = shop
    client = TestClient(create_app(url, bundles, config=config(rate=0.01, burst=2)))
    store = client.app.state.store  # type: ignore[attr-defined]
    _, raw = create_key(store, Scope.READ)
    _, other = create_key(store, Scope.READ)
    for _ in range(2):
        assert client.get("/v1/users/u0/profile", headers=bearer(raw)).status_code == 200
    r = client.get("/v1/users/u0/profile", headers=bearer(raw))
    assert r.status_code == 429 and "rate limit" in r.json()["detail"]
    assert 90 <= int(r.headers["Retry-After"]) <= 100, "whole seconds until 1 request refills"
    assert client.get("/v1/users/u0/profile", headers=bearer(other)).status_code == 200, (
        "each key has its own bucket")


def test_token_bucket_refills_at_the_rate(store: SqlStore) -> None:
    now = [0.0]
    auth = Authenticator(store, AuthConfig(rate=2, burst=3), "::1", clock=lambda: now[0])
    assert [auth.wait("k") for _ in range(4)] == [0, 0, 0, 1]
    now[0] += 0.5
    assert [auth.wait("k"), auth.wait("k")] == [0, 1]
    now[0] += 10
    assert [auth.wait("k") for _ in range(4)] == [0, 0, 0, 1], "never more than burst"
    assert Authenticator(store, AuthConfig(rate=0), "::1").wait("k") == 0, "0 = no limit"


# ---- local mode and exposure -----------------------------------------------------------------
def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "shop.example.com", ""]))


def test_local_mode_open_until_a_key_exists_and_serve_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: runs.append(kw))
    args = ["serve", "--store", url, "--bundles", str(bundles)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "local mode" in res.output and runs[-1]["host"] == "127.0.0.1"

    refused = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and len(runs) == 1, "refused before it starts"
    assert "refusing to serve on 0.0.0.0" in refused.output
    assert "shelfwise keys create" in refused.output and "Traceback" not in refused.output

    client = TestClient(create_app(url, bundles, config=config()))
    exposed = TestClient(create_app(url, bundles, config=config(host="0.0.0.0")))
    assert client.get("/v1/users/u0/feed").status_code == 200
    assert client.post("/v1/items", json={"items": [{"id": "z1"}]}).status_code == 200
    assert client.get("/health").json()["counts"]["items"] == 8, "everyone is admin"
    r = exposed.get("/v1/users/u0/feed")
    assert r.status_code == 401 and "has no API keys" in r.json()["detail"]
    remote = TestClient(client.app, client=("203.0.113.7", 5000))  # run beyond serve's check
    assert remote.get("/v1/users/u0/feed").status_code == 401, "local mode is for this machine"
    assert TestClient(client.app, client=("::1", 5000)).get("/v1/users/u0/feed").is_success

    _, raw = create_key(client.app.state.store, Scope.ADMIN)  # type: ignore[attr-defined]
    assert client.get("/v1/users/u0/feed").status_code == 401, "keys on: local mode ends"
    assert client.get("/v1/users/u0/feed", headers=bearer(raw)).status_code == 200
    started = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0"])
    assert started.exit_code == 0 and runs[-1]["host"] == "0.0.0.0"
    assert "local mode" not in started.output


# ---- shelfwise keys --------------------------------------------------------------------------
def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    assert "no API keys" in runner.invoke(cli, ["keys", "list", "--store", url]).output
    made = runner.invoke(cli, ["keys", "create", "--scope", "ingest", "--name", "pipeline",
                               "--store", url])
    assert made.exit_code == 0, made.output
    raw = made.stdout.splitlines()[-1]
    assert re.fullmatch(r"sw_[A-Za-z0-9_-]{43}", raw)
    store = open_store(url)
    try:
        key = store.api_key(hash_key(raw))
        assert key is not None and (key.scope, key.name) == ("ingest", "pipeline")
    finally:
        store.close()

    listed = runner.invoke(cli, ["keys", "list", "--store", url])
    assert listed.exit_code == 0
    assert all(s in listed.output for s in (key.id, "pipeline", "ingest", f"…{raw[-4:]}"))
    assert raw not in listed.output and raw[3:-4] not in listed.output

    gone = runner.invoke(cli, ["keys", "revoke", key.id, "--store", url])
    assert gone.exit_code == 0 and f"revoked key {key.id}" in gone.output
    assert key.id not in runner.invoke(cli, ["keys", "list", "--store", url]).output
    assert key.id in runner.invoke(cli, ["keys", "list", "--all", "--store", url]).output

    again = runner.invoke(cli, ["keys", "revoke", key.id, "--store", url])
    assert again.exit_code == 2 and f"no active key has the id '{key.id}'" in again.output
    bad = runner.invoke(cli, ["keys", "create", "--scope", "root", "--store", url])
    assert bad.exit_code == 2 and "'root' is not one of" in bad.output
    for res in (again, bad):
        assert "Traceback" not in res.output
