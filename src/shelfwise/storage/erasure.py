"""Forgetting a user and retention in the SQL store (the statements behind ``SqlStore``).

Which rows name a user is declared on the schema: a column with ``info={"user_id": True}``
(``events.user_id``, ``users.id``); :func:`forget` deletes by every such column of every table
in the metadata, so a table added later with a marked column is covered without code here.

Races with writers on other connections or processes are closed by the tombstone: ``forget``
writes it in the same transaction as the deletes, and ``add_events`` looks it up *after* its
insert, inside its own transaction, deleting what it just wrote for a user forgotten at or
after the event's time. On SQLite the insert holds the single write lock, so the lookup sees
any erasure committed before and none can commit in between; on PostgreSQL an advisory
transaction lock (shared by writers, exclusive for ``forget``) gives the same order.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shelfwise.storage.base import Erasure, Tombstone, user_hash

FORGOTTEN = "forgotten_users"
#: PostgreSQL advisory lock key that orders event writes against erasures.
LOCK_KEY = 0x5E1F_0E5E
_CHUNK = 900


def forgotten_table(metadata: sa.MetaData) -> sa.Table:
    """Tombstones: one row per forgotten user, by the sha256 of the stored id."""
    return sa.Table(
        FORGOTTEN, metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("user_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("forgotten_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,  # seq never reused, so "seq > last seen" misses nothing
    )


def user_columns(metadata: sa.MetaData) -> list[tuple[sa.Table, list[sa.Column[Any]]]]:
    """Every table with columns marked ``info={"user_id": True}``, and those columns."""
    out = []
    for table in metadata.sorted_tables:
        cols = [c for c in table.columns if c.info.get("user_id")]
        if cols:
            out.append((table, cols))
    return out


def user_match(column: sa.Column[Any], user: Any) -> Any:
    """``column == user`` (a value, or a column to join on), written so that the planner
    reads the column's partial indexes: with ``info["index_where"]`` (the conditions of
    partial indexes that lead with the column and together hold every row) one arm per index,
    each stating its condition literally (SQLite and PostgreSQL use a partial index only for
    a condition they can see implies it)."""
    wheres = column.info.get("index_where")
    if not wheres:
        return column == user
    return sa.or_(*(sa.and_(column == user, sa.text(w)) for w in wheres))


def lock(conn: Connection, *, exclusive: bool) -> None:
    """Order this transaction against erasures (PostgreSQL; SQLite's write lock does it)."""
    if conn.dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(sa.text(f"SELECT {fn}(:k)"), {"k": LOCK_KEY})


def forget(conn: Connection, metadata: sa.MetaData, user_id: str) -> Erasure:
    """Tombstone ``user_id`` then delete its rows from every table (call in a transaction)."""
    lock(conn, exclusive=True)
    tomb = metadata.tables[FORGOTTEN]
    key = user_hash(user_id)
    conn.execute(tomb.delete().where(tomb.c.user_hash == key))  # a new seq on a repeat
    conn.execute(tomb.insert().values(user_hash=key, forgotten_at=time.time()))
    rows: dict[str, int] = {}
    types: Counter[str] = Counter()
    for table, cols in user_columns(metadata):
        match = sa.or_(*(user_match(c, user_id) for c in cols))
        if table.name == "events":
            types.update(conn.execute(table.delete().where(match).returning(table.c.type))
                         .scalars())
            rows[table.name] = sum(types.values())
        else:
            rows[table.name] = conn.execute(table.delete().where(match)).rowcount
    return Erasure(rows, dict(sorted(types.items())))


def tombstones(conn: Connection, metadata: sa.MetaData, after: int) -> list[Tombstone]:
    tomb = metadata.tables[FORGOTTEN]
    q = sa.select(tomb.c.seq, tomb.c.user_hash, tomb.c.forgotten_at).where(
        tomb.c.seq > after).order_by(tomb.c.seq)
    return [Tombstone(int(s), str(h), datetime.fromtimestamp(t, tz=UTC))
            for s, h, t in conn.execute(q)]


def any_tombstone(conn: Connection, metadata: sa.MetaData) -> bool:
    """Whether anybody was ever forgotten (the usual answer, no, spares per-row checks)."""
    tomb = metadata.tables[FORGOTTEN]
    return conn.execute(sa.select(tomb.c.seq).limit(1)).first() is not None


def forgotten_at(conn: Connection, metadata: sa.MetaData,
                 users: Iterable[str]) -> dict[str, float]:
    """When each of ``users`` was last forgotten (epoch seconds), for those with a
    tombstone."""
    tomb = metadata.tables[FORGOTTEN]
    if not any_tombstone(conn, metadata):
        return {}  # nobody forgotten (the usual case): no per-row work on bulk imports
    hashes = {user_hash(u): u for u in users}
    keys = list(hashes)
    out: dict[str, float] = {}
    for start in range(0, len(keys), _CHUNK):
        q = sa.select(tomb.c.user_hash, tomb.c.forgotten_at).where(
            tomb.c.user_hash.in_(keys[start:start + _CHUNK]))
        for key, at in conn.execute(q):
            out[hashes[key]] = max(at, out.get(hashes[key], at))
    return out


def drop_forgotten(conn: Connection, metadata: sa.MetaData,
                   rows: Sequence[tuple[str, str, float]]) -> int:
    """Delete the just-written events ``rows`` (id, user id, epoch time) of users forgotten at
    or after the event's time; how many. Runs after the insert in the writing transaction (see
    the module doc). No such event was stored before the insert (the erasure deleted them and
    every later write passes through here), so the count is of rows this insert wrote."""
    gone = forgotten_at(conn, metadata, {u for _, u, _ in rows})
    if not gone:
        return 0
    late = [e for e, u, at in rows if u in gone and at <= gone[u]]
    events = metadata.tables["events"]
    deleted = 0
    for start in range(0, len(late), _CHUNK):
        deleted += conn.execute(events.delete().where(
            events.c.id.in_(late[start:start + _CHUNK]))).rowcount
    return deleted


def drop_before(conn: Connection, metadata: sa.MetaData, cutoff: datetime) -> int:
    """Delete events (and tombstones) older than ``cutoff``; the events deleted."""
    lock(conn, exclusive=False)
    events, tomb = metadata.tables["events"], metadata.tables[FORGOTTEN]
    at = cutoff.timestamp()
    n = conn.execute(events.delete().where(events.c.timestamp < at)).rowcount
    conn.execute(tomb.delete().where(tomb.c.forgotten_at < at))
    return int(n)
