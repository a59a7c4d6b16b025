"""The HTTP API in-process: feed, similar, events, items, cold start, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shelfwise.serving import create_app
from tests.conftest import two_group_frame
from tests.helpers import build


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    url, bundles = build(two_group_frame(), tmp_path)
    return TestClient(create_app(url, bundles))


def test_health_and_openapi(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["counts"]["events"] > 0
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/users/{user_id}/feed", "/v1/items/{item_id}/similar", "/v1/events",
            "/v1/items", "/health"} <= set(paths)


def test_feed_follows_history_and_excludes_seen(client: TestClient) -> None:
    body = client.get("/v1/users/u0/feed", params={"n": 3}).json()
    assert body["request_id"] and not body["cold_start"]
    ids = [r["item_id"] for r in body["items"]]
    assert not {"a1", "a2", "a3", "a4"} & set(ids), "seen items are excluded"
    body = client.get("/v1/users/u0/feed", params={"n": 3, "exclude_seen": False}).json()
    assert body["items"][0]["item_id"].startswith("a")


def test_unknown_user_gets_cold_start(client: TestClient) -> None:
    body = client.get("/v1/users/stranger/feed").json()
    assert body["cold_start"] is True
    assert len(body["items"]) == 7
    assert {r["explanation"]["reason"] for r in body["items"]} == {"popular_in"}


def test_a_click_changes_the_next_feed(client: TestClient) -> None:
    before = client.get("/v1/users/newbie/feed", params={"n": 2}).json()
    assert before["cold_start"]
    r = client.post("/v1/events", json={"events": [
        {"id": "c1", "type": "click", "user_id": "newbie", "item_id": "b2",
         "request_id": before["request_id"], "position": 0}]})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    after = client.get("/v1/users/newbie/feed", params={"n": 2}).json()
    assert not after["cold_start"]
    assert {i["item_id"] for i in after["items"]} == {"b1", "b3"}
    again = client.post("/v1/events", json={"events": [
        {"id": "c1", "type": "click", "user_id": "newbie", "item_id": "b2"}]}).json()
    assert again == {"accepted": 0, "duplicates": 1, "event_ids": ["c1"]}


def test_bad_event_is_rejected_with_its_row(client: TestClient) -> None:
    before = client.get("/health").json()["counts"]["events"]
    r = client.post("/v1/events", json={"events": [
        {"id": "ok", "type": "click", "user_id": "u", "item_id": "a1"},
        {"id": "bad", "type": "click", "user_id": "u"}]})
    assert r.status_code == 422
    assert "events[1]" in r.text and "item_id" in r.text
    assert client.get("/health").json()["counts"]["events"] == before, "nothing of the batch stored"


def test_similar_items_and_new_items(client: TestClient) -> None:
    body = client.get("/v1/items/a2/similar", params={"n": 2}).json()
    assert {i["item_id"] for i in body["items"]} == {"a1", "a3"}
    assert body["items"][0]["title"]
    assert client.get("/v1/items/nope/similar").status_code == 404


def test_a_new_item_is_recommendable_at_once(client: TestClient) -> None:
    """Posting an item embeds and indexes it: it has semantic neighbours without retraining."""
    r = client.post("/v1/items", json={"items": [
        {"id": "a9", "title": "Open-world fantasy role-playing game", "category": ["A"]}]})
    assert r.json() == {"written": 1}
    body = client.get("/v1/items/a9/similar", params={"n": 2, "diversity": 0}).json()
    assert not body["cold_start"]
    assert {i["item_id"] for i in body["items"]} == {"a1", "a2"}
    assert {i["explanation"]["reason"] for i in body["items"]} == {"similar_to"}
    assert {max(i["explanation"]["parts"], key=i["explanation"]["parts"].get)
            for i in body["items"]} == {"semantic"}
    # ...and the new item is a neighbour of the old ones
    near = client.get("/v1/items/a1/similar", params={"n": 7}).json()
    assert "a9" in [i["item_id"] for i in near["items"]]


def test_unavailable_items_leave_the_feed(client: TestClient) -> None:
    client.post("/v1/items", json={"items": [{"id": "b1", "available": False,
                                              "category": ["B"]}]})
    ids = [i["item_id"] for i in client.get("/v1/users/stranger/feed").json()["items"]]
    assert "b1" not in ids


def test_profile_follows_events(client: TestClient) -> None:
    body = client.get("/v1/users/u0/profile", params={"vector": True}).json()
    assert body["history_length"] == 4
    assert body["recent_items"] == ["a4", "a3", "a2", "a1"]
    assert body["tags"][0][0] == "A"
    assert body["interests"] and sum(i["weight"] for i in body["interests"]) == \
        pytest.approx(1.0, abs=1e-3)
    assert body["encoder"].startswith("e5") and len(body["vector"]) == 384
    client.post("/v1/events", json={"events": [
        {"id": "p1", "type": "cart", "user_id": "u0", "item_id": "b2"}]})
    after = client.get("/v1/users/u0/profile").json()
    assert after["recent_items"][0] == "b2" and after["history_length"] == 5
    assert "B" in dict(after["tags"]) and after["vector"] is None
    empty = client.get("/v1/users/nobody/profile").json()
    assert empty["history_length"] == 0 and empty["interests"] == []


def test_ready_is_503_until_warm_then_200(client: TestClient) -> None:
    import time

    engine = client.app.state.engine  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while True:
        r = client.get("/ready")
        body = r.json()
        assert r.status_code == (200 if body["ready"] else 503)
        assert set(body) == {"ready", *engine.ready}
        if body["ready"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["ready"], body
    assert client.post("/v1/search", json={"query": "keyboard"}).status_code == 200


def test_limit_threads_caps_every_numeric_library_here_and_for_workers() -> None:
    """In a fresh process (the cap is process-wide), with no *_NUM_THREADS inherited."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, torch, faiss\n"
            "from threadpoolctl import threadpool_info\n"
            "from shelfwise.serving.threads import limit_threads\n"
            "env = limit_threads(1)\n"
            "print(json.dumps({'env': env, 'torch': torch.get_num_threads(),\n"
            "                  'faiss': faiss.omp_get_max_threads(),\n"
            "                  'pools': [p['num_threads'] for p in threadpool_info()]}))\n")
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == 1 and got["faiss"] == 1 and set(got["pools"]) == {1}
    assert got["env"]["OMP_NUM_THREADS"] == "1" and got["env"]["OPENBLAS_NUM_THREADS"] == "1"
    # a server that has not loaded torch does not load it for this (~180 MB); when it does
    # load it later (to embed posted items) the cap holds
    later = ("import json, sys\n"
             "from shelfwise.serving.threads import limit_threads\n"
             "limit_threads(1)\n"
             "before = 'torch' in sys.modules\n"
             "import torch\n"
             "print(json.dumps({'before': before, 'torch': torch.get_num_threads()}))\n")
    out = subprocess.run([sys.executable, "-c", later], capture_output=True, text=True,
                         env=clean, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"before": False, "torch": 1}


@pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                    reason="glibc arenas, and threads that can collide")
def test_malloc_arenas_cap_holds_for_threads_that_collide() -> None:
    """Eight threads calling malloc at once (ctypes drops the GIL) make glibc open extra
    arenas; after ``limit_malloc_arenas(1)`` they all share one. Counted by malloc_stats."""
    code = ("import ctypes, sys, threading\n"
            "from shelfwise.serving.threads import limit_malloc_arenas\n"
            "env = limit_malloc_arenas(1) if sys.argv[1] == 'cap' else {}\n"
            "libc = ctypes.CDLL('libc.so.6')\n"
            "libc.malloc.restype = ctypes.c_void_p\n"
            "libc.free.argtypes = [ctypes.c_void_p]\n"
            "gate = threading.Barrier(8)\n"
            "def work():\n"
            "    gate.wait()\n"
            "    for _ in range(20000):\n"
            "        libc.free(libc.malloc(4096))\n"
            "ts = [threading.Thread(target=work) for _ in range(8)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(env, flush=True)\n"
            "libc.malloc_stats()\n")
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def arenas(mode: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                             text=True, env=clean, timeout=120, check=True)
        return sum(line.startswith("Arena ") for line in out.stderr.splitlines()), out.stdout

    free, _ = arenas("free")
    capped, env = arenas("cap")
    assert free > 1, "control: colliding threads did not open extra arenas here"
    assert capped == 1
    assert "'MALLOC_ARENA_MAX': '1'" in env  # and child processes inherit the cap


def test_a_started_server_keeps_what_it_loaded_out_of_the_cyclic_collector(
        tmp_path: Path) -> None:
    """Once warm, the engine's objects are frozen (a full collection no longer walks them);
    an app that stops inside a longer-lived process unfreezes them again."""
    import gc

    url, bundles = build(two_group_frame(), tmp_path)
    app = create_app(url, bundles)
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert client.get("/v1/users/u0/feed").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
