"""Durable storage behind one protocol; the backend is chosen by URL."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.exceptions import ConfigError, StoreError
from shelfwise.storage.base import ApiKey, Store, WriteResult
from shelfwise.storage.sql import SqlStore

__all__ = ["ApiKey", "SqlStore", "Store", "WriteResult", "open_store", "store_failure"]


def open_store(url: str, *, scrub_pii: bool = True) -> Store:
    """Open (and create if needed) the store at ``url``: ``sqlite:///path.db`` or
    ``postgresql+psycopg://user@host/db``. A SQLite path may start with ``~``; its folder is
    created. ``scrub_pii``: mask PII in stored free text (``[privacy] scrub_pii``)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        # Expand ``~`` in the URL itself, not only for mkdir: SQLite would open a literal ``~``.
        path = os.path.expanduser(url.removeprefix("sqlite:///"))
        url = "sqlite:///" + path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(("sqlite", "postgresql")):
        raise ConfigError(
            f"unsupported store URL {url!r}: use sqlite:///path/to/shelfwise.db "
            "or postgresql+psycopg://user@host/dbname"
        )
    try:
        return SqlStore(url, scrub_pii=scrub_pii)
    except SQLAlchemyError as exc:  # the first connection: a bad file, an unreachable server
        raise StoreError(store_failure(url, exc)) from exc


def store_failure(url: str, exc: Exception) -> str:
    """One line naming the store (password hidden), the driver's reason and the fix: what
    ``serve``, ``train`` and ``import`` print instead of a traceback when a store cannot be
    opened or, opened, cannot be read (a damaged file)."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:  # not even a URL
        shown = repr(url)
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
    if url.startswith("sqlite"):
        return (f"the store {shown} cannot be used: {lines[0]}; if that file is not a shelfwise "
                "store or is damaged, point --store (storage.url) at the right one, or move it "
                "away to start an empty store")
    return (f"the store {shown} cannot be used: {lines[0]}; check that the database server runs "
            "and is reachable, and the URL's host, port, user, password and database name")
