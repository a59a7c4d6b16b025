"""Latency of ``POST /v1/search`` over real HTTP at ~50k items, fused order and learned ranker.

The catalog is Instacart's 49,688 products (title = product name, category = department >
aisle); purchases from ``order_products_sample.csv`` are the events (one timestamp per order).
A bundle (co-occurrence, semantic with USE, popularity) is trained, then ``shelfwise serve``
runs as its own process on loopback and an ``httpx`` client sends one request at a time:
the aisle name of a product from a test user's last order, half anonymous and half with the
user id, asking for one page of 48 results. Phase 1 measures the fused (RRF) order. Then
every personalized search of phase 1 gets a click when the user's target product was shown,
``train_search_ranker`` learns from those logs (the product's own path, as ``shelfwise train``
runs it), the server restarts with the ranker and phase 2 measures again. Wall time per
request is taken at the client, so it includes HTTP, JSON, logging the search event and the
store lookup of titles.

Run: ``.venv/bin/python -m benchmarks.bench_search_http [--queries 600]``.
Writes ``benchmarks/results/search_http.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_search_instacart import load
from benchmarks.common import REPO, Server, free_port, write_results
from shelfwise.bundle import (
    GeneratorSpec,
    TrainConfig,
    load_bundle,
    publish_bundle,
    train_bundle,
)
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.services.recommender import Recommender
from shelfwise.services.search_training import train_search_ranker
from shelfwise.storage import open_store

WORK = REPO / "var" / "bench" / "search_http"
PAGE = 48  # one results page


def build_store(url: str) -> tuple[list[dict[str, Any]], int]:
    """Catalog and purchase history; returns the test searches (target in the last order)."""
    products, orders = load()
    store = open_store(url)
    store.upsert_items([Item(id=str(p), title=str(n), category=[str(d), str(a)])
                        for p, n, d, a in zip(products["product_id"], products["product_name"],
                                              products["department"], products["aisle"],
                                              strict=True)])
    aisle = dict(zip(products["product_id"], products["aisle"].astype(str), strict=True))
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    last = orders.groupby("user_id")["order_number"].transform("max")
    hist = orders[orders["order_number"] < last]
    store.add_events([Event(id=f"o{u}-{o}-{p}", type=EventType.PURCHASE, user_id=str(u),
                            item_id=str(p), timestamp=t0 + timedelta(days=int(o)))
                      for u, o, p in zip(hist["user_id"], hist["order_number"],
                                         hist["product_id"], strict=True)])
    test = orders[orders["order_number"] == last]
    searches = [{"user": str(u), "target": str(p), "query": aisle[p]}
                for u, p in zip(test["user_id"], test["product_id"], strict=True)]
    store.close()
    return searches, len(products)


def measure(base: str, searches: list[dict[str, Any]], warmup: int = 20
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sequential requests; per kind (anonymous / personalized) p50, p95, p99 in ms."""
    times: dict[str, list[float]] = {"anonymous": [], "personalized": []}
    answers = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for k, s in enumerate(searches):
            personal = k % 2 == 1
            body: dict[str, Any] = {"query": s["query"], "n": PAGE}
            if personal:
                body["user_id"] = s["user"]
            t = time.perf_counter()
            r = client.post("/v1/search", json=body)
            dt = 1000 * (time.perf_counter() - t)
            r.raise_for_status()
            if k >= warmup:
                times["personalized" if personal else "anonymous"].append(dt)
            answers.append({**s, "personal": personal, **r.json()})
    out: dict[str, Any] = {}
    for kind, v in times.items():
        a = np.array(v)
        out[kind] = {"requests": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
                     "p95_ms": round(float(np.percentile(a, 95)), 1),
                     "p99_ms": round(float(np.percentile(a, 99)), 1)}
    return out, answers


