"""Experiments proven by simulation through a real ``shelfwise serve`` (issue 16, part 3).

Simulated shoppers ask the server for their feed, read which variant each experiment gave them
from the response, click each shown item with a probability that depends on that variant, and
post the clicks as events citing the list's request id; the figures come from the server's own
``GET /v1/experiments/{id}/report``:

- **power**: ``--replications`` A/B experiments with a true ``--lift`` of the CTR in B, each in
  its own part of one layer (so no shopper is in two) with the users per variant that the
  sample-size calculator asks for; power = share of them the fixed-horizon test detects;
- **A/A**: ``--aa`` experiments without any difference, each in its own part of a second layer
  (independent of the power layer), so the runs share no shopper; the false-positive rate of
  the fixed-horizon test and of the always-valid sequential p-value (mSPRT over 20 looks: the
  report read continuously) at alpha = 0.05;
- **SRM**: an experiment on similar items whose B shoppers partly never reach the server
  (a 55/45 split); the report's chi-square check must flag it.

The same figures at the statistics level (thousands of runs, no HTTP) come from
:mod:`benchmarks.experiment_stats_sim`, and the off-policy interval coverage from
:mod:`benchmarks.bench_ope_intervals`; all go to ``benchmarks/results/experiments.json``.

    python -m benchmarks.bench_experiments [--replications 100 --aa 200 --base-ctr 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import experiment_stats_sim
from benchmarks.bench_soak import build_shop
from benchmarks.common import Server, free_port, machine_info, write_results
from shelfwise.experiments.model import bucket
from shelfwise.experiments.stats import sample_size

ALPHA = 0.05


def experiments(args: argparse.Namespace) -> list[dict[str, Any]]:
    ab = [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}]
    out: list[dict[str, Any]] = [
        {"id": f"pow-{r:03d}", "variants": ab, "surfaces": ["feed"], "mde": args.lift,
         "layer": "power", "layer_range": [r / args.replications, (r + 1) / args.replications]}
        for r in range(args.replications)]
    out += [{"id": f"aa-{k:03d}", "variants": ab, "surfaces": ["feed"], "mde": args.lift,
             "layer": "aa", "layer_range": [k / args.aa, (k + 1) / args.aa]}
            for k in range(args.aa)]
    out.append({"id": "srm", "variants": ab, "surfaces": ["similar"], "mde": args.lift})
    return out


async def shoppers(base: str, users: list[str], items: list[str], args: argparse.Namespace,
                   seed: int) -> dict[str, int]:
    """Each shopper: one feed, clicks by variant, the clicks posted. Returns counts."""
    rng = random.Random(seed)
    counts = {"feeds": 0, "click_batches": 0, "similar": 0, "srm_skipped": 0, "errors": 0}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in users:
        queue.put_nowait(u)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            user = queue.get_nowait()
            try:
                r = await client.get(f"/v1/users/{user}/feed", params={"n": args.per_feed})
                r.raise_for_status()
                body = r.json()
                counts["feeds"] += 1
                pow_variant = next((v for e, v in body["experiments"].items()
                                    if e.startswith("pow-")), "A")
                p = args.base_ctr * (1 + args.lift if pow_variant == "B" else 1)
                clicks = [{"type": "click", "user_id": user, "item_id": it["item_id"],
                           "request_id": body["request_id"]}
                          for it in body["items"] if rng.random() < p]
                if clicks:
                    r = await client.post("/v1/events", json={"events": clicks})
                    r.raise_for_status()
                    counts["click_batches"] += 1
                # similar items for the SRM experiment: most of its B shoppers get lost
                if bucket("srm", f"anon:{user}", [0.5, 0.5]) == 1 and \
                        rng.random() < args.srm_loss:
                    counts["srm_skipped"] += 1
                    continue
                r = await client.get(f"/v1/items/{rng.choice(items)}/similar",
                                     params={"n": 5, "session_id": user})
                r.raise_for_status()
                counts["similar"] += 1
            except httpx.HTTPError:
                counts["errors"] += 1

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replications", type=int, default=100, help="A/B runs for power")
    ap.add_argument("--aa", type=int, default=200, help="A/A experiments")
    ap.add_argument("--base-ctr", type=float, default=0.3,
                    help="click probability of a shown item (high, to keep runs short)")
    ap.add_argument("--lift", type=float, default=0.10, help="true relative CTR lift of B")
    ap.add_argument("--per-feed", type=int, default=20, help="items per feed")
    ap.add_argument("--srm-loss", type=float, default=1 - 45 / 55,
                    help="share of the SRM experiment's B shoppers lost (0.18: 55/45)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--ope-replications", type=int, default=200)
    ap.add_argument("--skip-ope", action="store_true")
    ap.add_argument("--ope-results", type=Path, default=None,
                    help="take the OPE block from this bench_ope_intervals results file "
                         "instead of running it again")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    plan = sample_size(args.base_ctr, args.lift, ALPHA, 0.8)
    users_per_arm = -(-plan.per_variant // args.per_feed)  # impressions -> shoppers
    n_users = 2 * users_per_arm * args.replications
    print(f"{n_users:,} shoppers: {users_per_arm} per variant of each of "
          f"{args.replications} A/B runs ({plan.per_variant:,} impressions planned)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="shelfwise-experiments-"))
    url = f"sqlite:///{work / 'shop.db'}"
    items = build_shop(url, work / "bundles", 600, 1000, args.seed)
    port = free_port()
    env = {**os.environ, "SHELFWISE_SERVE__AUTH__RATE": "0", "OMP_NUM_THREADS": "1",
           "SHELFWISE_SERVE__MONITORING__REQUEST_LOG": "false"}
    server = Server([sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles",
                     str(work / "bundles"), "--port", str(port)], env, work / "server.log",
                    port)
    t0 = time.perf_counter()
    try:
        server.wait_health(300)
        with httpx.Client(base_url=server.base, timeout=600) as client:
            for spec in experiments(args):
                client.post("/v1/experiments", json=spec).raise_for_status()
                client.post(f"/v1/experiments/{spec['id']}/start").raise_for_status()
            users = [f"shopper{k}" for k in range(n_users)]
            counts = asyncio.run(shoppers(server.base, users, items, args, args.seed))
            traffic_s = time.perf_counter() - t0
            print(f"traffic: {counts} in {traffic_s:.0f} s", flush=True)
            reports = {spec["id"]: client.get(f"/v1/experiments/{spec['id']}/report").json()
                       for spec in experiments(args)}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    http = summarize(reports, args)
    print(http, flush=True)
    stats_level = experiment_stats_sim.simulate(seed=args.seed)
    payload: dict[str, Any] = {
        "power": http["power"], "aa_false_positive_rate": http["aa_false_positive_rate"],
        "sequential_false_positive_rate": http["sequential_false_positive_rate"],
        "srm_detected": http["srm_detected"], "http": http, "stats_level": stats_level,
        "traffic": counts | {"seconds": round(traffic_s, 1)},
        "params": vars(args) | {"users_per_variant": users_per_arm,
                                "planned_impressions_per_variant": plan.per_variant},
        "machine": machine_info()}
    if args.ope_results is not None:
        ope = json.loads(args.ope_results.read_text())
        payload["ope_source"] = str(args.ope_results)
    elif not args.skip_ope:
        from benchmarks import bench_ope_intervals

        ope = bench_ope_intervals.run(args.ope_replications, args.seed)
    if args.ope_results is not None or not args.skip_ope:
        payload["ope"] = ope["ope"]
        payload["ope_details"] = {k: v for k, v in ope.items() if k != "ope"}
    path = write_results("experiments" if args.replications >= 100 and args.aa >= 200 else
                         "experiments_smoke", payload)
    print(f"wrote {path}")


def summarize(reports: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def ctr(rep: dict[str, Any]) -> dict[str, Any]:
        return dict(rep["comparisons"]["B"]["ctr"])

    def seq(rep: dict[str, Any]) -> dict[str, Any]:
        return dict(rep["comparisons"]["B"]["ctr_sequential"])

    power = [r for k, r in reports.items() if k.startswith("pow-")]
    aa = [r for k, r in reports.items() if k.startswith("aa-")]
    srm = reports["srm"]
    detected = [ctr(r)["p_value"] is not None and ctr(r)["p_value"] < ALPHA
                and ctr(r)["difference"] > 0 for r in power]
    aa_fp = [ctr(r)["p_value"] is not None and ctr(r)["p_value"] < ALPHA for r in aa]
    aa_seq = [seq(r)["p_value"] < ALPHA for r in aa]
    users = [r["variants"]["A"]["users"] + r["variants"]["B"]["users"] for r in power]
    lifts = [ctr(r)["lift"] for r in power if ctr(r)["lift"] is not None]
    return {
        "power": float(np.mean(detected)), "power_runs": len(power),
        "sequential_power": float(np.mean([seq(r)["p_value"] < ALPHA for r in power])),
        "mean_estimated_lift": float(np.mean(lifts)) if lifts else None,
        "true_lift": args.lift,
        "users_per_run_mean": float(np.mean(users)),
        "aa_false_positive_rate": float(np.mean(aa_fp)), "aa_runs": len(aa),
        "sequential_false_positive_rate": float(np.mean(aa_seq)),
        "srm_detected": bool(srm["srm"]["flagged"]),
        "srm_observed": srm["srm"]["observed"], "srm_p_value": srm["srm"]["p_value"],
        "srm_verdict": srm["verdict"],
        "example_verdict": power[0]["verdict"] if power else None,
        "aa_users_per_run": aa[0]["variants"]["A"]["users"] + aa[0]["variants"]["B"]["users"]
        if aa else None}


if __name__ == "__main__":
    main()
