"""``POST /v1/events`` alone, on a shop that ``bench_shop_scale`` built (its work directory).

The shop's store is copied to a scratch file (the original stays as imported), a server is
started on it (loopback, ``--workers``), and ``--rounds`` rounds of ``--batches`` batches of
100 events with unique ids and random users and items of the shop are posted by
``--clients`` concurrent clients, the same client code as ``bench_shop_scale``'s events phase;
every accepted event is then looked up in the store (``missing`` must be 0). Each round is
written with its load average; the first round runs on a cold page cache.

Run::

    .venv/bin/python -m benchmarks.bench_events_http --work /tmp/shop_scale_100000 --workers 2

Results go to ``benchmarks/results/events_http_<work dir name>.json``, one record per
(workers, clients), replacing only a record of the same kind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_shop_scale import SERVER_ENV, load1, post_events, verify_events
from benchmarks.common import RESULTS, Server, free_port, machine_info

BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--work", type=Path, required=True,
                    help="a bench_shop_scale work dir (shop.db, bundles/, events.csv)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batches", type=int, default=1600, help="of 100 events, per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120.0, help="cap per round")
    args = ap.parse_args()
    for need in ("shop.db", "bundles", "events.csv"):
        if not (args.work / need).exists():
            raise SystemExit(f"{args.work / need} is missing: give the work dir of a "
                             "bench_shop_scale run on SQLite")
    db = args.work / "events_bench.db"
    for suffix in ("", "-wal", "-shm", "-writer.lock"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(args.work / "shop.db", db)
    url = f"sqlite:///{db}"
    events = pd.read_csv(args.work / "events.csv", usecols=["user_id", "item_id"])
    port = free_port()
    server = Server([str(BIN / "shelfwise"), "serve", "--store", url, "--bundles",
                     str(args.work / "bundles"), "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(args.workers)], {**os.environ, **SERVER_ENV},
                    args.work / "events_bench_serve.log", port)
    rounds: list[dict[str, Any]] = []
    try:
        server.wait_health(300)
        for k in range(args.rounds):
            stats, ids = post_events(server.base, events, args.batches, args.seconds,
                                     int(time.time()) + k, clients=args.clients)
            stats["missing"] = verify_events(url, ids)
            stats.pop("error_samples", None)
            rounds.append(stats)
            print(f"round {k + 1}: {stats['events_per_s']} events/s, p50 {stats['p50_ms']} "
                  f"p95 {stats['p95_ms']} p99 {stats['p99_ms']} ms, errors {stats['errors']}, "
                  f"missing {stats['missing']}, load {stats['load']}", flush=True)
    finally:
        server.stop()
        for suffix in ("", "-wal", "-shm", "-writer.lock"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    rec = {"shop": str(args.work), "workers": args.workers, "clients": args.clients,
           "batch": 100, "load_at_start": load1(), "rounds": rounds,
           "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = RESULTS / f"events_http_{args.work.name}.json"
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    runs = [r for r in runs if (r["workers"], r["clients"]) != (args.workers, args.clients)]
    path.write_text(json.dumps({"machine": machine_info(), "runs": [*runs, rec]}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
