"""The store contract over SQLite (file-based), plus what only SQLite and ``open_store`` promise.

A PostgreSQL backend joins by subclassing :class:`StoreContract` with a factory that creates
a fresh database per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shelfwise.data.schemas import Item
from shelfwise.exceptions import ConfigError
from shelfwise.storage import SqlStore, Store, open_store
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

    def test_items_frame_keeps_first_insertion_order(self, store: Store) -> None:
        # Current SQLite behaviour (no ORDER BY: rowid order). Training builds its item index
        # from this order; a backend without it (PostgreSQL moves updated rows) needs one.
        store.upsert_items([Item(id="b"), Item(id="c"), Item(id="a")])
        store.upsert_items([Item(id="c", title="updated"), Item(id="0")])
        assert store.items_frame()["id"].tolist() == ["b", "c", "a", "0"]


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
