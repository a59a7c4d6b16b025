"""Search at server start: a bundle that carries the search index against one that does not.

Reuses (or builds) the ``bench_shop_scale`` shop of ``<items>`` items under ``--work`` (store
``shop.db``, served from a fresh copy each run; catalog ``items.csv``), trains a bundle with
the ``search_index`` part if there is none (``bundles_search/``, with the embedding cache of
``--cache``), derives from it the same bundle without the part (``bundles_search_nopart/``:
hard links, manifest without it), then starts ``shelfwise serve`` (1 worker unless
``--workers``) for each variant in turn, in ``--rounds`` interleaved rounds:

- ``part``: this tree, the bundle with the part (opened memory-mapped);
- ``nopart``: this tree, the bundle without it (built at start, as old bundles are);
- ``before`` (with ``--before-src DIR``, e.g. a ``git archive`` export of an older commit):
  that source tree serving the bundle without the part.

Per run, each with the 1-minute load average: seconds until ``/health`` answers; the first
search sent right after it (latency, and seconds from launch until it was answered); memory
(RSS, and PSS split into anonymous and file-backed, summed over the server's processes) at
``/health``, after the first search and after ``--searches`` more; their p50/p95/p99 at one
client; then ``POST /v1/items`` of one new item and the first search for it.

    .venv/bin/python -m benchmarks.bench_search_start 100000 --work /tmp/shop_scale_100000 \\
        --cache /tmp/shop_scale_100000/cache --before-src /tmp/before/src

Results go to ``benchmarks/results/search_start_<items>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, RESULTS, SHARED_DATA, machine_info
from benchmarks.shop_scale_data import build_items, build_queries, write_shop

BIN = Path(sys.executable).parent
SERVER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PART = "search_index"


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            todo += [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        out.append(p)
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and PSS (anonymous / file-backed) in MB summed over ``pid`` and its children."""
    keys = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file"}
    total = dict.fromkeys(keys.values(), 0.0)
    for p in tree(pid):
        try:
            lines = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in keys:
                total[keys[key]] += int(value.split()[0]) / 1024
    return {k: round(v, 1) for k, v in total.items()}


def manifest(bundles: Path) -> dict[str, Any]:
    version = (bundles / "LATEST").read_text().strip()
    return dict(json.loads((bundles / version / "manifest.json").read_text()))


# ---- the shop and its bundles -------------------------------------------------------------
def ensure_shop(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, pd.DataFrame]:
    """The store URL and catalog; the shop is built and imported when ``shop.db`` is missing."""
    work: Path = args.work
    url = f"sqlite:///{work / 'shop.db'}"
    if not (work / "shop.db").exists():
        print(f"building the shop under {work}", flush=True)
        write_shop(SHARED_DATA, work, args.items, min(10 * args.items, 1_000_000),
                   max(1, args.items // 2), args.seed)
        for kind in ("items", "events"):
            subprocess.run([str(BIN / "shelfwise"), "import", "--kind", kind,
                            str(work / f"{kind}.csv"), "--store", url, "--no-progress"],
                           env=env, cwd=REPO, check=True)
    items = (pd.read_csv(work / "items.csv") if (work / "items.csv").exists()
             else build_items(SHARED_DATA, args.items, args.seed))
    return url, items


def ensure_bundles(args: argparse.Namespace, url: str, env: dict[str, str]
                   ) -> tuple[Path, Path, dict[str, Any]]:
    """(bundles with the part, the same without it, what training them cost)."""
    with_part, without = args.work / "bundles_search", args.work / "bundles_search_nopart"
    trained: dict[str, Any] = {}
    if not (with_part / "LATEST").exists() or PART not in manifest(with_part)["parts"]:
        print("training a bundle with the search index part", flush=True)
        shutil.rmtree(with_part, ignore_errors=True)
        rss = args.work / "train.maxrss"
        load0, t = load1(), time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), str(BIN / "shelfwise"),
                        "train", "--store", url, "--bundles", str(with_part)], env=env,
                       cwd=REPO, check=True)
        trained = {"train_s": round(time.perf_counter() - t, 1),
                   "train_peak_rss_mb": round(int(rss.read_text().split()[-1]) / 1024, 1),
                   "load": [load0, load1()]}
    m = manifest(with_part)
    trained |= {"fit_seconds": m["fit_seconds"], "search_index": m.get("search_index"),
                "bundle": m["version"]}
    if not (without / "LATEST").exists() or manifest(without)["version"] != m["version"]:
        shutil.rmtree(without, ignore_errors=True)
        src, dst = with_part / m["version"], without / m["version"]
        shutil.copytree(src, dst, copy_function=os.link,
                        ignore=lambda d, names: [PART] if Path(d) == src else [])
        old = {k: v for k, v in m.items() if k != "search_index"}  # as an older train wrote
        old["parts"] = [p for p in m["parts"] if p != PART]
        old["fit_seconds"] = {k: v for k, v in m["fit_seconds"].items() if k != PART}
        (dst / "manifest.json").unlink()
        (dst / "manifest.json").write_text(json.dumps(old, indent=2))
        (without / "LATEST").write_text(m["version"])
    return with_part, without, trained


