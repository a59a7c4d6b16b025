"""SQLAlchemy-Core store: SQLite (embedded default) and PostgreSQL through one code path.

Where the two databases differ, the store picks one rule for both (``tests/store_contract.py``
runs the same known answers on each):

- **Catalog order.** ``items_frame`` and ``list_promotions`` return rows in first-insertion
  order (training numbers items in that order), kept in a ``seq`` column that the store assigns
  (max + 1, in the writing transaction) and an update leaves alone. SQLite used to give rowid
  order without being asked; PostgreSQL moves updated rows. Two writers adding new items at the
  same instant may share a ``seq``; the id breaks the tie. Files from before the column get it
  on open, filled from their rowids, so their order does not change.
- **Text.** Only ids are capped (256 characters, as in the schemas); other text columns are
  unbounded (PostgreSQL enforces ``VARCHAR(n)``, SQLite does not). U+0000 is refused in text
  columns (PostgreSQL cannot store it); inside JSON it is an escape and round-trips.
- **JSON.** NaN and Infinity are refused in JSON fields (not JSON: PostgreSQL rejects them).
- **Concurrent delivery.** ``add_events`` inserts with ``ON CONFLICT DO NOTHING`` and counts
  the rows that came back, so a retry racing its first delivery on another connection is
  skipped instead of failing on the unique id.
- **PII.** With ``scrub_pii`` (on unless ``[privacy] scrub_pii = false``) every event write
  (``add_events`` and the bulk ``add_event_rows``) masks phones, e-mails, card and ID-card
  numbers in the query and context, and ``upsert_users`` in user attributes
  (:mod:`shelfwise.privacy.scrub`): the one point the API, the impression log and imports share.
- **Erasure.** ``forget_user`` deletes by every column marked ``info={"user_id": True}`` and
  leaves a tombstone that event writes check after their insert; SQLite's write lock or a
  PostgreSQL advisory lock orders the two (:mod:`shelfwise.storage.erasure`). SQLite runs with
  ``secure_delete`` and checkpoints its WAL after an erasure, so deleted rows leave the file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from shelfwise.data.schemas import INTERACTION_TYPES, Event, EventType, Item, Promotion, User
from shelfwise.exceptions import StoreError
from shelfwise.privacy.scrub import scrub_context_json, scrub_text, scrub_value
from shelfwise.storage import erasure
from shelfwise.storage.base import (
    EVENT_ROW_COLUMNS,
    ApiKey,
    AttributeCounts,
    Erasure,
    EventRow,
    Tombstone,
    WriteResult,
    attribute_value,
)
from shelfwise.storage.groupcommit import Checkpointer, GroupCommit, WriteGate

logger = logging.getLogger(__name__)
metadata = sa.MetaData()
_INTERACTIONS_SQL = "type IN ('cart', 'click', 'purchase', 'view')"
assert {f"'{t.value}'" for t in INTERACTION_TYPES} == set(
    _INTERACTIONS_SQL.split("(")[1].rstrip(")").split(", "))
_OTHER_SQL = _INTERACTIONS_SQL.replace(" IN ", " NOT IN ", 1)
_SEARCHES_SQL = "type = 'search'"
_USER_INDEXES = (_INTERACTIONS_SQL, _OTHER_SQL)
"""The conditions of the two partial per-user event indexes: every event is in exactly one,
so a write updates one per-user index. A query by user states its index's condition literally
(:func:`~shelfwise.storage.erasure.user_match`) for the planner to use it."""
_RETIRED_INDEXES = ("ix_events_user_time", "ix_events_user_searches", "ix_events_request")
"""Indexes of stores made before the per-user indexes were split (dropped on open)."""

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
    sa.Column("language", sa.Text),
    sa.Column("created_at", sa.Float),
    sa.Column("available", sa.Boolean, nullable=False, default=True),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("seq", sa.BigInteger),  # first-insertion order, assigned by the store
    sa.Column("changed", sa.BigInteger),  # order of the last write (insert or update)
    sa.Index("ix_items_seq", "seq"),
    sa.Index("ix_items_changed", "changed"),
)

users_t = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True, info={"user_id": True}),
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
    sa.Column("user_id", sa.String(256), nullable=False,
              info={"user_id": True, "index_where": _USER_INDEXES}),
    sa.Column("item_id", sa.String(256)),
    sa.Column("query", sa.Text),
    sa.Column("request_id", sa.Text),
    sa.Column("position", sa.Integer),
    sa.Column("propensity", sa.Float),
    sa.Column("value", sa.Float),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    # the outcomes of a logged decision; most events cite no request and stay out
    sa.Index("ix_events_request_given", "request_id",
             sqlite_where=sa.text("request_id IS NOT NULL"),
             postgresql_where=sa.text("request_id IS NOT NULL")),
    # a user's interactions without scanning their impressions (which grow with every list
    # served); the query must repeat this exact condition for the planner to use it
    sa.Index("ix_events_user_interactions", "user_id", "timestamp", "seq",
             sqlite_where=sa.text(_INTERACTIONS_SQL), postgresql_where=sa.text(_INTERACTIONS_SQL)),
    # the rest of a user's events (impressions, searches, ...) by type: a cold user's search
    # queries in order; one per-user index per event keeps writes cheap
    sa.Index("ix_events_user_other", "user_id", "type", "timestamp", "seq",
             sqlite_where=sa.text(_OTHER_SQL), postgresql_where=sa.text(_OTHER_SQL)),
)

promotions_t = sa.Table(
    "promotions",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("start", sa.Float),
    sa.Column("end", sa.Float),
    sa.Column("seq", sa.BigInteger),  # first-insertion order, assigned by the store
    sa.Index("ix_promotions_seq", "seq"),
)

meta_t = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

api_keys_t = sa.Table(  # the secret is never stored: only its sha256 and last characters
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

forgotten_t = erasure.forgotten_table(metadata)  # tombstones of forgotten users

experiments_t = sa.Table(  # online experiments, as their JSON definition and state
    "experiments",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

exposures_t = sa.Table(  # the first request of each unit under each experiment
    "exposures",
    metadata,
    sa.Column("experiment_id", sa.String(256), primary_key=True),
    sa.Column("unit", sa.String(256), primary_key=True, info={"user_id": True}),
    sa.Column("variant", sa.String(256), nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
)


#: Tables whose rows keep their first-insertion order in ``seq``.
ORDERED = (items_t, promotions_t)
ITEM_COLUMNS = [c for c in items_t.columns if c.name not in ("seq", "changed")]
PROMOTION_COLUMNS = [c for c in promotions_t.columns if c.name != "seq"]
_TEXT_COLUMNS = {t.name: [c.name for c in t.columns if isinstance(c.type, sa.String)]
                 for t in metadata.tables.values()}
_JSON_COLUMNS = {t.name: [c.name for c in t.columns if isinstance(c.type, sa.JSON)]
                 for t in metadata.tables.values()}
_json_dumps = partial(json.dumps, allow_nan=False)


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

    def __init__(self, url: str, *, create: bool = True, scrub_pii: bool = True) -> None:
        self.url = url
        self.scrub_pii = scrub_pii
        kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif "connect_timeout" not in url:  # an unreachable host fails in 10 s, not minutes
            kwargs["connect_args"] = {"connect_timeout": 10}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._local = threading.local()
        self._events_writer = GroupCommit(self._commit_event_batches)
        database = self.engine.url.database
        on_file = bool(self.engine.dialect.name == "sqlite" and database
                       and database != ":memory:" and not database.startswith("file:"))
        self._gate = WriteGate(str(database)) if on_file else None
        self._checkpointer = Checkpointer(str(database)) if on_file else None
        if create:
            metadata.create_all(self.engine)
        self._add_order_columns()
        self._add_change_column()
        if create:
            self._upgrade_event_indexes()

    def _upgrade_event_indexes(self) -> None:
        """Create the event indexes a database made earlier lacks (``create_all`` skips
        existing tables), then drop the :data:`_RETIRED_INDEXES` they replace. PostgreSQL
        builds and drops them ``CONCURRENTLY``: other servers keep writing events meanwhile."""
        pg = self.engine.dialect.name == "postgresql"
        ours = {str(ix.name) for ix in events_t.indexes} | set(_RETIRED_INDEXES)
        broken = _abandoned_indexes(self.engine, "events") & ours if pg else set()
        have = _index_names(self.engine, "events") - broken
        missing = [ix for ix in events_t.indexes if ix.name not in have]
        retired = sorted(set(_RETIRED_INDEXES) & have)
        if not missing and not retired:
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in sorted(broken):  # a concurrent build that was interrupted
                logger.warning("index %s was left invalid by an interrupted build; "
                               "rebuilding it", name)
                conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for index in missing:
                ddl = str(sa.schema.CreateIndex(index).compile(dialect=self.engine.dialect))
                ddl = ddl.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS"
                                  if pg else "CREATE INDEX IF NOT EXISTS", 1)
                conn.exec_driver_sql(ddl)  # IF NOT EXISTS: another process may be first
            for name in retired:
                conn.exec_driver_sql(f"DROP INDEX {'CONCURRENTLY ' if pg else ''}"
                                     f"IF EXISTS {name}")

    def _add_order_columns(self) -> None:
        """Give tables written before insertion order was stored their ``seq`` column: SQLite
        fills it from the rowids (the order those files always returned), PostgreSQL by id."""
        inspector = sa.inspect(self.engine)
        for table in ORDERED:
            if not inspector.has_table(table.name) or "seq" in _column_names(
                    inspector, table.name):
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN seq BIGINT"))
                    if self.engine.dialect.name == "sqlite":
                        conn.execute(table.update().values(seq=sa.literal_column("rowid")))
                    else:
                        n = sa.select(table.c.id, sa.func.row_number().over(
                            order_by=table.c.id).label("n")).subquery()
                        conn.execute(table.update().values(seq=n.c.n)
                                     .where(table.c.id == n.c.id))
                    for index in table.indexes:
                        if "seq" in index.columns:  # (later columns come later)
                            index.create(conn, checkfirst=True)
            except sa.exc.DBAPIError:
                # Another process may have upgraded the table in between.
                if "seq" not in _column_names(sa.inspect(self.engine), table.name):
                    raise

    def _add_change_column(self) -> None:
        """Give an items table made before writes were numbered its ``changed`` column,
        starting from the first-insertion numbers."""
        inspector = sa.inspect(self.engine)
        if not inspector.has_table("items") or "changed" in _column_names(inspector, "items"):
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE items ADD COLUMN changed BIGINT"))
                conn.execute(items_t.update().values(changed=items_t.c.seq))
                for index in items_t.indexes:
                    if "changed" in index.columns:
                        index.create(conn, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process may have upgraded the table in between.
            if "changed" not in _column_names(sa.inspect(self.engine), "items"):
                raise

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
    def transaction(self, *, bulk: bool = False) -> Iterator[None]:
        """All writes in the block commit together or not at all. ``bulk`` (an import): on
        SQLite the connection's page cache is :data:`BULK_CACHE_KIB` for the block instead of
        SQLite's 2 MB, so that index entries inserted at random places (every event goes into
        several per-user indexes) find their pages in memory; its own size afterwards."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            big = bulk and self.engine.dialect.name == "sqlite"
            before = _cache_size(conn, -BULK_CACHE_KIB if big else None)
            try:
                with conn.begin():
                    self._local.conn = conn
                    try:
                        yield
                    finally:
                        self._local.conn = None
            finally:
                if before is not None:
                    _cache_size(conn, before)

    def _insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """The dialect's INSERT, which has ``ON CONFLICT``."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(table)
        if dialect == "postgresql":
            return postgresql.insert(table)
        raise StoreError(  # pragma: no cover - open_store refuses other URLs
            f"unsupported database {dialect!r}; use sqlite or postgresql")

    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]]) -> int:
        """Insert or replace ``rows`` by primary key; returns ``len(rows)``. A key given twice is
        stored once, with the last row's values at the first one's place in ``seq``."""
        if not rows:
            return 0
        keys = [c.name for c in table.primary_key.columns]
        batch = list({tuple(r[k] for k in keys): r for r in rows}.values())
        _refuse_nul(table, batch)
        ins = self._insert(table)
        cols = [c.name for c in table.columns if not c.primary_key and c.name != "seq"]
        stmt = ins.on_conflict_do_update(index_elements=keys,
                                         set_={c: ins.excluded[c] for c in cols})
        with self.transaction(), self._conn() as conn:
            if "seq" in table.c:  # an update keeps the row's seq: it is not in ``set_``
                top = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar() or 0
                batch = [{**r, "seq": top + k} for k, r in enumerate(batch, 1)]
            if "changed" in table.c:  # every write, insert or update, gets a new number
                top = conn.execute(sa.select(sa.func.max(table.c.changed))).scalar() or 0
                batch = [{**r, "changed": top + k} for k, r in enumerate(batch, 1)]
            self._write(conn, table, stmt, batch)
        return len(rows)

    def _write(self, conn: Connection, table: sa.Table, stmt: sa.Executable,
               rows: list[dict[str, Any]]) -> list[Any]:
        """Execute ``stmt`` over ``rows`` in chunks; the first column of any rows it returns.
        A JSON field with NaN or Infinity becomes a :class:`StoreError` naming the row."""
        out: list[Any] = []
        try:
            for start in range(0, len(rows), 5000):
                result = conn.execute(stmt, rows[start : start + 5000])
                if result.returns_rows:
                    out += result.scalars().all()
        except (ValueError, sa.exc.StatementError) as exc:
            problem = _non_json(table, rows)
            if problem is None:
                raise
            raise StoreError(problem) from exc
        return out

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
            {"id": u.id, "created_at": _ts(u.created_at),
             "attributes": scrub_value(u.attributes) if self.scrub_pii else u.attributes}
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
        rows = [
            (ev.id, ev.type.value, ev.user_id, ev.item_id, ev.query, ev.request_id,
             ev.position, ev.propensity, ev.value, ev.timestamp.timestamp(),
             _event_context(ev.id, ev.context))
            for ev in events
        ]
        return self.add_event_rows(rows)

    def add_event_rows(self, rows: Sequence[EventRow]) -> WriteResult:
        """Insert validated event tuples (:data:`EVENT_ROW_COLUMNS` order, context as JSON
        text) with one driver-level ``executemany``: the bulk path of imports and ingestion.

        ``ON CONFLICT DO NOTHING`` skips ids already stored, repeats within ``rows`` and a
        concurrent delivery of the same id; the driver's row count is what was written.
        Batches that threads post at the same time share one transaction and one commit
        (:mod:`shelfwise.storage.groupcommit`), each still all or nothing."""
        if not rows:
            return WriteResult(0, 0)
        if self.scrub_pii:
            rows = [_scrubbed(r) for r in rows]
        _refuse_nul_rows(rows)
        if getattr(self._local, "conn", None) is not None:  # inside the caller's transaction
            return self._write_event_batches([rows])[0]
        return self._events_writer.submit(rows)

    def _commit_event_batches(self, batches: Sequence[Sequence[EventRow]]
                              ) -> list[WriteResult]:
        """:class:`GroupCommit`'s write (never inside a caller's transaction): the batches
        under the writer gate, then a nudge to the background checkpoint."""
        with self._gate.held() if self._gate is not None else nullcontext():
            out = self._write_event_batches(batches)
        if self._checkpointer is not None:
            self._checkpointer.poke()
        return out

    def _write_event_batches(self, batches: Sequence[Sequence[EventRow]]) -> list[WriteResult]:
        """Insert the batches in one transaction (joining the caller's, if any), each batch
        counted apart."""
        with self.transaction(), self._conn() as conn:
            erasure.lock(conn, exclusive=False)
            written = [self._insert_event_rows(conn, rows) for rows in batches]
            if erasure.any_tombstone(conn, metadata):  # after the inserts: see erasure.py
                written = [w - erasure.drop_forgotten(conn, metadata, [(r[0], r[2], r[9])
                                                                       for r in rows])
                           for w, rows in zip(written, batches, strict=True)]
            return [WriteResult(w, len(rows) - w) for w, rows in zip(written, batches,
                                                                    strict=True)]

    def _insert_event_rows(self, conn: Connection, rows: Sequence[EventRow]) -> int:
        """``INSERT ... ON CONFLICT (id) DO NOTHING`` with one driver-level ``executemany``
        per 50,000 rows; the rows written."""
        mark = "?" if self.engine.dialect.name == "sqlite" else "%s"
        names = ", ".join(f'"{c}"' for c in EVENT_ROW_COLUMNS)
        sql = (f"INSERT INTO events ({names}) VALUES "
               f"({', '.join([mark] * len(EVENT_ROW_COLUMNS))}) ON CONFLICT (id) DO NOTHING")
        written = 0
        for start in range(0, len(rows), 50_000):
            chunk = list(rows[start : start + 50_000])
            written += max(conn.exec_driver_sql(sql, chunk).rowcount, 0)
        return written

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
                    sa.select(*ITEM_COLUMNS).where(items_t.c.id.in_(ids[start : start + 900]))
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
        q = sa.select(events_t).where(erasure.user_match(events_t.c.user_id, user_id))
        if types is not None:
            q = q.where(events_t.c.type.in_([t.value for t in types]))
        q = q.order_by(events_t.c.timestamp.desc(), events_t.c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return [_event(r) for r in reversed(rows)]

    def interaction_items(self, user_id: str, *, limit: int | None = None) -> list[str]:
        """Item ids of the user's view/click/cart/purchase events, oldest first; the last
        ``limit``. The hot read of every feed: one indexed query, no model objects."""
        sql = (f"SELECT item_id FROM events WHERE user_id = :u AND {_INTERACTIONS_SQL} "
               "ORDER BY timestamp DESC, seq DESC" + (" LIMIT :n" if limit is not None else ""))
        params: dict[str, Any] = {"u": user_id} | ({"n": limit} if limit is not None else {})
        with self._conn() as conn:
            ids = [r[0] for r in conn.execute(sa.text(sql), params).fetchall()]
        ids.reverse()
        return ids

    def search_queries(self, user_id: str, *, limit: int = 5) -> list[str]:
        """The user's last ``limit`` search queries, oldest first; one indexed query (the
        partial index of non-interaction events, whose condition it repeats literally)."""
        sql = (f"SELECT query FROM events WHERE user_id = :u AND {_OTHER_SQL} "
               f"AND {_SEARCHES_SQL} "
               "ORDER BY timestamp DESC, seq DESC LIMIT :n")
        with self._conn() as conn:
            rows = conn.execute(sa.text(sql), {"u": user_id, "n": limit}).fetchall()
        return [str(r[0]) for r in reversed(rows) if r[0]]

    def sample_user_attributes(self, limit: int = 10_000) -> list[dict[str, Any]]:
        """Attributes of at most ``limit`` users (in id order), to learn which keys exist."""
        q = (sa.select(users_t.c.attributes)
             .where(sa.cast(users_t.c.attributes, sa.Text) != "{}")
             .order_by(users_t.c.id).limit(limit))
        with self._conn() as conn:
            return [dict(r[0]) for r in conn.execute(q).all() if r[0]]

    def attribute_popularity(self, key: str, *, since: datetime | None = None
                             ) -> AttributeCounts:
        """Distinct users per (value of attribute ``key``, item) over interaction events, and
        per value the distinct users with any interaction; values as
        :func:`~shelfwise.storage.base.attribute_value` spells them (non-scalar ones left
        out). Two aggregate queries driven by the users table (each user's interactions
        through their partial index); no user id leaves the database."""
        value = sa.cast(users_t.c.attributes[key], sa.Text).label("v")
        e = events_t.c
        joined = users_t.join(events_t, e.user_id == users_t.c.id)
        recent = [e.timestamp >= _ts(since)] if since is not None else []
        cond = sa.and_(sa.text(_INTERACTIONS_SQL), value.isnot(None), value != "null", *recent)
        users_q = (sa.select(value, sa.func.count(sa.distinct(e.user_id)))
                   .select_from(joined).where(cond).group_by(value))
        items_q = (sa.select(value, e.item_id, sa.func.count(sa.distinct(e.user_id)))
                   .select_from(joined).where(cond).group_by(value, e.item_id))
        with self._conn() as conn:
            sizes = conn.execute(users_q).all()
            rows = conn.execute(items_q).all()
        users: dict[str, int] = {}
        for raw, n in sizes:
            v = _json_value(raw)
            if v is not None:
                users[v] = users.get(v, 0) + int(n)
        items: dict[tuple[str, str], int] = {}
        for raw, item, n in rows:
            v = _json_value(raw)
            if v is not None and item is not None:
                items[v, item] = items.get((v, item), 0) + int(n)
        return AttributeCounts(key, users, [(v, i, n) for (v, i), n in sorted(items.items())])

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

    def events_window(self, types: Sequence[EventType], since: datetime,
                      until: datetime | None = None, *,
                      context_path: Sequence[str] | None = None) -> pd.DataFrame:
        """Events of ``types`` with ``since <= timestamp < until``, in arrival order, with
        what an experiment report or a replay joins on (user, item, type, request id, value,
        propensity, time, context). With ``context_path`` only events whose context has a
        value there, and ``context`` is that value as text (the database extracts it: no
        context is parsed)."""
        c = events_t.c
        ctx: Any = c.context
        where: list[Any] = [c.type.in_([t.value for t in types]), c.timestamp >= _ts(since)]
        if until is not None:
            where.append(c.timestamp < _ts(until))
        if context_path:
            ctx = c.context[tuple(context_path)].as_string()
            where.append(ctx.is_not(None))
        q = (sa.select(c.user_id, c.item_id, c.type, c.request_id, c.value, c.propensity,
                       c.timestamp, ctx.label("context"), c.query).where(*where)
             .order_by(c.seq))
        with self._conn() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "type", "request_id", "value",
                                           "propensity", "timestamp", "context", "query"])

    def _day(self, column: Any) -> Any:
        """Days since the epoch of an epoch-seconds column (SQLite's CAST truncates, which
        is the floor for times after 1970; PostgreSQL's rounds, so it floors first)."""
        days = column / 86400
        if self.engine.dialect.name != "sqlite":
            days = sa.func.floor(days)
        return sa.cast(days, sa.BigInteger)

    def daily_event_counts(self, *, after_seq: int = 0, item_id: str | None = None
                           ) -> tuple[pd.DataFrame, int]:
        c = events_t.c
        day = self._day(c.timestamp).label("day")
        where: list[Any] = [c.seq > after_seq]
        if item_id is not None:
            where.append(c.item_id == item_id)
        with self._conn() as conn:
            last = conn.execute(sa.select(sa.func.max(c.seq))).scalar_one_or_none()
            if last is None or last <= after_seq:
                return pd.DataFrame(columns=["day", "type", "n"]), after_seq
            where.append(c.seq <= last)  # rows stored while this runs count next time
            rows = conn.execute(sa.select(day, c.type, sa.func.count().label("n"))
                                .where(*where).group_by(day, c.type)).all()
        frame = pd.DataFrame(rows, columns=["day", "type", "n"])
        return frame.astype({"day": "int64", "n": "int64"}), int(last)

    def user_first_days(self) -> pd.Series:
        c = events_t.c
        first = (sa.select(sa.func.min(c.timestamp).label("t")).group_by(c.user_id)
                 .subquery())
        day = self._day(first.c.t).label("day")
        with self._conn() as conn:
            rows = conn.execute(sa.select(day, sa.func.count()).group_by(day)
                                .order_by(day)).all()
        return pd.Series({int(d): int(n) for d, n in rows}, dtype="int64")

    def item_created_days(self) -> pd.Series:
        c = items_t.c
        day = self._day(c.created_at).label("day")
        with self._conn() as conn:
            rows = conn.execute(sa.select(day, sa.func.count()).where(
                c.created_at.is_not(None)).group_by(day).order_by(day)).all()
        return pd.Series({int(d): int(n) for d, n in rows}, dtype="int64")

    def items_frame(self) -> pd.DataFrame:
        """The catalog in first-insertion order (training numbers items in this order)."""
        q = sa.select(*ITEM_COLUMNS).order_by(items_t.c.seq, items_t.c.id)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return pd.DataFrame(rows, columns=[c.name for c in ITEM_COLUMNS])

    def item_change(self) -> int:
        with self._conn() as conn:
            return int(conn.execute(sa.select(sa.func.max(items_t.c.changed))).scalar() or 0)

    def items_changed_after(self, change: int) -> list[tuple[str, int]]:
        c = items_t.c
        q = sa.select(c.id, c.changed).where(c.changed > change).order_by(c.changed, c.id)
        with self._conn() as conn:
            return [(str(r[0]), int(r[1])) for r in conn.execute(q).all()]

    def list_promotions(self) -> list[Promotion]:
        """Every promotion, in first-insertion order."""
        q = sa.select(*PROMOTION_COLUMNS).order_by(promotions_t.c.seq, promotions_t.c.id)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
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

    # ---- experiments ------------------------------------------------------------------
    def put_experiment(self, experiment_id: str, doc: dict[str, Any]) -> None:
        """Create or replace one experiment's definition and state."""
        self._upsert(experiments_t, [{"id": experiment_id, "doc": doc,
                                      "updated_at": datetime.now(UTC).timestamp()}])

    def get_experiment(self, experiment_id: str) -> dict[str, Any] | None:
        with self._conn() as conn:
            doc = conn.execute(sa.select(experiments_t.c.doc)
                               .where(experiments_t.c.id == experiment_id)).scalar_one_or_none()
        return None if doc is None else dict(doc)

    def list_experiments(self) -> list[dict[str, Any]]:
        """Every experiment's document, by id."""
        with self._conn() as conn:
            docs = conn.execute(sa.select(experiments_t.c.doc)
                                .order_by(experiments_t.c.id)).scalars().all()
        return [dict(d) for d in docs]

    def add_exposures(self, rows: Sequence[tuple[str, str, str, datetime]]) -> int:
        """Record (experiment id, unit, variant, time) once per unit and experiment (a
        unit seen again keeps its first time); how many were new. Like event writes, an
        exposure dated at or before its unit's erasure is refused (a late write from a queue)."""
        if not rows:
            return 0
        stmt = self._insert(exposures_t).on_conflict_do_nothing(
            index_elements=["experiment_id", "unit"]).returning(exposures_t.c.unit)
        with self.transaction(), self._conn() as conn:
            erasure.lock(conn, exclusive=False)  # orders this write and any erasure
            gone = erasure.forgotten_at(conn, metadata, {u for _, u, _, _ in rows})
            batch = [{"experiment_id": e, "unit": u, "variant": v, "first_seen": _ts(t)}
                     for e, u, v, t in rows if u not in gone or (_ts(t) or 0.0) > gone[u]]
            _refuse_nul(exposures_t, batch)
            return len(self._write(conn, exposures_t, stmt, batch)) if batch else 0

    def exposures(self, experiment_id: str) -> pd.DataFrame:
        """The experiment's units: unit, variant, first_seen (epoch seconds)."""
        c = exposures_t.c
        q = sa.select(c.unit, c.variant, c.first_seen).where(c.experiment_id == experiment_id)
        with self._conn() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["unit", "variant", "first_seen"])

    def exposed_events(self, experiment_id: str, types: Sequence[EventType],
                       since: datetime, until: datetime | None = None, *,
                       context_path: Sequence[str] | None = None) -> pd.DataFrame:
        """:meth:`events_window` restricted to the experiment's units (a join through the
        events' user index, so a report reads only its own units' rows)."""
        c, x = events_t.c, exposures_t.c
        ctx: Any = c.context[tuple(context_path)].as_string() if context_path else c.context
        where: list[Any] = [x.experiment_id == experiment_id,
                            c.type.in_([t.value for t in types]), c.timestamp >= _ts(since)]
        if until is not None:
            where.append(c.timestamp < _ts(until))
        q = (sa.select(c.user_id, c.item_id, c.type, c.request_id, c.value, c.propensity,
                       c.timestamp, ctx.label("context"))
             .select_from(exposures_t.join(events_t, erasure.user_match(c.user_id, x.unit)))
             .where(*where).order_by(c.seq))
        with self._conn() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "type", "request_id", "value",
                                           "propensity", "timestamp", "context"])

    # ---- API keys ---------------------------------------------------------------------
    def add_api_key(self, key: ApiKey) -> None:
        row = {"id": key.id, "name": key.name, "scope": key.scope, "key_hash": key.key_hash,
               "hint": key.hint, "created_at": _ts(key.created_at),
               "revoked_at": _ts(key.revoked_at)}
        _refuse_nul(api_keys_t, [row])
        try:
            with self._conn() as conn:
                conn.execute(api_keys_t.insert(), row)
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"api key {key.id!r}: its id or hash is already stored") from exc

    def api_key(self, key_hash: str) -> ApiKey | None:
        q = sa.select(api_keys_t).where(api_keys_t.c.key_hash == key_hash)
        with self._conn() as conn:
            r = conn.execute(q).mappings().first()
        return None if r is None else _api_key(dict(r))

    def list_api_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        q = sa.select(api_keys_t).order_by(api_keys_t.c.created_at, api_keys_t.c.id)
        if not revoked:
            q = q.where(api_keys_t.c.revoked_at.is_(None))
        with self._conn() as conn:
            return [_api_key(dict(r)) for r in conn.execute(q).mappings()]

    def revoke_api_key(self, key_id: str) -> ApiKey | None:
        c = api_keys_t.c
        stmt = (api_keys_t.update().where(c.id == key_id, c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC).timestamp()).returning(*api_keys_t.c))
        with self._conn() as conn:
            r = conn.execute(stmt).mappings().first()
        return None if r is None else _api_key(dict(r))

    # ---- forgetting users, retention (statements in storage/erasure.py) -----------------
    def forget_user(self, user_id: str) -> Erasure:
        with self.transaction(), self._conn() as conn:
            out = erasure.forget(conn, metadata, user_id)
        self._checkpoint()
        return out

    def tombstones(self, after: int = 0) -> list[Tombstone]:
        with self._conn() as conn:
            return erasure.tombstones(conn, metadata, after)

    def drop_events_before(self, cutoff: datetime) -> int:
        with self.transaction(), self._conn() as conn:
            n = erasure.drop_before(conn, metadata, cutoff)
        if n:
            self._checkpoint()
        return n

    def _checkpoint(self) -> None:
        """SQLite keeps old page images in the write-ahead log until a checkpoint: move them
        into the file (where ``secure_delete`` has zeroed deleted rows) and empty the log.
        Best effort, a few tries within ~3 s: a checkpoint already running (the background
        one) makes this one answer "busy" rather than wait, and a reader inside an old
        snapshot keeps its frames."""
        if self.engine.dialect.name == "sqlite" and getattr(self._local, "conn", None) is None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout = 1000")
                try:
                    for attempt in range(3):
                        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                        if row is None or not row[0]:  # (busy, log frames, checkpointed)
                            break
                        time.sleep(0.1 * (attempt + 1))
                finally:
                    conn.exec_driver_sql("PRAGMA busy_timeout = 30000")  # connect_args timeout

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()
        if self._gate is not None:
            self._gate.close()


