"""End to end: the real `shelfwise serve` process on loopback, events in, feed out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import two_group_frame
from tests.helpers import build, free_port, wait_for_health


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    url, bundles = build(two_group_frame(), tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles", str(bundles),
         "--host", "127.0.0.1", "--port", str(port)],
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


def test_events_then_feed_over_http(server: str, tmp_path: Path) -> None:
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
    # accepted means durable: a fresh connection to the file sees the events
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from events where user_id='visitor'")).scalar()
    assert n == 2
