"""End to end: the real `shelfwise serve` process on loopback, events in, feed out, over each
store backend (SQLite file; PostgreSQL on the session's private server, ``tests/pg.py``)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from shelfwise.bundle import train_bundle
from shelfwise.config import ServeConfig
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


def _serve(store_url: str, bundles: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfwise", "serve", "--store", store_url, "--bundles",
         str(bundles), "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base, proc, 90, lambda: proc.stdout.read().decode() if proc.stdout else "")
    return proc, base


def test_an_event_posted_to_one_worker_changes_the_feed_on_every_other(
        pg_url: str, tmp_path: Path) -> None:
    """Several server processes share one PostgreSQL store: once one of them acknowledged a
    user's events, the next feed of that user from any process reflects them. Two separate
    servers (each request goes to a known one), then one server with two uvicorn workers
    (each request to whichever worker the kernel picks: every answer must be fresh)."""
    store = store_from_frame(two_group_frame(), pg_url)
    train_bundle(interactions_from_store(store), tmp_path / "bundles")
    store.close()
    procs = []
    try:
        a, base_a = _serve(pg_url, tmp_path / "bundles")
        procs.append(a)
        b, base_b = _serve(pg_url, tmp_path / "bundles")
        procs.append(b)
        with httpx.Client(timeout=10) as http:
            for url in (base_a, base_b):  # both serve (and would cache) the cold list first
                assert http.get(f"{url}/v1/users/shopper/feed").json()["cold_start"]
            events = [{"id": "s1", "type": "view", "user_id": "shopper", "item_id": "a1"},
                      {"id": "s2", "type": "click", "user_id": "shopper", "item_id": "a2"}]
            assert http.post(f"{base_a}/v1/events", json={"events": events}).json()[
                "accepted"] == 2
            feed = http.get(f"{base_b}/v1/users/shopper/feed", params={"n": 2}).json()
            assert not feed["cold_start"] and feed["items"][0]["item_id"] == "a3"
            profile = http.get(f"{base_b}/v1/users/shopper/profile").json()
            assert profile["history_length"] == 2
            item = {"id": "a9", "title": "A new group-A item", "category": ["A"]}
            assert http.post(f"{base_a}/v1/items", json={"items": [item]}).status_code == 200
            deadline = time.monotonic() + 30  # b looks every serve.catalog_sync_seconds
            while http.get(f"{base_b}/v1/items/a9/similar").status_code != 200:
                assert time.monotonic() < deadline, "the other server never indexed a9"
                time.sleep(0.2)
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        procs.clear()
        w, base_w = _serve(pg_url, tmp_path / "bundles", "--workers", "2")
        procs.append(w)
        with httpx.Client(timeout=10) as http:
            for k in range(3):
                user = f"multi{k}"
                assert http.get(f"{base_w}/v1/users/{user}/feed").json()["cold_start"]
                ev = [{"id": f"m{k}", "type": "view", "user_id": user, "item_id": "a1"}]
                assert http.post(f"{base_w}/v1/events", json={"events": ev}).json()[
                    "accepted"] == 1
                for _ in range(6):  # new connections: both workers answer some of them
                    with httpx.Client(timeout=10) as fresh:
                        feed = fresh.get(f"{base_w}/v1/users/{user}/feed").json()
                        seen = fresh.get(f"{base_w}/v1/users/{user}/profile").json()
                    assert not feed["cold_start"] and seen["history_length"] == 1
                    assert "a1" not in [i["item_id"] for i in feed["items"]]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_idle_connections_close_after_serve_keep_alive_seconds(workers: str,
                                                               tmp_path: Path) -> None:
    """A connection idle for less than ``serve.keep_alive_seconds`` still answers; past it the
    server closes it. The default outlives client pools' own idle limits (httpx: 5 s, the
    same as uvicorn's default, so a pool reusing a connection raced the server closing it:
    one request in ~30,000 failed with a reset under 32 clients)."""
    assert ServeConfig().keep_alive_seconds > 60
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = store_from_frame(two_group_frame(), url)
    train_bundle(interactions_from_store(store), tmp_path / "bundles")
    store.close()
    proc, base = _serve(url, tmp_path / "bundles", "--workers", workers,
                        "--set", "serve.keep_alive_seconds=2")
    try:
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        for pause in (0.0, 1.0):  # within the limit: the same socket answers again
            time.sleep(pause)
            conn.request("GET", "/health")
            assert conn.getresponse().read() and conn.sock is not None
        sock = conn.sock
        time.sleep(3.0)  # past it (and short of uvicorn's own 5 s): the server closed its end
        sock.settimeout(0.5)
        assert sock.recv(1) == b""
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