def _column_names(inspector: sa.Inspector, table: str) -> set[str]:
    return {c["name"] for c in inspector.get_columns(table)}


def _index_names(engine: Engine, table: str) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(engine).get_indexes(table)}


def _abandoned_indexes(engine: Engine, table: str) -> set[str]:
    """PostgreSQL: indexes of ``table`` left invalid by an interrupted ``CREATE INDEX
    CONCURRENTLY`` (no build of them in progress). Such an index is kept up to date by every
    write but never read, and ``IF NOT EXISTS`` would keep it forever."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:table) AND NOT i.indisvalid AND NOT EXISTS ("
            "SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)"
        ), {"table": table})
        return {str(r[0]) for r in rows}


def _row_name(table: sa.Table, row: dict[str, Any]) -> str:
    return f"{table.name} {row.get('id', row.get('key'))!r}"


def _refuse_nul(table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL text cannot hold U+0000, so no backend takes it (nothing is written)."""
    cols = _TEXT_COLUMNS[table.name]
    for row in rows:
        for col in cols:
            value = row.get(col)
            if isinstance(value, str) and "\x00" in value:
                raise StoreError(f"{_row_name(table, row)}: {col} contains a NUL character "
                                 "(U+0000), which the store does not keep in text")


def _refuse_nul_rows(rows: Sequence[EventRow]) -> None:
    """:func:`_refuse_nul` for event tuples: one C-level scan per column, rows named only
    when a NUL is there."""
    for k, col in enumerate(EVENT_ROW_COLUMNS):
        if col in _TEXT_COLUMNS["events"]:
            values = [v for r in rows if isinstance(v := r[k], str)]
            if "\x00" in "".join(values):
                row = next(r for r in rows if isinstance(v := r[k], str) and "\x00" in v)
                raise StoreError(f"events {row[0]!r}: {col} contains a NUL character "
                                 "(U+0000), which the store does not keep in text")


