"""Where a personalized search's time goes, in process: history read, search, log write.

Uses the store and bundle that ``bench_search_http`` leaves in ``var/bench/search_http`` (run
that first). For 400 users with purchases, one at a time: read the history (a cache miss, as
for a user's first request), run ``SearchService.search`` (retrieve, features, rank; n = 48),
then store the ``search`` event as the HTTP endpoint does (one SQLite commit).

Run: ``.venv/bin/python -m benchmarks.bench_search_breakdown``.
Writes ``benchmarks/results/search_breakdown.json``.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_search_http import PAGE, WORK
from benchmarks.common import write_results
from shelfwise.bundle.bundle import load_bundle
from shelfwise.data.schemas import Event, EventType
from shelfwise.services.recommender import Recommender
from shelfwise.services.search import SearchService
from shelfwise.storage import open_store

QUERIES = ["milk", "fresh fruits", "yogurt", "chips pretzels", "soft drinks"]


def main() -> None:
    if not (WORK / "shop.db").exists():
        raise SystemExit(f"no store in {WORK}: run `python -m benchmarks.bench_search_http`")
    store = open_store(f"sqlite:///{WORK / 'shop.db'}")
    rec = Recommender(load_bundle(WORK / "bundles"), store)
    service = SearchService(rec)
    service.search(QUERIES[0])  # builds the index
    users = [str(u) for u in store.events_frame()["user_id"].unique()[:400]]
    ms: dict[str, list[float]] = {"history": [], "search": [], "log_write": []}
    for k, user in enumerate(users):
        a = time.perf_counter()
        rec.history(user)
        b = time.perf_counter()
        result = service.search(QUERIES[k % len(QUERIES)], user, PAGE)
        c = time.perf_counter()
        rid = uuid.uuid4().hex
        store.add_events([Event(id=f"search-{rid}", type=EventType.SEARCH, user_id=user,
                                query=QUERIES[k % len(QUERIES)], request_id=rid,
                                timestamp=datetime.now(UTC),
                                context={"items": [h.item_id for h in result.hits]})])
        d = time.perf_counter()
        for name, v in (("history", b - a), ("search", c - b), ("log_write", d - c)):
            ms[name].append(1000 * v)
    rows = {name: {q: round(float(np.percentile(v, p)), 1) for q, p in
                   (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100))}
            for name, v in ms.items()}
    for name, row in rows.items():
        print(name, row, flush=True)
    write_results("search_breakdown", {"users": len(users), "n": PAGE, "store": "sqlite (WAL)",
                                       "ranker": "lambdamart" if service.ranker else "rrf",
                                       "parts": rows})


if __name__ == "__main__":
    main()
