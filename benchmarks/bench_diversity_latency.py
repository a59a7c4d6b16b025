"""Added latency of the diversity stage per request (in process, no HTTP).

A synthetic shop (``shop_scale_data``: real titles, simulated behaviour; default 20k items,
200k events) is imported and trained once (default ``[train]``: blend with e5 semantic
vectors), then each surface is called for ``--requests`` users / items / queries, each request
twice in a row, in alternating order: knob 0 (the model's order, pool = n) and knob 0.5 (the
method re-ranks a pool of 100). Pairing the two calls cancels the drift of a shared machine's
load. Reports the
median and p95 milliseconds of each and the median of the paired differences (the added
latency).

    .venv/bin/python -m benchmarks.bench_diversity_latency [--items 20000 --events 200000]

Writes ``benchmarks/results/diversity_latency.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import SHARED_DATA, write_results
from benchmarks.shop_scale_data import build_queries, write_shop
from shelfwise.config import ShelfwiseConfig
from shelfwise.ranking.diversity import DiversityConfig
from shelfwise.serving import create_app  # noqa: F401  (imported first: engine <-> app cycle)

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None,
                        help="reuse a shop this script built and trained before")
    args = parser.parse_args()
    from shelfwise.services.engine import Engine

    work = args.work or Path(tempfile.mkdtemp(prefix="divlat-"))
    url = f"sqlite:///{work / 'shop.db'}"
    if args.work is None:
        write_shop(SHARED_DATA, work, args.items, args.events, args.users, 0)
        sw = str(BIN / "shelfwise")
        for kind in ("items", "events"):
            subprocess.run([sw, "import", "--kind", kind, str(work / f"{kind}.csv"), "--store",
                            url, "--no-progress"], check=True, capture_output=True)
        subprocess.run([sw, "train", "--store", url, "--bundles", str(work / "bundles")],
                       check=True, capture_output=True)
    items, events = pd.read_csv(work / "items.csv"), pd.read_csv(work / "events.csv")
    rng = np.random.default_rng(1)
    counts = events["user_id"].value_counts()
    users = rng.choice(counts.index[counts >= 3].to_numpy(), args.requests)
    item_ids = rng.choice(items["item_id"].to_numpy(), args.requests)
    queries = build_queries(SHARED_DATA, items, args.requests, 0)
    calls = {
        "feed": lambda e, k, d: e.feed(str(users[k]), 10, diversity=d),
        "similar": lambda e, k, d: e.similar(str(item_ids[k]), 10, diversity=d),
        "search": lambda e, k, d: e.search(queries[k], str(users[k]), 10, diversity=d)}
    out: dict[str, Any] = {}
    for method in ("mmr", "dpp", "calibrated"):
        cfg = ShelfwiseConfig()
        cfg.storage.url, cfg.storage.bundles = url, work / "bundles"
        cfg.serve.diversity = DiversityConfig(method=method)
        cfg.serve.impressions.enabled = False
        engine = Engine(cfg)
        for surface, call in calls.items():
            for k in range(min(20, args.requests)):  # warm caches (histories, scores)
                call(engine, k, 0.0)
            ms = np.zeros((args.requests, 2))
            for k in range(args.requests):
                for j in ((0, 1) if k % 2 == 0 else (1, 0)):  # who goes second gets warm caches
                    t = time.perf_counter()
                    call(engine, k, 0.5 * j)
                    ms[k, j] = 1000 * (time.perf_counter() - t)
            out[f"{surface}/{method}"] = row = {
                "off_median_ms": round(float(np.median(ms[:, 0])), 3),
                "on_median_ms": round(float(np.median(ms[:, 1])), 3),
                "on_p95_ms": round(float(np.percentile(ms[:, 1], 95)), 3),
                "added_median_ms": round(float(np.median(ms[:, 1] - ms[:, 0])), 3)}
            print(surface, method, row, flush=True)
    path = write_results("diversity_latency", {
        "shop": {"items": args.items, "events": args.events, "users": args.users},
        "setting": "n = 10; knob 0 (off) vs 0.5 with pool 100; in-process Engine calls, "
                   "impressions off; same requests for every setting",
        "requests": args.requests, "latency": out})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
