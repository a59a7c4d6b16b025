"""Durable storage behind one protocol; the backend is chosen by URL."""

from __future__ import annotations

import os
from pathlib import Path

from shelfwise.exceptions import ConfigError
from shelfwise.storage.base import Store, WriteResult
from shelfwise.storage.sql import SqlStore

__all__ = ["SqlStore", "Store", "WriteResult", "open_store"]


def open_store(url: str) -> Store:
    """Open (and create if needed) the store at ``url``: ``sqlite:///path.db`` or
    ``postgresql+psycopg://user@host/db``. A SQLite path may start with ``~``; its folder is
    created."""
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
    return SqlStore(url)
