"""How fast each dashboard page loads on a given shop, in the server and in a real browser.

Starts `shelfwise serve` over a store and its bundles (the demo shop, or the 100k-item shop that
`bench_shop_scale.py` builds), waits until it is ready (search index loaded), optionally posts
some traffic (feeds with clicks, searches, promotions with redemptions, a running A/B
experiment) so every page has something to show, then times each of the seven pages in English
and Chinese:

- ``server_ms``: the HTML answer over HTTP (median of ``--repeats`` after one warm-up);
- ``browser_ms``: headless Debian Chromium (Playwright), from navigation until the load event
  and every plot drawn, with plotly.js already in the browser cache (median of
  ``--repeats``), as a merchandiser clicking between pages sees it.

Target (issue 17): every page under 1 s at 100k items.

    python -m benchmarks.bench_dashboard --store sqlite:////tmp/shop_scale_100000/shop.db \\
        --bundles /tmp/shop_scale_100000/bundles --name shop_scale_100000
    python -m benchmarks.bench_dashboard --demo   # builds the demo shop under /tmp first

Results: ``benchmarks/results/dashboard_<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.common import Server, free_port, write_results

PAGES = {"overview": "/dashboard", "shopper": "/dashboard/shopper?user={user}",
         "item": "/dashboard/item?item={item}", "search": "/dashboard/search?q={query}&user={user}",
         "experiments": "/dashboard/experiments",
         "promotions": "/dashboard/promotions?candidate=egreedy",
         "evaluation": "/dashboard/evaluation"}
CHROMIUM = "/usr/bin/chromium"


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def pick(store_url: str) -> tuple[str, str, str]:
    """The most active user, the most interacted item and its title's first two words."""
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        user = conn.execute(sa.text("SELECT user_id FROM events GROUP BY user_id "
                                    "ORDER BY COUNT(*) DESC LIMIT 1")).scalar_one()
        item = conn.execute(sa.text("SELECT item_id FROM events WHERE item_id IS NOT NULL "
                                    "GROUP BY item_id ORDER BY COUNT(*) DESC LIMIT 1")
                            ).scalar_one()
        title = conn.execute(sa.text("SELECT title FROM items WHERE id = :i"), {"i": item}
                             ).scalar_one_or_none() or "game"
    engine.dispose()
    return str(user), str(item), " ".join(str(title).split()[:2])


def traffic(base: str, headers: dict[str, str], users: int, query: str) -> dict[str, Any]:
    """Feeds with clicks, searches and promotions for ``users`` shoppers under a running
    experiment, so the experiments and promotions pages have data."""
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        http.post("/v1/promotions", json={"promotions": [
            {"id": "bench-points", "text": "Double points"},
            {"id": "bench-bundle", "text": "套装 9 折"}]}).raise_for_status()
        exp = f"bench-{int(time.time())}"
        http.post("/v1/experiments", json={"id": exp, "surfaces": ["feed"], "variants": [
            {"name": "control", "share": 0.5},
            {"name": "varied", "share": 0.5, "overrides": {"diversity": 0.4}}]}
        ).raise_for_status()
        http.post(f"/v1/experiments/{exp}/start").raise_for_status()
        for k in range(users):
            user = f"bench-shopper-{k}"
            feed = http.get(f"/v1/users/{user}/feed", params={"n": 10}).json()
            events: list[dict[str, Any]] = [{"type": "click", "user_id": user,
                                             "item_id": feed["items"][k % 4]["item_id"],
                                             "request_id": feed["request_id"]}]
            chosen = http.post(f"/v1/users/{user}/promotions", json={}).json()
            if chosen["promotions"] and k % 3 == 0:
                events.append({"type": "promotion_redeemed", "user_id": user,
                               "request_id": chosen["request_id"], "context": {
                                   "promotion_id": chosen["promotions"][0]["promotion_id"]}})
            http.post("/v1/events", json={"events": events}).raise_for_status()
            http.post("/v1/search", json={"query": query, "user_id": user}).raise_for_status()
    return {"shoppers": users, "experiment": exp}


def time_server(base: str, headers: dict[str, str], url: str, repeats: int) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=120, headers=headers) as http:
        first = time.perf_counter()
        r = http.get(url)
        first_ms = (time.perf_counter() - first) * 1000
        r.raise_for_status()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            http.get(url).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    return {"first_ms": round(first_ms, 1), "server_ms": round(statistics.median(times), 1),
            "server_max_ms": round(max(times), 1), "bytes": len(r.content)}


