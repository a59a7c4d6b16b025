"""Faults a shop will meet, on loopback: the server killed (SIGKILL) in the middle of an event
burst loses no acknowledged event and stores no batch in part; a missing or damaged store or
bundle at start is one error line naming the path (or URL) and the fix, exit code 2, never a
traceback, for ``serve``, ``train`` and ``import``."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shelfwise.bundle.bundle import LATEST
from shelfwise.cli.main import app as cli
from tests.conftest import two_group_frame
from tests.helpers import build, free_port, wait_for_health

BATCH = 50
BATCHES = 200  # 10,000 events
CLIENTS = 4
KILL_AFTER = 100  # acknowledged batches (5,000 events) before the kill: mid-burst


def _serve(url: str, bundles: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles",
             str(bundles), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base, proc, 90, lambda: log.read_text(errors="replace"))
    return proc, base


def _batch(b: int) -> dict[str, object]:
    return {"events": [{"id": f"burst-{b}-{i}", "type": "view", "user_id": f"shopper{b % 37}",
                        "item_id": ["a1", "a2", "b1", "b2"][i % 4]} for i in range(BATCH)]}


def test_kill_9_mid_burst_loses_no_acknowledged_event(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """CLIENTS threads post BATCHES batches of BATCH events; the server is SIGKILLed once
    KILL_AFTER are acknowledged, restarted on the same SQLite file, and every batch is checked:
    acknowledged → all its events stored; failed (in flight at the kill) → all or none; never
    sent → none."""
    url, bundles = build(two_group_frame(), tmp_path)
    log = tmp_path / "server.log"
    proc, base = _serve(url, bundles, log)
    acked: set[int] = set()
    failed: set[int] = set()
    lock = threading.Lock()
    next_batch = iter(range(BATCHES))
    killed = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while True:
                with lock:
                    b = next(next_batch, None)
                if b is None:
                    return
                try:
                    r = http.post("/v1/events", json=_batch(b))
                except httpx.TransportError:
                    with lock:
                        failed.add(b)
                    return
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] == BATCH
                with lock:
                    acked.add(b)
                    if len(acked) >= KILL_AFTER and not killed.is_set():
                        killed.set()

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        assert killed.wait(60), f"only {len(acked)} batches acknowledged in 60 s"
        proc.kill()  # SIGKILL: no shutdown hook, no flush
        proc.wait(timeout=10)
        for t in threads:
            t.join(timeout=60)
        burst_seconds = time.monotonic() - start
        proc, base = _serve(url, bundles, log)  # the same store file, after the crash
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM events WHERE id LIKE 'burst-%'")]
    stored: dict[int, int] = {}
    for event_id in ids:
        b = int(event_id.split("-")[1])
        stored[b] = stored.get(b, 0) + 1
    sent = acked | failed
    summary = {"events_acknowledged": len(acked) * BATCH, "events_stored": len(ids),
               "batches_acknowledged": len(acked), "batches_in_flight_at_kill": len(failed),
               "in_flight_batches_stored": sorted(b for b in failed if b in stored),
               "burst_seconds": round(burst_seconds, 1)}
    (tmp_path_factory.getbasetemp() / "kill9_summary.json").write_text(json.dumps(summary))
    print(f"kill -9: {summary}")
    assert len(acked) >= KILL_AFTER and len(acked) < BATCHES, "the kill came mid-burst"
    assert all(stored.get(b) == BATCH for b in acked), "an acknowledged event was lost"
    assert all(stored.get(b, 0) in (0, BATCH) for b in failed), "a batch stored in part"
    assert set(stored) <= sent, "a batch never sent is stored"
    assert len(failed) <= CLIENTS


# --- start with a missing or damaged store or bundle ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A good store and bundles root, copied by each case before it damages its copy."""
    return build(two_group_frame(), tmp_path_factory.mktemp("good"))


def _copy(trained: tuple[str, Path], tmp: Path) -> tuple[Path, Path, Path]:
    """(store file, bundles root, the LATEST bundle directory) copied under ``tmp``."""
    url, bundles = trained
    db = tmp / "shop.db"
    shutil.copy(url.removeprefix("sqlite:///"), db)
    root = tmp / "bundles"
    shutil.copytree(bundles, root)
    return db, root, root / (root / LATEST).read_text().strip()


