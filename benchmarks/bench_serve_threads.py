"""Feed and similar-items latency and throughput of `shelfwise serve` by ``[serve] threads``
(numeric-library threads per server process), side by side on one shop.

For each setting: start the server, wait until ready, then 200 feeds from 1 client, up to
1,500 feeds from 32 concurrent clients (40 s cap) and 200 similar-items requests from 1
client, over the same known users and items. The load generator shares the machine, so the
ratios between settings are the figure to read.

    python -m benchmarks.bench_serve_threads --store sqlite:////tmp/shop_scale_100000/shop.db \\
        --bundles /tmp/shop_scale_100000/bundles --threads 1,2 --name shop_scale_100000

Results: ``benchmarks/results/serve_threads_<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.bench_shop_scale import drive
from benchmarks.common import Server, free_port, write_results


def sample(store_url: str, n: int = 400) -> tuple[list[str], list[str]]:
    """Users with views and items with events (first ``n`` in id order: reproducible)."""
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        users = [r[0] for r in conn.execute(sa.text(
            "SELECT user_id FROM events WHERE type = 'view' GROUP BY user_id "
            "ORDER BY user_id LIMIT :n"), {"n": n})]
        items = [r[0] for r in conn.execute(sa.text(
            "SELECT item_id FROM events WHERE item_id IS NOT NULL GROUP BY item_id "
            "ORDER BY item_id LIMIT :n"), {"n": n})]
    engine.dispose()
    return users, items


def run(args: argparse.Namespace, threads: int, users: list[str], items: list[str]
        ) -> dict[str, Any]:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-threads-")) / "serve.log"
    server = Server([sys.executable, "-m", "shelfwise", "serve", "--store", args.store,
                     "--bundles", str(args.bundles), "--port", str(port), "--workers",
                     str(args.workers), "--set", f"serve.threads={threads}"],
                    {**os.environ}, log, port)
    try:
        server.wait_health(600)
        while httpx.get(f"{server.base}/ready", timeout=10).status_code != 200:
            time.sleep(0.5)
        feeds = [("GET", f"/v1/users/{u}/feed?n=10", None) for u in users]
        keep = ("p50_ms", "p99_ms", "rps", "errors", "load")
        one = drive(server.base, feeds, 1, 200, 60)
        many = drive(server.base, feeds[::-1], 32, 1500, 40)
        similar = drive(server.base, [("GET", f"/v1/items/{i}/similar?n=10", None)
                                      for i in items], 1, 200, 60)
        return {"threads": threads, "workers": args.workers,
                "feed_1": {k: one[k] for k in keep}, "feed_32": {k: many[k] for k in keep},
                "similar_1": {k: similar[k] for k in keep}, "memory_mb": server.memory_mb()}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--bundles", type=Path, required=True)
    ap.add_argument("--threads", default="1,2", help="settings to compare, e.g. 1,2")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--name", required=True, help="results name (the shop)")
    args = ap.parse_args()
    users, items = sample(args.store)
    runs = []
    for n in (int(x) for x in args.threads.split(",")):
        time.sleep(10)  # let the load average settle between servers
        runs.append(run(args, n, users, items))
        r = runs[-1]
        print(f"threads={n}: feed 1 client p50 {r['feed_1']['p50_ms']} ms p99 "
              f"{r['feed_1']['p99_ms']} ms; 32 clients {r['feed_32']['rps']} req/s p99 "
              f"{r['feed_32']['p99_ms']} ms ({r['feed_32']['errors']} errors); similar p99 "
              f"{r['similar_1']['p99_ms']} ms; load {r['feed_32']['load']}")
    path = write_results(f"serve_threads_{args.name}", {"store": args.store.split("://")[0],
                                                         "runs": runs})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
