"""Who may call which route: ``Authorization: Bearer <key>`` checked against the store's keys.

Every route declares its access with exactly one :class:`Require` dependency (a scope, or
public for ``/health``); :func:`check_routes` refuses to build an app with a route that has none,
so a new route cannot be added open by accident. Local mode: while the store has no active keys
and the server is bound to loopback, every route is open to callers on this machine (each acts
as admin); a request from another address still needs a key, in case the app is run beyond
loopback some way other than ``shelfwise serve`` (which refuses to).

A key is looked up by its sha256 and the answer (found, missing or revoked) kept for
``[serve.auth] cache_seconds`` (default 5 s): one store query per key per interval, and a key
revoked, or the first key created, takes effect on every worker within that time. Each key has a
token bucket (``rate`` per second, ``burst`` at once) in each server process: with several
workers a key may make up to workers × rate requests per second.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the annotations of
# ``Require.__call__`` at runtime and finds no module globals for a callable instance.

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shelfwise.apikeys import GRANTS, AuthConfig, Scope, hash_key, is_loopback
from shelfwise.exceptions import ShelfwiseError
from shelfwise.storage.base import ApiKey, Store

#: Cached key lookups beyond this are dropped at once (bounds memory under random keys).
MAX_CACHED = 10_000
HOW = ("send it as the header 'Authorization: Bearer <key>'; an admin creates keys with "
       "`shelfwise keys create --scope admin|ingest|read`")

bearer = HTTPBearer(auto_error=False, description="an API key from `shelfwise keys create`; "
                    "scopes: admin (everything), ingest (events, users), read (feed, search, "
                    "similar, cart, profile, choosing promotions)")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key (id and scope), an anonymous caller of a public route, or anyone
    at all in local mode."""

    key_id: str | None = None
    scope: Scope | None = None
    local: bool = False

    def may(self, scope: Scope) -> bool:
        return self.local or (self.scope is not None and scope in GRANTS[self.scope])


ANONYMOUS, LOCAL = Caller(), Caller(local=True)


def _remote(peer: str | None) -> bool:
    """Whether a client address is another machine's (unix sockets and test clients are not)."""
    try:
        return peer is not None and not ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


class Authenticator:
    """Checks keys against ``store`` with a short-lived cache and limits each key's rate."""

    def __init__(self, store: Store, config: AuthConfig, host: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.config, self.clock = store, config, clock
        self.loopback = is_loopback(host)
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}
        self._any: tuple[float, bool] = (-math.inf, False)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def has_keys(self) -> bool:
        """Whether the store has an active key (re-read every ``cache_seconds``)."""
        now = self.clock()
        if self._any[0] <= now:
            self._any = (now + self.config.cache_seconds, bool(self.store.list_api_keys()))
        return self._any[1]

    def key(self, raw: str) -> ApiKey | None:
        """The active key whose secret is ``raw``, or None (unknown, revoked, malformed)."""
        if len(raw) > 256:
            return None
        digest, now = hash_key(raw), self.clock()
        hit = self._keys.get(digest)
        if hit is None or hit[0] <= now:
            hit = (now + self.config.cache_seconds, self.store.api_key(digest))
            if len(self._keys) >= MAX_CACHED:
                self._keys.clear()
            self._keys[digest] = hit
        key = hit[1]
        ok = key is not None and key.revoked_at is None and key.scope in GRANTS
        return key if ok else None

    def wait(self, key_id: str) -> int:
        """0 and one request taken from ``key_id``'s bucket, or the whole seconds until the
        bucket holds a request again."""
        rate, burst = self.config.rate, float(self.config.burst)
        if rate <= 0:
            return 0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key_id, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0
            self._buckets[key_id] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / rate))

    def authorize(self, raw: str | None, scope: Scope | None, peer: str | None = None) -> Caller:
        """The caller of a route that needs ``scope`` (None: public), or the 401/403/429.
        Local mode also needs the request to come from this machine (``peer``: the client's
        address), should the app run beyond loopback without ``serve``'s check."""
        if self.loopback and not _remote(peer) and not self.has_keys():
            return LOCAL
        if raw is None:
            if scope is None:
                return ANONYMOUS
            if not self.has_keys():
                raise _unauthorized("this server answers beyond loopback and has no API "
                                    "keys yet: " + HOW)
            raise _unauthorized(f"missing API key (this needs the '{scope}' scope): {HOW}")
        key = self.key(raw)
        if key is None:
            if scope is None:
                return ANONYMOUS
            raise _unauthorized("invalid or revoked API key: check the key you send "
                                "(`shelfwise keys list` shows active keys by their last "
                                "characters)", "invalid_token")
        caller = Caller(key.id, Scope(key.scope))
        if scope is None:
            return caller
        wait = self.wait(key.id)
        if wait:
            raise HTTPException(429, f"rate limit of key {key.id} reached "
                                f"({self.config.rate:g} requests/s, {self.config.burst} at "
                                f"once); retry in {wait} s", headers={"Retry-After": str(wait)})
        if not caller.may(scope):
            also = "" if scope is Scope.ADMIN else " (or admin)"
            raise HTTPException(403, f"this needs a key with the '{scope}' scope{also}; "
                                f"key {key.id} has the '{key.scope}' scope")
        return caller


class Require:
    """The dependency that declares and enforces a route's access: a key holding ``scope``,
    or (``scope=None``) public, where the caller is still told apart for what it may see."""

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope

    async def __call__(self, request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        # on the event loop (no thread-pool trip): keys and their absence are cached, so the
        # store is read at most once per key every ``cache_seconds``
        auth: Authenticator = request.app.state.auth
        return auth.authorize(credentials.credentials if credentials else None, self.scope,
                              request.client.host if request.client else None)


def requires(scope: Scope) -> DependsParam:
    """For ``dependencies=[...]`` of a router or route: callers need a key holding ``scope``."""
    declared: DependsParam = Depends(Require(scope))
    return declared


#: A public route's caller (``/health``: admins see more).
PublicCaller = Annotated[Caller, Depends(Require(None))]


def api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], list[Require]]]:
    """(path, methods, access declarations) of every API route of ``app``; newer FastAPI keeps
    included routers nested in ``app.routes``, so their routes are read through it."""
    contexts: Iterator[Any] = getattr(fastapi.routing, "iter_route_contexts", iter)(app.routes)
    for ctx in contexts:
        if isinstance(getattr(ctx, "original_route", ctx), APIRoute):
            yield ctx.path, set(ctx.methods or ()), [
                d.call for d in ctx.dependant.dependencies if isinstance(d.call, Require)]


def check_routes(app: FastAPI) -> None:
    """Refuse an app with a route whose access is not declared exactly once."""
    for path, methods, access in api_routes(app):
        if len(access) != 1:
            raise ShelfwiseError(
                f"route {sorted(methods)} {path} must declare its access once: "
                "dependencies=[requires(Scope.ADMIN|INGEST|READ)] on its router or route, "
                "or a PublicCaller parameter")