# ---- one server run -------------------------------------------------------------------------
def search(client: httpx.Client, query: str) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = client.post("/v1/search", json={"query": query, "n": 10}, timeout=300)
    r.raise_for_status()
    return 1000 * (time.perf_counter() - t), dict(r.json())


def run_server(name: str, src: Path | None, bundles: Path, url: str, queries: list[str],
               args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    run_env = {**env, **SERVER_ENV}
    if src is not None:
        run_env["PYTHONPATH"] = str(src)
    log = args.work / f"serve_{name}.log"
    db = args.work / "serve_run.db"  # a copy: the run posts an item, the shop stays as trained
    shutil.copy(url.removeprefix("sqlite:///"), db)
    cmd = [sys.executable, "-m", "shelfwise", "serve", "--store", f"sqlite:///{db}",
           "--bundles", str(bundles),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    rec: dict[str, Any] = {"variant": name, "load_at_launch": load1()}
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=run_env,
                                cwd=src.parent if src is not None else REPO)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{name}: server exited; see {log}")
                try:
                    if client.get("/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(f"{name}: no /health within 600 s; see {log}")
                time.sleep(0.05)
            rec["health_s"] = round(time.perf_counter() - t0, 2)
            rec["memory_at_health_mb"] = memory_mb(proc.pid)
            rec["load_at_health"] = load1()
            first_ms, body = search(client, queries[0])
            rec["first_search_ms"] = round(first_ms, 1)
            rec["first_answer_s"] = round(time.perf_counter() - t0, 2)
            rec["first_hits"] = [h["item_id"] for h in body["items"]]
            rec["memory_after_first_mb"] = memory_mb(proc.pid)
            lat, hits = [], {}
            for q in queries[1:]:
                ms, body = search(client, q)
                lat.append(ms)
                hits[q] = [(h["item_id"], round(float(h["score"]), 6)) for h in body["items"]]
            a = np.asarray(lat)
            rec |= {f"search_p{p}_ms": round(float(np.percentile(a, p)), 1)
                    for p in (50, 95, 99)}
            rec["searches"] = len(lat)
            rec["load_after_searches"] = load1()
            rec["memory_after_searches_mb"] = memory_mb(proc.pid)
            item = {"id": "bench-search-start-new", "title": "Zyxel quantum teakettle 9000",
                    "category": ["Home", "Kitchen"], "price": 42.0}
            t = time.perf_counter()
            client.post("/v1/items", json={"items": [item]}, timeout=300).raise_for_status()
            rec["post_item_ms"] = round(1000 * (time.perf_counter() - t), 1)
            ms, body = search(client, "zyxel quantum teakettle")
            rec["search_after_post_ms"] = round(ms, 1)
            rec["posted_item_found_first"] = bool(body["items"]) and \
                body["items"][0]["item_id"] == item["id"]
            rec["memory_after_post_mb"] = memory_mb(proc.pid)
            rec["hits"] = hits
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return rec


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant, the median over rounds of each figure; ratios part / the others."""
    out: dict[str, Any] = {}
    figures = ["health_s", "first_answer_s", "first_search_ms", "search_p50_ms", "search_p99_ms",
               "search_after_post_ms"]
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        row = {f: float(np.median([r[f] for r in mine])) for f in figures}
        for when in ("at_health", "after_first", "after_searches", "after_post"):
            for k in ("rss", "pss", "pss_anon", "pss_file"):
                row[f"{k}_{when}_mb"] = float(np.median([r[f"memory_{when}_mb"][k]
                                                         for r in mine]))
        out[name] = row
    if "part" in out:
        for other in [n for n in out if n != "part"]:
            out[f"ratio_part_to_{other}"] = {
                k: round(out["part"][k] / out[other][k], 3) for k in out["part"]
                if out[other][k]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("items", type=int)
    ap.add_argument("--work", type=Path, default=None, help="default /tmp/shop_scale_<items>")
    ap.add_argument("--cache", type=Path, default=None,
                    help="embedding cache dir (SHELFWISE_CACHE) for training")
    ap.add_argument("--before-src", type=Path, default=None,
                    help="a shelfwise src/ directory to serve the bundle without the part")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1,
                    help="uvicorn workers per server (results: search_start_<items>_w<N>)")
    ap.add_argument("--variants", default="before,nopart,part",
                    help="which of before (needs --before-src), nopart, part to run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.work = args.work or Path(f"/tmp/shop_scale_{args.items}")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    if args.cache is not None:
        env["SHELFWISE_CACHE"] = str(args.cache)
    url, items = ensure_shop(args, env)
    with_part, without, trained = ensure_bundles(args, url, env)
    # other queries than bench_shop_scale's (seed + 7), the same for every variant
    queries = build_queries(SHARED_DATA, items, args.searches + 1, args.seed + 7)
    every: dict[str, tuple[str, Path | None, Path]] = {
        "before": ("before", None if args.before_src is None else args.before_src.resolve(),
                   without),
        "nopart": ("nopart", None, without), "part": ("part", None, with_part)}
    variants = [every[v] for v in args.variants.split(",")
                if v != "before" or args.before_src is not None]
    runs = []
    for k in range(args.rounds):
        for name, src, bundles in variants:
            rec = run_server(name, src, bundles, url, queries, args, env) | {"round": k}
            runs.append(rec)
            print(f"{name} (round {k}): /health {rec['health_s']} s, first search "
                  f"{rec['first_search_ms']} ms (answered {rec['first_answer_s']} s after "
                  f"launch), p50/p99 {rec['search_p50_ms']}/{rec['search_p99_ms']} ms, "
                  f"PSS after searches {rec['memory_after_searches_mb']}, posted item "
                  f"found {rec['posted_item_found_first']}; load {rec['load_at_launch']}-"
                  f"{rec['load_after_searches']}", flush=True)
    # hits and scores (6 decimals) of every run against the first variant's first run
    same = {name: all(r["hits"] == runs[0]["hits"] for r in runs if r["variant"] == name)
            for name, _, _ in variants}
    result = {"machine": machine_info(), "items": args.items, "workers": args.workers,
              "training": trained, "summary": summary(runs),
              f"hits_equal_to_{runs[0]['variant']}": same,
              "runs": [{k: v for k, v in r.items() if k != "hits"} for r in runs],
              "protocol": "1 synchronous httpx client on the same 2 cores; queries from "
              "shop_scale_data.build_queries(seed + 7): the first sent right after /health, "
              f"then {args.searches} more, anonymous, n=10; memory from /proc/<pid>/smaps_rollup "
              "summed over the server's processes; OMP/OPENBLAS/MKL_NUM_THREADS=1"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"search_start_{args.items}"
                      f"{f'_w{args.workers}' if args.workers > 1 else ''}.json")
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