def served(url: str, searches: list[dict[str, Any]]
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`measure` against a freshly started server (it loads the bundle's ranker)."""
    port = free_port()
    exe = Path(sys.executable).with_name("shelfwise")
    server = Server([str(exe), "serve", "--store", url, "--bundles", str(WORK / "bundles"),
                     "--port", str(port)], {**os.environ, "OMP_NUM_THREADS": "1"},
                    WORK / "server.log", port)
    try:
        server.wait_health(300)
        return measure(server.base, searches)
    finally:
        server.stop()


def mrr(answers: list[dict[str, Any]]) -> float:
    ranks = []
    for a in answers:
        ids = [i["item_id"] for i in a["items"]]
        ranks.append(1.0 / (ids.index(a["target"]) + 1) if a["target"] in ids else 0.0)
    return round(float(np.mean(ranks)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log-queries", type=int, default=2000,
                    help="phase-1 searches (measured, then clicked and learned from)")
    ap.add_argument("--queries", type=int, default=600, help="phase-2 searches")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    url = f"sqlite:///{WORK / 'shop.db'}"
    t = time.perf_counter()
    searches, n_items = build_store(url)
    rng = np.random.default_rng(0)
    picked = [searches[i] for i in rng.permutation(len(searches))]
    users = list(dict.fromkeys(s["user"] for s in picked))  # phases share no user: a phase-1
    phase1, phase2 = [], []                                  # click is history in phase 2
    for u in users:
        mine = [s for s in picked if s["user"] == u]
        if len(phase1) < args.log_queries:
            phase1 += mine
        else:
            phase2 += mine
    phase1, phase2 = phase1[: args.log_queries], phase2[: args.queries]
    store = open_store(url)
    cfg = TrainConfig(generators=[
        GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
        GeneratorSpec(name="semantic", weight=0.3, params={"encoder": "use"}),
        GeneratorSpec(name="popularity", weight=0.05)], tune_weights=False)
    train_bundle(interactions_from_store(store), WORK / "bundles", cfg)
    setup_s = time.perf_counter() - t
    print(f"{n_items} items; store and bundle in {setup_s:.0f} s", flush=True)

    fused, answers = served(url, phase1)
    print("fused:", fused, flush=True)
    clicks = [Event(id=f"click-{a['request_id']}", type=EventType.CLICK, user_id=a["user"],
                    item_id=a["target"], request_id=a["request_id"],
                    timestamp=datetime.now(UTC))
              for a in answers if a["personal"] and a["target"] in
              {i["item_id"] for i in a["items"]}]
    store.add_events(clicks)
    t = time.perf_counter()
    report = train_search_ranker(store, Recommender(load_bundle(WORK / "bundles"), store))
    train_s = time.perf_counter() - t
    # the served bundle with the learned ranker, published as `shelfwise train` would
    bundle = load_bundle(WORK / "bundles")
    bundle.search_ranker = report.ranker
    bundle.manifest = bundle.manifest.model_copy(
        update={"version": f"{bundle.version}-search"})
    publish_bundle(bundle, WORK / "bundles")
    print(report.summary(), flush=True)
    learned, answers2 = served(url, phase2)
    print("learned:", learned, flush=True)
    personal = [a for a in answers2 if a["personal"]]
    write_results("search_http", {
        "protocol": "Instacart products as the catalog; purchases before each user's last "
                    "order as events; query = the aisle name of a product of a test user's "
                    "last order (searches shuffled, seed 0; the two phases have disjoint "
                    "users); n = 48; one request at a time "
                    "from an httpx client to "
                    "`shelfwise serve` on loopback (uvicorn, one worker, OMP_NUM_THREADS=1); "
                    "first 20 requests of each phase are warm-up; alternate requests carry "
                    "the user id",
        "items": n_items, "setup_seconds": round(setup_s, 1),
        "fused": {"ranker": answers[-1]["ranker"], **fused,
                  f"personalized_mrr@{PAGE}": mrr([a for a in answers if a["personal"]])},
        "search_ranker": {"summary": report.summary(), "trained": report.trained,
                          "logged_searches": report.searches, "clicked": report.labelled,
                          "train_seconds": round(train_s, 1),
                          "holdout_ndcg10": report.holdout_ndcg10},
        "learned": {"ranker": answers2[-1]["ranker"], **learned,
                    f"personalized_mrr@{PAGE}": mrr(personal)},
    })


if __name__ == "__main__":
    main()
