"""Soak: a real ``shelfwise serve`` (loopback) under a steady request rate for minutes, its
memory sampled every few seconds, to show whether it stays flat.

A synthetic shop (``--items`` titled items in 12 categories, ``--users`` shoppers with a
category taste, 20 events each) is written to the store and trained once; the server then gets
``--rate`` requests per second, open loop (sent on schedule whether or not earlier ones have
answered, at most 64 in flight), in a fixed mix: feeds (a quarter of them with exploration
slots), searches, similar items, carts, promotion choices and event batches of 10 — known
shoppers and a stream of new ones, so per-user state keeps arriving. Every ``--sample``
seconds: the server's RSS (process tree, VmRSS), requests answered, errors, p50/p99 latency.

The verdict is the RSS slope over the second half of the run (MB per minute, least squares)
and the growth from the middle sample to the last; the first half is warm-up (caches, lazy
model loads, the search index). Writes ``benchmarks/results/soak_<backend>.json``
(``soak_<backend>_smoke.json`` for runs under 5 minutes).

    .venv/bin/python -m benchmarks.bench_soak --minutes 10 --rate 50
    .venv/bin/python -m benchmarks.bench_soak --store-url postgresql+psycopg://u@host/db
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import tree_rss_mb, write_results

CATEGORIES = {
    "Kitchen": ["chef knife", "frying pan", "cutting board", "kettle", "spice rack"],
    "Gaming": ["gaming mouse", "mechanical keyboard", "headset", "controller", "mouse pad"],
    "Yoga": ["yoga mat", "foam block", "strap", "meditation cushion", "water bottle"],
    "Books": ["fantasy novel", "cookbook", "travel guide", "comic", "poetry collection"],
    "Garden": ["hose", "pruning shears", "plant pot", "seed kit", "watering can"],
    "Audio": ["earbuds", "speaker", "turntable", "microphone", "amplifier"],
    "Baby": ["stroller", "bottle set", "crib sheet", "teether", "baby monitor"],
    "Office": ["desk lamp", "notebook", "fountain pen", "monitor stand", "stapler"],
    "Outdoor": ["tent", "sleeping bag", "headlamp", "trekking poles", "camp stove"],
    "Pets": ["dog leash", "cat tree", "pet bed", "chew toy", "aquarium filter"],
    "Beauty": ["face serum", "hair dryer", "lip balm", "nail kit", "perfume"],
    "Tools": ["drill", "screwdriver set", "tape measure", "hammer", "work gloves"],
}
ADJECTIVES = ["compact", "premium", "classic", "eco", "pro", "travel", "deluxe", "smart"]
QUERIES = [f"{a} {n}" for a in ("", "cheap ", "best ") for ns in CATEGORIES.values()
           for n in ns[:2]]


def build_shop(url: str, bundles: Path, n_items: int, n_users: int, seed: int) -> list[str]:
    """Write the synthetic catalog and history to ``url`` and train a bundle; the item ids."""
    from shelfwise.bundle import train_bundle
    from shelfwise.data.loading import interactions_from_store
    from shelfwise.data.schemas import Event, EventType, Item
    from shelfwise.storage import open_store

    rng = random.Random(seed)
    cats = list(CATEGORIES)
    items = [Item(id=f"sku{i}", title=f"{rng.choice(ADJECTIVES)} {CATEGORIES[c][i % 5]} "
                  f"{i}", category=[c], price=round(rng.uniform(3, 300), 2))
             for i in range(n_items) for c in [cats[i % len(cats)]]]
    by_cat = {c: [it.id for it in items if it.category[0] == c] for c in cats}
    start = datetime.now(UTC) - timedelta(days=30)
    events = []
    for u in range(n_users):
        taste = rng.sample(cats, 2)
        for k in range(20):
            events.append(Event(
                id=f"h{u}-{k}", type=rng.choice([EventType.VIEW, EventType.CLICK,
                                                  EventType.PURCHASE]),
                user_id=f"user{u}", item_id=rng.choice(by_cat[rng.choice(taste)]),
                timestamp=start + timedelta(minutes=u * 20 + k)))
    store = open_store(url)
    try:
        store.upsert_items(items)
        store.add_events(events)
        train_bundle(interactions_from_store(store), bundles)
    finally:
        store.close()
    return [it.id for it in items]


def request_for(rng: random.Random, items: list[str], n_users: int, k: int
                ) -> tuple[str, str, Any]:
    """The k-th request of the mix: (method, path, JSON body or None)."""
    user = f"user{rng.randrange(n_users)}" if rng.random() < 0.7 else f"new{k}"
    roll = rng.random()
    if roll < 0.35:
        explore = "&explore=2" if rng.random() < 0.25 else ""
        return "GET", f"/v1/users/{user}/feed?n=10{explore}", None
    if roll < 0.55:
        return "POST", "/v1/search", {"query": rng.choice(QUERIES).strip(), "user_id": user}
    if roll < 0.65:
        return "GET", f"/v1/items/{rng.choice(items)}/similar?n=10", None
    if roll < 0.72:
        return "POST", "/v1/cart/recommend", {"user_id": user, "items": rng.sample(items, 2)}
    if roll < 0.77:
        return "POST", f"/v1/users/{user}/promotions", {"n": 1}
    return "POST", "/v1/events", {"events": [
        {"id": f"soak{k}-{j}", "type": rng.choice(["view", "click", "cart"]),
         "user_id": user, "item_id": rng.choice(items)} for j in range(10)]}


async def soak(base: str, pid: int, items: list[str], n_users: int, rate: float,
               seconds: float, sample: float, seed: int) -> list[dict[str, Any]]:
    """Send the mix at ``rate`` per second for ``seconds``; one record per sample period."""
    rng = random.Random(seed)
    window: list[float] = []
    counts = {"ok": 0, "errors": 0}
    samples: list[dict[str, Any]] = []
    errors_seen: list[str] = []
    inflight = asyncio.Semaphore(64)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def one(k: int) -> None:
            method, path, body = request_for(rng, items, n_users, k)
            async with inflight:
                t = time.perf_counter()
                try:
                    r = await http.request(method, path, json=body)
                    ok = r.is_success
                    problem = f"{r.status_code} {method} {path}: {r.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__} {method} {path}"
            if ok:
                counts["ok"] += 1
                window.append(1000 * (time.perf_counter() - t))
            else:
                counts["errors"] += 1
                if len(errors_seen) < 5:
                    errors_seen.append(problem)

        t0 = time.perf_counter()
        next_sample = t0 + sample
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        while (now := time.perf_counter()) < t0 + seconds:
            while k < (now - t0) * rate:  # open loop: catch up with the schedule
                task = asyncio.create_task(one(k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
            if now >= next_sample:
                lat = np.asarray(window or [np.nan])
                samples.append({
                    "t_s": round(now - t0, 1), "rss_mb": round(tree_rss_mb(pid), 1),
                    "answered": counts["ok"], "errors": counts["errors"],
                    "p50_ms": round(float(np.percentile(lat, 50)), 1),
                    "p99_ms": round(float(np.percentile(lat, 99)), 1)})
                print(samples[-1], flush=True)
                window.clear()
                next_sample += sample
            await asyncio.sleep(min(1 / rate, 0.05))
        await asyncio.gather(*tasks)
    if errors_seen:
        print("error samples:", *errors_seen, sep="\n  ")
    samples[-1]["error_samples"] = errors_seen
    return samples


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS slope (MB/min) over the second half and growth from its first to its last sample."""
    half = samples[len(samples) // 2:]
    t = np.asarray([s["t_s"] for s in half]) / 60
    rss = np.asarray([s["rss_mb"] for s in half])
    slope = float(np.polyfit(t, rss, 1)[0]) if len(half) >= 2 else float("nan")
    return {"rss_start_mb": samples[0]["rss_mb"], "rss_mid_mb": half[0]["rss_mb"],
            "rss_end_mb": samples[-1]["rss_mb"],
            "rss_peak_mb": max(s["rss_mb"] for s in samples),
            "second_half_slope_mb_per_min": round(slope, 2),
            "second_half_growth_pct": round(float(100 * (rss[-1] / rss[0] - 1)), 2),
            "answered": samples[-1]["answered"], "errors": samples[-1]["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--store-url", default=None,
                    help="an empty store to use (default: a SQLite file in a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shelfwise-soak-"))
    url = args.store_url or f"sqlite:///{work / 'shop.db'}"
    backend = url.split(":")[0].split("+")[0]
    t = time.perf_counter()
    items = build_shop(url, work / "bundles", args.items, args.users, args.seed)
    print(f"shop built and trained in {time.perf_counter() - t:.0f} s ({work})", flush=True)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SHELFWISE_SERVE__AUTH__RATE": "0",
           "SHELFWISE_SERVE__MONITORING__REQUEST_LOG": "false"}
    with (work / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles",
             str(work / "bundles"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {work / 'server.log'}")
            time.sleep(0.3)
        samples = asyncio.run(soak(base, server.pid, items, args.users, args.rate,
                                   args.minutes * 60, args.sample, args.seed))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    result = verdict(samples)
    print(result)
    smoke = "_smoke" if args.minutes < 5 else ""  # a short run only checks the script
    path = write_results(f"soak_{backend}{smoke}", {
        "protocol": "open-loop steady rate on loopback, one server process; RSS = VmRSS of "
                    "the server process tree; verdict over the second half of the run",
        "params": vars(args) | {"store": backend}, "verdict": result, "samples": samples})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
