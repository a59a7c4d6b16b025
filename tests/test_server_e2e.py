"""End to end: the real `shelfwise serve` process on loopback, events in, feed out, over each
store backend (SQLite file; PostgreSQL on the session's private server, ``tests/pg.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from shelfwise.bundle import train_bundle
from shelfwise.data.loading import interactions_from_store
from tests.conftest import two_group_frame
from tests.helpers import free_port, store_from_frame, wait_for_health


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each backend (PostgreSQL: a fresh database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[str]:
    store = store_from_frame(two_group_frame(), store_url)
    train_bundle(interactions_from_store(store), tmp_path / "bundles")
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfwise", "serve", "--store", store_url,
         "--bundles", str(tmp_path / "bundles"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, 60,
                        lambda: proc.stdout.read().decode() if proc.stdout else "")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_events_then_feed_over_http(server: str, store_url: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        cold = http.get("/v1/users/visitor/feed", params={"n": 3}).json()
        assert cold["cold_start"] and len(cold["items"]) == 3
        events = [
            {"id": "v1", "type": "view", "user_id": "visitor", "item_id": "a1",
             "request_id": cold["request_id"], "position": 0},
            {"id": "v2", "type": "click", "user_id": "visitor", "item_id": "a2"},
        ]
        accepted = http.post("/v1/events", json={"events": events}).json()
        assert accepted["accepted"] == 2
        feed = http.get("/v1/users/visitor/feed", params={"n": 2}).json()
        assert not feed["cold_start"]
        assert feed["items"][0]["item_id"] == "a3"
        assert feed["request_id"] != cold["request_id"]
    # accepted means durable: a fresh connection to the store sees the events
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            n = conn.execute(
                sa.text("select count(*) from events where user_id='visitor'")).scalar()
    finally:
        engine.dispose()
    assert n == 2
