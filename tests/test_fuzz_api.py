"""Schemathesis over the whole OpenAPI of a real ``shelfwise serve`` (loopback, SQLite store,
trained bundle, an admin key): every operation gets boundary values (coverage phase), random
valid and invalid requests (fuzzing) and chains that feed one answer's ids into the next
request (stateful); no answer may be a 5xx. Bounded (``--max-examples``, fixed seed, so a
failure reproduces) to well under a minute on two cores.

The run is the documented CLI, so the command in ``fuzz_summary.json`` (written to the pytest
base temp dir with the counts) can be pasted against any server. Widen it by hand with
``SHELFWISE_FUZZ_EXAMPLES=500 SHELFWISE_FUZZ_SEED=7 .venv/bin/pytest tests/test_fuzz_api.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shelfwise.apikeys import Scope, create_key
from shelfwise.storage import open_store
from tests.conftest import two_group_frame
from tests.helpers import build, free_port, wait_for_health

EXAMPLES = int(os.environ.get("SHELFWISE_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("SHELFWISE_FUZZ_SEED", "1"))
MIN_CASES = 1000
"""Fewer generated cases than this means the run silently tested little (a schema that did not
load, operations skipped): a failure, not a pass."""


def test_schemathesis_finds_no_server_error(tmp_path: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    store = open_store(url)
    _, key = create_key(store, Scope.ADMIN, "fuzz")  # so the key check runs on every request
    store.close()
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "SHELFWISE_SERVE__AUTH__RATE": "0"}  # no 429s for the fuzzer
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles",
             str(bundles), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    report = tmp_path / "schemathesis.json"
    command = ["schemathesis", "run", f"{base}/openapi.json",
               "-H", f"Authorization: Bearer {key}", "--checks", "not_a_server_error",
               "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1",
               "--generation-database", "none", "--output-sanitize", "false", "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    try:
        wait_for_health(base, server, 90, log.read_text)
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", *command[1:]],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    server_log = log.read_text(errors="replace")
    statuses = Counter(json.loads(line)["status"] for line in server_log.splitlines()
                       if '"shelfwise.access"' in line)
    result = json.loads(report.read_text())
    summary = {
        "command": " ".join(command).replace(key, "<admin key>"),
        "generated": result["test_cases"]["generated"],
        "requests_served": sum(statuses.values()),
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "by_status": {str(s): n for s, n in sorted(statuses.items())},
        "failures": result["failures"], "errors": result["errors"],
        "phases": {k: v["status"] for k, v in result["phases"].items()},
        "seconds": round(seconds, 1)}
    (tmp_path_factory.getbasetemp() / "fuzz_summary.json").write_text(
        json.dumps(summary, indent=1))
    print(f"schemathesis: {summary['generated']} cases, {summary['requests_served']} requests, "
          f"{summary['server_errors']} server errors in {seconds:.0f} s")
    tail = run.stdout[-6000:]
    assert run.returncode == 0 and not result["failures"] and not result["errors"], tail
    assert summary["server_errors"] == 0 and "Traceback" not in server_log, server_log[-6000:]
    assert result["operations"]["tested"] == result["operations"]["total"], tail
    assert summary["generated"] >= MIN_CASES, tail
    assert re.search(r"\d+ generated", run.stdout), tail
