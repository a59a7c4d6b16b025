"""`shelfwise demo` (what `make demo` runs) imports, trains, evaluates and then serves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_for_health

#: The demo's own wait fits inside the test's pytest timeout, with room to stop the server.
DEMO_TIMEOUT = 600
STARTUP_WAIT = DEMO_TIMEOUT - 60


@pytest.mark.timeout(DEMO_TIMEOUT)
def test_demo_reaches_a_serving_state_whose_feed_answers(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "demo", "--workdir", str(tmp_path / "demo"),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # the first run on a machine converts e5 and embeds ~9.5k titles
        wait_for_health(base, proc, STARTUP_WAIT, log.read_text)
        printed = log.read_text()
        assert "NDCG@10" in printed and "cooccurrence" in printed, printed
        assert "curl" in printed
        feed = httpx.get(f"{base}/v1/users/someone-new/feed", params={"n": 5}).json()
        assert feed["cold_start"] and len(feed["items"]) == 5
        assert all(i["title"] for i in feed["items"]), "demo items carry their titles"
        assert all(i["explanation"]["source"] == "cold_start" for i in feed["items"])
        assert "demo.toml" in printed, "the demo says which config it runs"
        assert re.search(r"^pipeline +0\.\d+", printed, re.M), "the learned feed is evaluated"
        user = re.search(r"/v1/users/([^/]+)/feed\?n=5", printed)
        assert user is not None, printed
        personal = httpx.get(f"{base}/v1/users/{user.group(1)}/feed", params={"n": 5}).json()
        assert not personal["cold_start"] and len(personal["items"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    records = (tmp_path / "demo" / "evaluation.jsonl").read_text().splitlines()
    assert len(records) >= 15
