"""`shelfwise demo` (what `make demo` runs) imports, trains, evaluates and then serves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_server_e2e import _free_port


def test_demo_reaches_a_serving_state_whose_feed_answers(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "demo", "--workdir", str(tmp_path / "demo"),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # first run embeds ~9.5k titles with e5
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"demo exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"demo never served:\n{log.read_text()}"
            time.sleep(0.3)
        printed = log.read_text()
        assert "NDCG@10" in printed and "cooccurrence" in printed, printed
        assert "curl" in printed
        feed = httpx.get(f"{base}/v1/users/someone-new/feed", params={"n": 5}).json()
        assert feed["cold_start"] and len(feed["items"]) == 5
        assert all(i["title"] for i in feed["items"]), "demo items carry their titles"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    records = (tmp_path / "demo" / "evaluation.jsonl").read_text().splitlines()
    assert len(records) >= 15