def time_browser(base: str, key: str | None, urls: dict[str, str], repeats: int
                 ) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, Any]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        ctx = browser.new_context(
            viewport={"width": 1360, "height": 900},
            extra_http_headers={"Authorization": f"Bearer {key}"} if key else None)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + urls["overview"])  # plotly.js into the cache, as after a first visit
        page.wait_for_load_state("load")
        for name, url in urls.items():
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                page.goto(base + url, wait_until="load")
                page.wait_for_function("""() => [...document.querySelectorAll('.plot')]
                    .every(p => p.querySelector('svg.main-svg'))""", timeout=60_000)
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = {"browser_ms": round(statistics.median(times), 1),
                         "browser_max_ms": round(max(times), 1),
                         "plots": page.locator(".plot svg.main-svg").count()}
        out["_errors"] = {"page_errors": errors}
        browser.close()
    return out


def build_demo(work: Path) -> tuple[str, Path]:
    subprocess.run([sys.executable, "-m", "shelfwise", "demo", "--no-serve", "--workdir",
                    str(work), "--set", 'evaluate.models=["popularity", "cooccurrence", "feed"]'],
                   check=True, stdout=subprocess.DEVNULL)
    return f"sqlite:///{work / 'shelfwise.db'}", work / "bundles"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="store URL of the shop")
    ap.add_argument("--bundles", type=Path, help="its bundles directory")
    ap.add_argument("--demo", action="store_true", help="build the demo shop and time it")
    ap.add_argument("--name", default=None, help="results name (default: the store's folder)")
    ap.add_argument("--key", default=os.environ.get("SHELFWISE_ADMIN_KEY"),
                    help="admin key, when the store has keys (default $SHELFWISE_ADMIN_KEY)")
    ap.add_argument("--traffic", type=int, default=200, help="shoppers to simulate first "
                    "(0: none; writes events, promotions and an experiment to the store)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"),
                    help="what the evaluation page plots")
    args = ap.parse_args()
    if args.demo:
        args.store, args.bundles = build_demo(Path(tempfile.mkdtemp(prefix="dash-demo-")))
        args.name = args.name or "demo"
    if not args.store or not args.bundles:
        ap.error("give --store and --bundles, or --demo")
    name = args.name or Path(str(args.store).split("///")[-1]).parent.name
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-dash-")) / "serve.log"
    cmd = [sys.executable, "-m", "shelfwise", "serve", "--store", args.store, "--bundles",
           str(args.bundles), "--port", str(port), "--set", "serve.exploration.slots=2",
           "--set", f'serve.dashboard.results=["{args.results.resolve()}"]']
    server = Server(cmd, {**os.environ}, log, port)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        start_s, _ = server.wait_health(600)
        while httpx.get(f"{server.base}/ready", timeout=10).status_code != 200:
            time.sleep(0.5)
        ready_s = time.perf_counter() - server.t0
        user, item, query = pick(args.store)
        made = traffic(server.base, headers, args.traffic, query) if args.traffic else {}
        urls = {k: v.format(user=user, item=item, query=query.replace(" ", "+"))
                for k, v in PAGES.items()}
        pages: dict[str, Any] = {}
        for lang in ("en", "zh"):
            lang_urls = {k: u + ("&" if "?" in u else "?") + f"lang={lang}"
                         for k, u in urls.items()}
            load_before = load1()
            for k, u in lang_urls.items():
                pages[f"{k}:{lang}"] = {**time_server(server.base, headers, u, args.repeats),
                                        "load_avg": load_before}
            for k, rec in time_browser(server.base, args.key, lang_urls, args.repeats).items():
                if k != "_errors":
                    pages[f"{k}:{lang}"].update(rec)
                else:
                    pages[f"_errors:{lang}"] = rec
        counts = httpx.get(f"{server.base}/health", headers=headers, timeout=10).json()
        worst = max(v.get("browser_ms", 0) for k, v in pages.items() if not k.startswith("_"))
        rec = {"shop": name, "store": args.store.split("://")[0], "counts": counts.get("counts"),
               "server_start_s": round(start_s, 1), "ready_s": round(ready_s, 1),
               "traffic": made, "user": user, "item": item, "query": query,
               "repeats": args.repeats, "pages": pages, "slowest_browser_ms": worst,
               "target_ms": 1000, "meets_target": worst < 1000, "memory_mb": server.memory_mb()}
    finally:
        server.stop()
    path = write_results(f"dashboard_{name}", rec)
    print(f"{'page':<16} {'server ms':>10} {'browser ms':>11} {'load':>5}")
    for k, v in pages.items():
        if not k.startswith("_"):
            print(f"{k:<16} {v['server_ms']:>10} {v.get('browser_ms', '-'):>11} "
                  f"{v['load_avg']:>5}")
    print(f"slowest in the browser: {worst} ms (target < 1000) -> {path}")


if __name__ == "__main__":
    main()