def _truncate(path: Path, keep: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _scribble(db: Path) -> None:
    """Random bytes over every page but the first (the header stays valid: SQLite opens the
    file and fails on the first read of a damaged page)."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(db.read_bytes())
    rng = random.Random(0)
    for at in range(4096, len(data), 4096):
        data[at:at + 2048] = rng.randbytes(min(2048, len(data) - at))
    db.write_bytes(bytes(data))


BUNDLE_DAMAGE: dict[str, Callable[[Path, Path], str]] = {
    # each damages (bundles root, bundle dir) and returns what the message must name
    "bundles directory missing": lambda root, b: (shutil.rmtree(root), str(root))[1],
    "LATEST names a missing version": lambda root, b: (shutil.rmtree(b), b.name)[1],
    "manifest.json garbage": lambda root, b: (
        (b / "manifest.json").write_text("{not json"), "manifest.json")[1],
    "items.json truncated": lambda root, b: (_truncate(b / "items.json"), "items.json")[1],
    "generator state truncated": lambda root, b: (
        _truncate(b / "generators/cooccurrence/state.npz", 100), "generators/cooccurrence")[1],
    "faiss index empty": lambda root, b: (
        _truncate(b / "generators/semantic/index.faiss", 0), "generators/semantic")[1],
    "generator config truncated": lambda root, b: (
        _truncate(b / "generators/popularity/config.json", 20), "generators/popularity")[1],
}


def _fails_cleanly(args: list[str], *names: str) -> str:
    result = CliRunner().invoke(cli, args)
    out = result.output
    assert result.exit_code == 2, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and out.startswith("error: "), out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # one line: the error, naming what and how to fix
    assert all(n in out for n in names), (names, out)
    return out


@pytest.mark.parametrize("damage", list(BUNDLE_DAMAGE))
def test_serve_with_a_missing_or_damaged_bundle_says_so_in_one_line(
        damage: str, trained: tuple[str, Path], tmp_path: Path) -> None:
    db, root, bundle = _copy(trained, tmp_path)
    named = BUNDLE_DAMAGE[damage](root, bundle)
    out = _fails_cleanly(["serve", "--store", f"sqlite:///{db}", "--bundles", str(root),
                          "--port", str(free_port())], named)
    assert "shelfwise train" in out


STORES: dict[str, Callable[[Path], str]] = {
    "random bytes": lambda db: (db.write_bytes(random.Random(1).randbytes(50_000)), "")[1],
    "damaged pages": lambda db: (_scribble(db), "")[1],
}


@pytest.mark.parametrize("command", ["serve", "train", "import"])
@pytest.mark.parametrize("damage", [*STORES, "unreachable PostgreSQL"])
def test_a_store_that_is_not_a_database_or_unreachable_says_so_in_one_line(
        command: str, damage: str, trained: tuple[str, Path], tmp_path: Path) -> None:
    db, root, _ = _copy(trained, tmp_path)
    if damage in STORES:
        STORES[damage](db)
        url, named, fix = f"sqlite:///{db}", str(db), "move it away"
    else:  # nothing listens on a fresh free port; the password is not printed
        url = f"postgresql+psycopg://shop:s3cret@127.0.0.1:{free_port()}/shop"
        named, fix = "postgresql+psycopg://shop:***@127.0.0.1", "reachable"
    items = tmp_path / "items.csv"
    items.write_text("id,title\nx1,Thing\n")
    args = {"serve": ["serve", "--bundles", str(root), "--port", str(free_port())],
            "train": ["train", "--bundles", str(tmp_path / "new")],
            "import": ["import", str(items), "--kind", "items"]}[command]
    out = _fails_cleanly([*args, "--store", url], named, fix)
    assert "s3cret" not in out


def test_a_damaged_bundle_fails_in_the_real_process_too(trained: tuple[str, Path],
                                                       tmp_path: Path) -> None:
    """The same as above as a user runs it (exit status and stderr of the real command),
    including with several workers, where the bundle is checked before any worker starts."""
    db, root, bundle = _copy(trained, tmp_path)
    _truncate(bundle / "generators/cooccurrence/state.npz", 100)
    for extra in ([], ["--workers", "2"]):
        run = subprocess.run(
            [sys.executable, "-m", "shelfwise", "serve", "--store", f"sqlite:///{db}",
             "--bundles", str(root), "--port", str(free_port()), *extra],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and "generators/cooccurrence" in run.stderr
        assert run.stderr.strip().count("\n") == 0, run.stderr
