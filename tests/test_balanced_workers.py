"""``serve --workers N`` on Linux: each worker listens on its own socket of the port's
``SO_REUSEPORT`` group, so connections opened at once spread over the workers that are up
(uvicorn's single shared socket let one worker take them all), and a dead worker's share
goes to a replacement."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfwise.serving.workers import claim_port, member_socket
from tests.helpers import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT balances only on Linux")


async def pid_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A bare ASGI app that answers with its process id."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"pid": os.getpid()}).encode()})


SUPERVISOR = """
import sys, uvicorn
from shelfwise.serving.workers import BalancedWorkers
port = int(sys.argv[1])
config = uvicorn.Config("tests.test_balanced_workers:pid_app", workers=2, host="127.0.0.1",
                        port=port, log_level="warning", timeout_worker_healthcheck=2)
BalancedWorkers(config, "127.0.0.1", port).run()
"""


def test_listening_members_split_connections_and_others_get_none() -> None:
    port = claim_port("127.0.0.1", 0)
    socks = [member_socket("127.0.0.1", port) for _ in range(4)]
    try:
        for s in socks[:3]:  # the fourth is a worker still starting: bound, not listening
            s.listen(128)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
        counts = []
        for s in socks[:3]:
            s.setblocking(False)
            n = 0
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                n += 1
            counts.append(n)
        for c in clients:
            c.close()
        assert sum(counts) == 60, "the member that does not listen got some"
        assert min(counts) > 0, f"one listening member got no connection: {counts}"
    finally:
        for s in socks:
            s.close()


def _pids(base: str, n: int) -> Counter[int]:
    """The serving pid of each of ``n`` keep-alive clients opened at once (one request each)."""
    def one(_: int) -> int:
        with httpx.Client(base_url=base, timeout=10) as client:
            return int(client.get("/").json()["pid"])

    with ThreadPoolExecutor(n) as pool:
        return Counter(pool.map(one, range(n)))


def _wait_up(base: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the workers did not start")


def test_workers_share_connections_and_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}"}
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_up(base, time.monotonic() + 60)
        time.sleep(1.0)  # both workers up, not only the first
        pids = _pids(base, 32)
        assert len(pids) == 2 and min(pids.values()) >= 4, pids
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the supervisor notices within its health check
            pids = _pids(base, 32)
            if victim not in pids and len(pids) == 2:
                break
            time.sleep(0.5)
        assert victim not in pids and len(pids) == 2, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out


def test_a_taken_port_is_refused_not_shared() -> None:
    """Another listener on the port, even a reuse-port group of this user, makes the claim
    fail as a plain bind would: two servers never split one port's traffic quietly."""
    port = claim_port("127.0.0.1", 0)
    first = [member_socket("127.0.0.1", port) for _ in range(2)]
    try:
        for s in first:
            s.listen(16)
        with pytest.raises(OSError):
            claim_port("127.0.0.1", port)
    finally:
        for s in first:
            s.close()
    assert claim_port("127.0.0.1", port) == port