_QUERY, _CONTEXT = EVENT_ROW_COLUMNS.index("query"), EVENT_ROW_COLUMNS.index("context")


def _scrubbed(row: EventRow) -> EventRow:
    """``row`` with PII masked in its query and context (the same tuple when there is none)."""
    query, context = row[_QUERY], row[_CONTEXT]
    clean_q = scrub_text(query) if isinstance(query, str) else query
    clean_c = scrub_context_json(context) if isinstance(context, str) else context
    if clean_q == query and clean_c == context:
        return row
    out = list(row)
    out[_QUERY], out[_CONTEXT] = clean_q, clean_c
    return cast(EventRow, tuple(out))


def _event_context(event_id: str, context: dict[str, Any]) -> str:
    """An event's context as JSON text; NaN or Infinity is a :class:`StoreError`."""
    if not context:  # most events: json.dumps would cost ~2 us each
        return "{}"
    try:
        return _json_dumps(context)
    except ValueError:
        raise StoreError(f"events {event_id!r}: context holds NaN or Infinity, which JSON "
                         "cannot store") from None


def _non_json(table: sa.Table, rows: list[dict[str, Any]]) -> str | None:
    """Which row and field hold a number JSON cannot write (after a failed write)."""
    for row in rows:
        for col in _JSON_COLUMNS[table.name]:
            try:
                _json_dumps(row.get(col))
            except ValueError:
                return (f"{_row_name(table, row)}: {col} holds NaN or Infinity, "
                        "which JSON cannot store")
    return None


