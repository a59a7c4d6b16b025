"""SQLAlchemy-Core store: SQLite (embedded default) and PostgreSQL through one code path."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shelfwise.data.schemas import Event, EventType, Item, Promotion, User
from shelfwise.exceptions import StoreError
from shelfwise.storage.base import WriteResult

metadata = sa.MetaData()

items_t = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("category", sa.JSON, nullable=False),
    sa.Column("brand", sa.Text),
    sa.Column("price", sa.Float),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("language", sa.String(16)),
    sa.Column("created_at", sa.Float),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
    sa.Column("attributes", sa.JSON, nullable=False),
)

users_t = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float),
)

events_t = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("id", sa.String(256), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("item_id", sa.String(256)),
    sa.Column("query", sa.Text),
    sa.Column("request_id", sa.String(256)),
    sa.Column("position", sa.Integer),
    sa.Column("propensity", sa.Float),
    sa.Column("value", sa.Float),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Index("ix_events_user_time", "user_id", "timestamp", "seq"),
    sa.Index("ix_events_request", "request_id"),
)

promotions_t = sa.Table(
    "promotions",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("start", sa.Float),
    sa.Column("end", sa.Float),
)

meta_t = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _ts(value: datetime | None) -> float | None:
    """Epoch seconds. A naive datetime is UTC, as in the schemas and importers: ``timestamp()``
    alone would read it in the server's local zone (``User``/``Promotion`` keep naive values)."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class SqlStore:
    """A :class:`~shelfwise.storage.base.Store` over any SQLAlchemy URL.

    SQLite runs in WAL mode with ``synchronous=FULL``: a write that returned survives a crash.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._local = threading.local()
        if create:
            metadata.create_all(self.engine)

    # ---- connections -------------------------------------------------------------------
    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as new:
            yield new

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes in the block commit together or not at all."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.engine.begin() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        dialect = self.engine.dialect.name
        keys = [c.name for c in table.primary_key.columns]
        cols = [c.name for c in table.columns if not c.primary_key]
        stmt: sa.Executable
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            lite = sqlite.insert(table)
            stmt = lite.on_conflict_do_update(
                index_elements=keys, set_={c: lite.excluded[c] for c in cols}
            )
        elif dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            pg = postgresql.insert(table)
            stmt = pg.on_conflict_do_update(
                index_elements=keys, set_={c: pg.excluded[c] for c in cols}
            )
        else:  # pragma: no cover - other backends are not supported
            raise StoreError(f"unsupported database {dialect!r}; use sqlite or postgresql")
        with self._conn() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(stmt, rows[start : start + 5000])
        return len(rows)

    # ---- writes -----------------------------------------------------------------------
    def upsert_items(self, items: Sequence[Item]) -> WriteResult:
        rows = [
            {
                "id": it.id,
                "title": it.title,
                "description": it.description,
                "category": it.category,
                "brand": it.brand,
                "price": it.price,
                "tags": it.tags,
                "language": it.language,
                "created_at": _ts(it.created_at),
                "available": it.available,
                "attributes": it.attributes,
            }
            for it in items
        ]
        return WriteResult(self._upsert(items_t, rows))

    def upsert_users(self, users: Sequence[User]) -> WriteResult:
        rows = [
            {"id": u.id, "attributes": u.attributes, "created_at": _ts(u.created_at)}
            for u in users
        ]
        return WriteResult(self._upsert(users_t, rows))

    def upsert_promotions(self, promotions: Sequence[Promotion]) -> WriteResult:
        rows = [
            {"id": p.id, "text": p.text, "rules": p.rules, "start": _ts(p.start),
             "end": _ts(p.end)}
            for p in promotions
        ]
        return WriteResult(self._upsert(promotions_t, rows))

    def add_events(self, events: Sequence[Event]) -> WriteResult:
        unique: dict[str, Event] = {}
        for ev in events:
            unique.setdefault(ev.id, ev)
        with self.transaction(), self._conn() as conn:
            known = self._existing(conn, list(unique))
            rows = [
                {
                    "id": ev.id,
                    "type": ev.type.value,
                    "user_id": ev.user_id,
                    "item_id": ev.item_id,
                    "query": ev.query,
                    "request_id": ev.request_id,
                    "position": ev.position,
                    "propensity": ev.propensity,
                    "value": ev.value,
                    "timestamp": ev.timestamp.timestamp(),
                    "context": ev.context,
                }
                for eid, ev in unique.items()
                if eid not in known
            ]
            for start in range(0, len(rows), 5000):
                conn.execute(events_t.insert(), rows[start : start + 5000])
        return WriteResult(len(rows), len(events) - len(rows))

    def set_meta(self, key: str, value: str) -> None:
        self._upsert(meta_t, [{"key": key, "value": value}])

    # ---- reads ------------------------------------------------------------------------
    def _existing(self, conn: Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            found.update(
                conn.execute(sa.select(events_t.c.id).where(events_t.c.id.in_(chunk))).scalars()
            )
        return found

    def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        with self._conn() as conn:
            return self._existing(conn, list(event_ids))

    def get_meta(self, key: str) -> str | None:
        with self._conn() as conn:
            value = conn.execute(
                sa.select(meta_t.c.value).where(meta_t.c.key == key)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def get_item(self, item_id: str) -> Item | None:
        return self.get_items([item_id]).get(item_id)

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        out: dict[str, Item] = {}
        ids = list(dict.fromkeys(item_ids))
        with self._conn() as conn:
            for start in range(0, len(ids), 900):
                rows = conn.execute(
                    sa.select(items_t).where(items_t.c.id.in_(ids[start : start + 900]))
                ).mappings()
                for r in rows:
                    out[r["id"]] = _item(dict(r))
        return out

    def get_user(self, user_id: str) -> User | None:
        with self._conn() as conn:
            r = conn.execute(sa.select(users_t).where(users_t.c.id == user_id)).mappings().first()
        if r is None:
            return None
        return User(id=r["id"], attributes=r["attributes"], created_at=_dt(r["created_at"]))

    def user_events(
        self,
        user_id: str,
        *,
        types: Sequence[EventType] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        q = sa.select(events_t).where(events_t.c.user_id == user_id)
        if types is not None:
            q = q.where(events_t.c.type.in_([t.value for t in types]))
        q = q.order_by(events_t.c.timestamp.desc(), events_t.c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return [_event(r) for r in reversed(rows)]

    def iter_events(self, *, batch_size: int = 10_000) -> Iterator[list[Event]]:
        last = 0
        while True:
            with self._conn() as conn:
                rows = [
                    dict(r)
                    for r in conn.execute(
                        sa.select(events_t)
                        .where(events_t.c.seq > last)
                        .order_by(events_t.c.seq)
                        .limit(batch_size)
                    ).mappings()
                ]
            if not rows:
                return
            last = rows[-1]["seq"]
            yield [_event(r) for r in rows]

    def events_of_type(self, event_type: EventType) -> list[Event]:
        """Every event of one type, in arrival order (decision logs, outcomes)."""
        q = sa.select(events_t).where(events_t.c.type == event_type.value).order_by(
            events_t.c.seq)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return [_event(r) for r in rows]

    def events_for_requests(self, request_ids: Sequence[str], *,
                            types: Sequence[EventType] | None = None) -> list[Event]:
        """Events citing any of ``request_ids`` (outcomes of logged decisions), in arrival
        order; read through the request-id index in chunks."""
        ids = sorted({r for r in request_ids if r})
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            q = sa.select(events_t).where(events_t.c.request_id.in_(ids[start:start + 500]))
            if types is not None:
                q = q.where(events_t.c.type.in_([t.value for t in types]))
            with self._conn() as conn:
                out += [dict(r) for r in conn.execute(q).mappings()]
        out.sort(key=lambda r: r["seq"])
        return [_event(r) for r in out]

    def events_frame(self, *, types: Sequence[EventType] | None = None) -> pd.DataFrame:
        c = events_t.c
        q = sa.select(c.user_id, c.item_id, c.type, c.timestamp).order_by(c.seq)
        if types is not None:
            q = q.where(c.type.in_([t.value for t in types]))
        with self._conn() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])

    def items_frame(self) -> pd.DataFrame:
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(items_t)).mappings()]
        cols = [c.name for c in items_t.columns]
        return pd.DataFrame(rows, columns=cols)

    def list_promotions(self) -> list[Promotion]:
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(promotions_t)).mappings()]
        return [
            Promotion(id=r["id"], text=r["text"], rules=r["rules"], start=_dt(r["start"]),
                      end=_dt(r["end"]))
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        out = {}
        with self._conn() as conn:
            for name, table in (("items", items_t), ("users", users_t), ("events", events_t),
                                ("promotions", promotions_t)):
                out[name] = int(conn.execute(sa.select(sa.func.count()).select_from(table))
                                .scalar_one())
        return out

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _item(r: dict[str, Any]) -> Item:
    r["created_at"] = _dt(r["created_at"])
    return Item(**r)


def _event(r: dict[str, Any]) -> Event:
    r.pop("seq", None)
    r["timestamp"] = _dt(r["timestamp"])
    r = {k: v for k, v in r.items() if v is not None}
    return Event(**r)
