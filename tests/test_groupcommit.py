"""Group commit and the SQLite writer gate (shelfwise.storage.groupcommit)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shelfwise.exceptions import StoreError
from shelfwise.storage.groupcommit import Checkpointer, GroupCommit, WriteGate


class Recorder:
    """A write that takes a little while, refuses batches holding a negative number and
    records the groups it was given."""

    def __init__(self) -> None:
        self.groups: list[list[list[int]]] = []
        self.lock = threading.Lock()

    def __call__(self, batches: Sequence[list[int]]) -> list[int]:
        with self.lock:
            self.groups.append(list(batches))
        time.sleep(0.02)
        if any(x < 0 for b in batches for x in b):
            raise ValueError(f"negative in {[b for b in batches if min(b) < 0]}")
        return [sum(b) for b in batches]


def run_concurrently(gc: GroupCommit[list[int], int], batches: list[list[int]]
                     ) -> list[int | Exception]:
    start = threading.Barrier(len(batches))

    def one(batch: list[int]) -> int | Exception:
        start.wait(timeout=10)
        try:
            return gc.submit(batch)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(one, batches))


def test_concurrent_batches_are_written_together_each_with_its_own_result() -> None:
    write = Recorder()
    batches = [[k, k] for k in range(16)]
    assert run_concurrently(GroupCommit(write), batches) == [2 * k for k in range(16)]
    assert sorted(x for g in write.groups for b in g for x in b) == sorted(
        x for b in batches for x in b)  # each batch written exactly once
    assert len(write.groups) < 16  # some shared a transaction
    assert max(len(g) for g in write.groups) > 1


def test_a_failing_batch_fails_alone_and_the_others_are_written() -> None:
    write = Recorder()
    batches = [[k + 1] for k in range(8)] + [[-1]]
    results = run_concurrently(GroupCommit(write), batches)
    assert results[:8] == [k + 1 for k in range(8)]
    assert isinstance(results[8], ValueError) and "[[-1]]" in str(results[8])


def test_group_size_is_capped() -> None:
    write = Recorder()
    run_concurrently(GroupCommit(write, max_group=3), [[k] for k in range(12)])
    assert max(len(g) for g in write.groups) <= 3


def test_gate_excludes_another_handle_on_the_same_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shop.db")
    first, second = WriteGate(db), WriteGate(db, timeout=0.2)
    try:
        with first.held():
            t = time.monotonic()
            with pytest.raises(StoreError, match=r"shop\.db-writer\.lock"), second.held():
                pass
            assert time.monotonic() - t >= 0.2
        with second.held():  # free again once released
            pass
    finally:
        first.close()
        second.close()


def test_gate_without_a_writable_directory_still_serialises_threads(tmp_path: Path) -> None:
    gate = WriteGate(str(tmp_path / "missing" / "shop.db"))
    inside = []
    with gate.held():
        inside.append(1)
    assert inside == [1]


def test_checkpointer_moves_the_log_into_the_file(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "shop.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(k,) for k in range(5000)])
    size = db.stat().st_size
    cp = Checkpointer(str(db), interval=0.01)
    try:
        cp.poke()
        deadline = time.monotonic() + 10
        while db.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.stat().st_size > size  # pages copied from the log into the database file
    finally:
        cp.close()
        conn.close()
