"""API keys: their scopes, how one is made and stored, and when a server may run without any.

A key is ``sw_`` followed by 43 URL-safe characters (256 random bits). The store keeps its
sha256 and its last 4 characters, never the key: a stolen database file or log lets no one in,
and a sha256 of that much randomness needs no salt or slow hash. Keys live in the store, so
every server worker on one database sees the same keys.

Scopes nest: ``admin`` holds ``ingest`` and ``read``; ``ingest`` (events, users) and ``read``
(feed, search, similar, cart, profile, choosing promotions) are disjoint, so a key embedded in a
storefront cannot write events and an event pipeline cannot read feeds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError, NotFoundError
from shelfwise.storage.base import ApiKey, Store

PREFIX = "sw_"


class Scope(StrEnum):
    """What a key may do (see :data:`GRANTS`)."""

    ADMIN = "admin"
    INGEST = "ingest"
    READ = "read"


#: The scopes each scope holds.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.INGEST: frozenset({Scope.INGEST}),
    Scope.READ: frozenset({Scope.READ}),
}


class AuthConfig(BaseModel):
    """How the server checks keys (``[serve.auth]``). Keys themselves live in the store."""

    model_config = ConfigDict(extra="forbid")

    cache_seconds: float = Field(
        default=5.0, ge=0, le=300, description="a key looked up is trusted this long, so a "
        "revoked key (or the first key created) takes effect within it on every worker")
    rate: float = Field(default=1000.0, ge=0, description="requests per second per key "
                        "(token bucket, per server process); 0 = no limit")
    burst: int = Field(default=2000, ge=1, description="requests a key may make at once "
                       "before the rate applies")


def hash_key(raw: str) -> str:
    """The stored form of a key: sha256, hex."""
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(store: Store, scope: Scope, name: str = "") -> tuple[ApiKey, str]:
    """A new key stored (hashed) in ``store``: the record and the secret, shown only once."""
    raw = PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=secrets.token_hex(4), name=name, scope=scope.value, key_hash=hash_key(raw),
                 hint=raw[-4:], created_at=datetime.now(UTC))
    store.add_api_key(key)
    return key, raw


def revoke_key(store: Store, key_id: str) -> ApiKey:
    """Revoke an active key; :class:`NotFoundError` names the id when none has it."""
    key = store.revoke_api_key(key_id)
    if key is None:
        raise NotFoundError(f"no active key has the id {key_id!r}; see shelfwise keys list")
    return key


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(store: Store, host: str) -> bool:
    """Whether the server may start on ``host`` with ``store``'s keys; True = local mode (no
    keys, loopback: everything open). No keys beyond loopback is a :class:`ConfigError`."""
    if store.list_api_keys():
        return False
    if is_loopback(host):
        return True
    raise ConfigError(
        f"refusing to serve on {host}: the store has no API keys, so anyone who reaches the "
        "port could read and change everything. Create one first with `shelfwise keys create "
        "--scope admin` (and keys for your shop's services), or bind to 127.0.0.1")
