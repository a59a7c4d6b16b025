"""Every read and erasure by user goes through an index on SQLite and PostgreSQL, though each
event is in only one of the two partial per-user indexes; files with the older indexes are
upgraded on open."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.storage import SqlStore, open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = [EventType.VIEW, EventType.IMPRESSION, EventType.CLICK, EventType.SEARCH,
         EventType.PURCHASE, EventType.IMPRESSION, EventType.CART]


def _events(user: str, n: int = 14) -> list[Event]:
    out = []
    for k in range(n):
        kind = TYPES[k % len(TYPES)]
        out.append(Event(id=f"{user}-{k}", type=kind, user_id=user,
                         item_id=None if kind is EventType.SEARCH else f"i{k % 5}",
                         query="red shoes" if kind is EventType.SEARCH else None,
                         request_id=f"r-{user}-{k}" if kind is EventType.IMPRESSION else None,
                         timestamp=T0 + timedelta(minutes=k)))
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").new_database()
    s = open_store(url)
    assert isinstance(s, SqlStore)
    s.upsert_items([Item(id=f"i{k}") for k in range(5)])
    for user in ("u1", "u2", "u3"):
        s.add_events(_events(user))
    s.add_exposures([("exp", "u1", "a", T0), ("exp", "u2", "b", T0)])
    yield s
    s.close()


def _statements(store: SqlStore, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The statements on the events table that ``call`` ran, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "events" in statement and statement.lstrip().upper().startswith(("SELECT",
                                                                            "DELETE")):
            seen.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", grab)
    assert seen, "the call ran no statement on events"
    return seen


def _plan(store: SqlStore, statement: str, params: Any) -> str:
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
            return "\n".join(str(r[3]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")  # a plan without an index pays
        rows = conn.exec_driver_sql(f"EXPLAIN {statement}", params).all()
        return "\n".join(str(r[0]) for r in rows)


def _scans_events(plan: str) -> bool:
    """A full scan of events: SQLite's ``SCAN events`` (or its alias ``e``), PostgreSQL's
    ``Seq Scan on events``."""
    return bool(re.search(r"^\s*SCAN (events|e)\b|Seq Scan on events", plan, re.MULTILINE))


def test_reads_and_erasure_by_user_use_the_partial_indexes(store: SqlStore) -> None:
    types = [EventType.CLICK, EventType.IMPRESSION]
    calls: dict[str, Callable[[], Any]] = {
        "history": lambda: store.interaction_items("u1", limit=5),
        "searches": lambda: store.search_queries("u1"),
        "all events": lambda: store.user_events("u1"),
        "mixed types": lambda: store.user_events("u1", types=types, limit=3),
        "experiment": lambda: store.exposed_events("exp", types, T0),
        "outcomes": lambda: store.events_for_requests(["r-u1-1", "r-u2-5"]),
        "forget": lambda: store.forget_user("u3"),
    }
    for name, call in calls.items():
        for statement, params in _statements(store, call):
            plan = _plan(store, statement, params)
            assert not _scans_events(plan), f"{name}: {statement}\n{plan}"
            assert "ix_events_" in plan, f"{name}: no event index in\n{plan}"


def test_reads_by_user_return_every_event_in_order(store: SqlStore) -> None:
    every = _events("u1")
    assert [e.id for e in store.user_events("u1")] == [e.id for e in every]
    mixed = store.user_events("u1", types=[EventType.CLICK, EventType.IMPRESSION], limit=3)
    assert [e.id for e in mixed] == ["u1-8", "u1-9", "u1-12"]
    assert store.interaction_items("u1") == [e.item_id for e in every
                                             if e.type.value in ("view", "click", "purchase",
                                                                 "cart")]
    assert store.search_queries("u1") == ["red shoes", "red shoes"]
    frame = store.exposed_events("exp", [EventType.PURCHASE, EventType.IMPRESSION], T0)
    assert sorted(frame["user_id"].unique()) == ["u1", "u2"]
    assert len(frame) == 2 * 6  # per unit: two purchases and four impressions
    gone = store.forget_user("u2")
    assert gone.rows["events"] == 14
    assert store.user_events("u2") == [] and store.interaction_items("u2") == []
    assert len(store.user_events("u1")) == 14


OLD_INDEXES = [
    "CREATE INDEX ix_events_user_time ON events (user_id, timestamp, seq)",
    "CREATE INDEX ix_events_request ON events (request_id)",
    "CREATE INDEX ix_events_user_searches ON events (user_id, timestamp, seq) "
    "WHERE type = 'search'",
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_store_with_the_older_event_indexes_is_upgraded_on_open(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_cluster").new_database())
    store = open_store(url)
    store.add_events(_events("u1"))
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the indexes as stores made before the split have them
        conn.exec_driver_sql("DROP INDEX ix_events_user_other")
        conn.exec_driver_sql("DROP INDEX ix_events_request_given")
        for ddl in OLD_INDEXES:
            conn.exec_driver_sql(ddl)
    engine.dispose()
    again = open_store(url)
    try:
        assert isinstance(again, SqlStore)
        names = {ix["name"] for ix in sa.inspect(again.engine).get_indexes("events")
                 if str(ix["name"]).startswith("ix_")}  # not PostgreSQL's unique id key
        assert names == {"ix_events_user_interactions", "ix_events_user_other",
                         "ix_events_request_given"}
        assert [e.id for e in again.user_events("u1")] == [e.id for e in _events("u1")]
        assert again.search_queries("u1") == ["red shoes", "red shoes"]
    finally:
        again.close()


def test_each_event_enters_one_per_user_index(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'shop.db'}")
    try:
        assert isinstance(store, SqlStore)
        store.add_events(_events("u1"))
        with store.engine.connect() as conn:
            inter = conn.exec_driver_sql(
                "SELECT count(*) FROM events INDEXED BY ix_events_user_interactions WHERE "
                "user_id = 'u1' AND type IN ('cart', 'click', 'purchase', 'view')").scalar()
            other = conn.exec_driver_sql(
                "SELECT count(*) FROM events INDEXED BY ix_events_user_other WHERE "
                "user_id = 'u1' AND type NOT IN ('cart', 'click', 'purchase', 'view')"
            ).scalar()
        assert (inter, other) == (8, 6)
    finally:
        store.close()


def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt_on_open(
        pg_cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL: an interrupted ``CREATE INDEX CONCURRENTLY`` leaves an invalid index that
    every write maintains and no read uses; ``IF NOT EXISTS`` alone would keep it forever."""
    url = pg_cluster.new_database()
    store = open_store(url)
    store.add_events(_events("u1"))
    store.close()
    engine = sa.create_engine(url)
    valid = ("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
             "WHERE c.relname = 'ix_events_user_interactions'")
    with engine.begin() as conn:  # what the interrupted build leaves behind
        conn.exec_driver_sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                             "'ix_events_user_interactions'::regclass")
        assert conn.exec_driver_sql(valid).scalar() is False
    again = open_store(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql(valid).scalar() is True
        assert "left invalid by an interrupted build" in caplog.text
        assert [e.id for e in again.user_events("u1")] == [e.id for e in _events("u1")]
    finally:
        again.close()
        engine.dispose()
