"""Shared plumbing for benchmark scripts: data paths, machine info, results files, a server
subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import numpy as np

if TYPE_CHECKING:
    from shelfwise.data.interactions import Interactions
    from shelfwise.evaluation import Split

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def machine_info() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, memory, library versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    import numpy

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine info attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2, default=str))
    return path


def games_pools(data: Interactions, split: Split) -> tuple[Split, list[np.ndarray]]:
    from shelfwise.evaluation import EvalSet, Split
    """Test users of ``split`` with an LLMRank candidate pool (``Games.random``), and each one's
    pool as item indices: the 20-candidate protocol of bench_games and bench_pipeline."""
    index = {e: k for k, e in enumerate(data.items.ids)}
    pools: dict[int, np.ndarray] = {}
    for line in (SHARED_DATA / "amazon_games" / "Games.random").read_text().splitlines():
        user, _, rest = line.partition("\t")
        if user in data.users:
            pools[data.users.index(user)] = np.asarray(
                [index[i] for i in rest.split() if i in index], np.int64)
    keep = [k for k, u in enumerate(split.test.users) if int(u) in pools]
    sub = Split(name=split.name, train=split.train, test=EvalSet(
        users=split.test.users[keep], histories=[split.test.histories[k] for k in keep],
        targets=[split.test.targets[k] for k in keep]))
    return sub, [pools[int(u)] for u in sub.test.users]


def _tree_mb(pid: int, file: str, key: str) -> float:
    """``key`` of ``/proc/<p>/<file>`` in MB, summed over ``pid`` and all its descendants
    (0 for processes already gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/{file}").read_text()
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(f"{key}:"):
                total += int(line.split()[1])
        todo += [int(k) for k in kids]
    return total / 1024


def tree_rss_mb(pid: int, key: str = "VmRSS") -> float:
    """``key`` of ``/proc/<pid>/status`` (VmRSS; RssAnon: private memory, without the pages
    of memory-mapped files) summed over ``pid`` and all its descendants."""
    return _tree_mb(pid, "status", key)


def tree_pss_mb(pid: int) -> float:
    """Proportional set size summed over ``pid`` and its descendants: pages shared between
    them (a memory-mapped bundle, copy-on-write memory) count once in total."""
    return _tree_mb(pid, "smaps_rollup", "Pss")


class RawResponse:
    """A response as :class:`RawConnection` read it (the attributes the benches use)."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawConnection:
    """One keep-alive HTTP/1.1 connection of a load generator, as ``wrk`` makes them: the
    request written as bytes, the answer read by ``Content-Length`` (or chunks), no further
    parsing. The client shares the server's cores, so its own CPU counts: httpx spent
    ~2.5 ms per request (measured with psutil on the 100k bench shop), which a 1-client
    latency includes and 32 clients take from the server; this takes well under 0.1 ms.
    Transport failures raise ``OSError``, ``asyncio.IncompleteReadError``, ``ValueError``
    (a malformed answer) or ``TimeoutError``."""

    def __init__(self, base: str, *, timeout: float = 60.0) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> RawResponse:
        return await asyncio.wait_for(self._request(method, path, body), self.timeout)

    async def _request(self, method: str, path: str, body: Any) -> RawResponse:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        message = (head + "\r\n").encode() + payload
        for attempt in (0, 1):  # a kept-alive connection the server closed: one new one
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(message)
                raw = await self._reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await self._reader.readexactly(size + 2))[:-2])
            await self._reader.readuntil(b"\r\n")  # the empty trailer
            content = b"".join(parts)
        else:
            content = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return RawResponse(status, headers, content)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, n: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


class Server:
    """A server subprocess bound to 127.0.0.1; :meth:`stop` ends it (terminate, then kill)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.t0 = time.perf_counter()
        with log.open("w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                         cwd=REPO)

    def wait_health(self, timeout: float) -> tuple[float, dict[str, Any]]:
        """Seconds from launch until ``/health`` answered 200, and its body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.base}/health", timeout=5)
                if r.status_code == 200:
                    return time.perf_counter() - self.t0, dict(r.json())
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited during start-up; last lines of {self.log}:\n"
                                 f"{tail(self.log)}")
            time.sleep(0.1)
        raise SystemExit(f"server did not answer /health within {timeout:.0f} s; see {self.log}")

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) of the server process, and ``tree``: VmRSS summed
        over it and its workers (what several uvicorn workers hold together)."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
        out["tree"] = round(tree_rss_mb(self.proc.pid), 1)
        out["tree_private"] = round(tree_rss_mb(self.proc.pid, "RssAnon"), 1)
        out["tree_pss"] = round(tree_pss_mb(self.proc.pid), 1)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