BULK_CACHE_KIB = 65_536
"""SQLite page cache of a bulk write (imports): 1M events into the 100k bench shop's store
took 16.6-17.3 s with it against 20.0-20.9 s with SQLite's default 2 MB, for 63 MB more
peak RSS; 256 MB was no faster, 16 MB 19.6 s."""


def _cache_size(conn: Connection, size: int | None) -> int | None:
    """Set a SQLite connection's ``PRAGMA cache_size`` (negative: KiB; positive: pages) on
    the driver's connection, so SQLAlchemy begins no transaction; the size it had (None,
    and nothing done, when ``size`` is None)."""
    if size is None:
        return None
    cur = conn.connection.cursor()
    try:
        cur.execute("PRAGMA cache_size")
        (before,) = cur.fetchone() or (-2000,)  # SQLite's default
        cur.execute(f"PRAGMA cache_size={int(size)}")
    finally:
        cur.close()
    return int(before)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA wal_autocheckpoint=10000")  # servers checkpoint in the background
    cur.execute("PRAGMA secure_delete=ON")  # a forgotten user's rows are zeroed, not just freed
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _json_value(raw: object) -> str | None:
    """An attribute value as the database returned it (JSON text) in its canonical spelling."""
    if raw is None:
        return None
    try:
        return attribute_value(json.loads(str(raw)))
    except ValueError:
        return None


def _item(r: dict[str, Any]) -> Item:
    r["created_at"] = _dt(r["created_at"])
    return Item(**r)


def _api_key(r: dict[str, Any]) -> ApiKey:
    return ApiKey(**{**r, "created_at": _dt(r["created_at"]), "revoked_at": _dt(r["revoked_at"])})


def _event(r: dict[str, Any]) -> Event:
    r.pop("seq", None)
    r["timestamp"] = _dt(r["timestamp"])
    r = {k: v for k, v in r.items() if v is not None}
    return Event(**r)
