"""The store contract over SQLite (file-based) and PostgreSQL (a fresh database per store on the
session's private server, ``tests/pg.py``), plus what only SQLite and ``open_store`` promise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shelfwise.data.schemas import Item
from shelfwise.exceptions import ConfigError
from shelfwise.storage import SqlStore, Store, open_store
from tests.pg import PgCluster
from tests.store_contract import StoreContract, StoreFactory


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[StoreFactory]:
        made: list[Store] = []

        def make() -> Store:
            store = open_store(f"sqlite:///{tmp_path / f'store{len(made)}' / 'shop.db'}")
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()

    def test_is_durable_wal_with_full_sync(self, store: Store) -> None:
        assert isinstance(store, SqlStore)
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL

    def test_close_checkpoints_the_write_ahead_log(self, store: Store) -> None:
        store.upsert_items([Item(id="i1")])
        db = Path(store.url.removeprefix("sqlite:///"))
        assert db.with_name("shop.db-wal").exists()
        store.close()
        assert not db.with_name("shop.db-wal").exists()


#: The catalog tables as versions before the ``seq`` (insertion order) column created them.
LEGACY_TABLES = [
    "CREATE TABLE items (id VARCHAR(256) NOT NULL, title TEXT NOT NULL, description TEXT NOT "
    "NULL, category JSON NOT NULL, brand TEXT, price FLOAT, tags JSON NOT NULL, language "
    "VARCHAR(16), created_at FLOAT, available BOOLEAN NOT NULL, attributes JSON NOT NULL, "
    "PRIMARY KEY (id))",
    'CREATE TABLE promotions (id VARCHAR(256) NOT NULL, text TEXT NOT NULL, rules JSON NOT '
    'NULL, start FLOAT, "end" FLOAT, PRIMARY KEY (id))',
]


def test_sqlite_file_from_before_the_order_column_keeps_its_order(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        for ddl in LEGACY_TABLES:
            conn.execute(sa.text(ddl))
        for item in ("b", "c", "a"):
            conn.execute(sa.text("INSERT INTO items VALUES (:id, '', '', '[]', NULL, NULL, "
                                 "'[]', NULL, NULL, 1, '{}')"), {"id": item})
        conn.execute(sa.text("UPDATE items SET title = 'updated' WHERE id = 'c'"))
        for promo in ("p2", "p1"):
            conn.execute(sa.text("INSERT INTO promotions VALUES (:id, 't', '{}', NULL, NULL)"),
                         {"id": promo})
    engine.dispose()
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.items_frame()["id"].tolist() == ["b", "c", "a"]
        assert [i for i, _ in store.items_changed_after(0)] == ["b", "c", "a"]
        store.upsert_items([Item(id="0"), Item(id="b", title="again")])
        assert store.items_frame()["id"].tolist() == ["b", "c", "a", "0"]
        assert [i for i, _ in store.items_changed_after(3)] == ["0", "b"]
        assert [p.id for p in store.list_promotions()] == ["p2", "p1"]
        assert store.get_item("c") == Item(id="c", title="updated")
    finally:
        store.close()
    again = open_store(f"sqlite:///{db}")  # upgraded once; reopening changes nothing
    try:
        assert again.items_frame()["id"].tolist() == ["b", "c", "a", "0"]
        assert isinstance(again, SqlStore)
        indexes = {ix["name"] for ix in sa.inspect(again.engine).get_indexes("items")}
        assert {"ix_items_seq", "ix_items_changed"} <= indexes
    finally:
        again.close()


def test_open_store_expands_home_and_creates_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///~/deep/er/shop.db")
    try:
        store.upsert_items([Item(id="i1")])
        assert store.url == f"sqlite:///{tmp_path}/home/deep/er/shop.db"
        assert (tmp_path / "home" / "deep" / "er" / "shop.db").is_file()
        assert not (tmp_path / "~").exists()
    finally:
        store.close()


def test_open_store_rejects_unknown_schemes() -> None:
    with pytest.raises(ConfigError, match="unsupported store URL 'mysql://x/db'"):
        open_store("mysql://x/db")


class TestPostgresStore(StoreContract):
    """The same contract over PostgreSQL (``postgresql+psycopg://``, unix socket)."""

    @pytest.fixture
    def make_store(self, pg_cluster: PgCluster) -> Iterator[StoreFactory]:
        made: list[Store] = []

        def make() -> Store:
            store = open_store(pg_cluster.new_database())
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()
