"""The write-behind impression log against a real store: a row the database refuses is set
aside instead of blocking every later batch; a store that cannot write keeps the queue."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from shelfwise.exceptions import StoreError
from shelfwise.services.impressions import ImpressionLog, ImpressionsConfig
from shelfwise.storage import open_store

QUIET = ImpressionsConfig(flush_seconds=60)
"""The background writer waits a minute: these tests flush by hand."""


def stored_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM events")).scalars())
    engine.dispose()
    return ids


def test_a_refused_row_is_set_aside_and_the_rest_is_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    impressions = ImpressionLog(store, QUIET)
    impressions.log("feed", "r1", "u1", [f"i{k}" for k in range(7)])
    good = impressions._queue[0]
    bad = (f"{good[0]}-bad", *good[1:9], None, good[10])  # no timestamp: NOT NULL refuses it
    impressions._queue.insert(3, bad)
    impressions.log("feed", "r2", "u2", ["i1", "i2"])
    with caplog.at_level(logging.ERROR, "shelfwise.services.impressions"):
        assert impressions.flush() == 9
    assert impressions.refused_ == 1 and impressions.pending() == 0
    assert "r1:shown:0-bad" in caplog.text
    assert stored_ids(url) == {f"r1:shown:{k}" for k in range(7)} | {"r2:shown:0",
                                                                      "r2:shown:1"}
    impressions.log("feed", "r3", "u1", ["i3"])  # later batches are not blocked
    assert impressions.flush() == 1 and impressions.written_ == 10
    impressions.close()
    store.close()


def test_a_store_that_cannot_write_keeps_the_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    impressions = ImpressionLog(store, QUIET)
    impressions.log("feed", "r1", "u1", ["i1", "i2"])
    gate = store._gate  # type: ignore[attr-defined]
    gate.timeout = 0.2  # give up on the writer lock after 0.2 s instead of 30
    with open(gate.path, "a+") as held:  # another process (a long import) is writing
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="has held"):
            impressions.flush()
        assert impressions.pending() == 2 and impressions.refused_ == 0
        fcntl.flock(held, fcntl.LOCK_UN)
    assert impressions.flush() == 2
    assert stored_ids(url) == {"r1:shown:0", "r1:shown:1"}
    impressions.close()
    store.close()
