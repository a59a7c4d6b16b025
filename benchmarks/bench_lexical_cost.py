"""What the feed ranker's shared-words features cost on a large catalog.

The catalog is ``bench_shop_scale``'s (real Instacart, Games and Home Depot titles with
brand and category, seeded; ``--items``), each item's text as training reads it
(``item_text``). Measured: ``TitleTerms.fit`` time and stored size; then ``--requests``
feed-like calls of ``similarities`` for one history of 20 random items against
``--candidates`` random candidates (the pipeline's merged candidate count is ~200-250),
p50 / p99, with the load average. Then the cold-words candidate source (``top_cold``, the
pipeline's ``cold_words``): a random ``--cold-share`` of the items is cold; the first call's
time (it builds the term -> cold item postings), p50 / p99 of ``--requests`` calls for one
history of 20 random items (the last 10 count) taking the best 50, and a call right after an
item is posted (its tail block is built).

    .venv/bin/python -m benchmarks.bench_lexical_cost [--items 100000] [--cold-share 0.5]

Writes ``benchmarks/results/lexical_cost_<items>.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import SHARED_DATA, write_results
from benchmarks.shop_scale_data import build_items
from shelfwise.data.loading import item_text
from shelfwise.ranking.features import TEXT_HISTORY
from shelfwise.ranking.lexical import TitleTerms


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=250)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--cold-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    items = build_items(SHARED_DATA, args.items, args.seed)
    texts = [item_text(t, [c] if isinstance(c, str) and c else None,
                       b if isinstance(b, str) else None)
             for t, c, b in zip(items["title"], items["category"], items["brand"], strict=True)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    terms = TitleTerms.fit(texts)
    fit_s = time.perf_counter() - start
    assert terms is not None
    m = terms.matrix
    rng = np.random.default_rng(args.seed)
    times = []
    for _ in range(args.requests):
        cands = np.sort(rng.choice(len(texts), args.candidates, replace=False))
        history = [rng.choice(len(texts), 20)]
        t = time.perf_counter()
        terms.similarities(history, cands, np.array([0, len(cands)]), TEXT_HISTORY)
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1e3
    cold = np.flatnonzero(rng.random(len(texts)) < args.cold_share)
    t = time.perf_counter()
    terms.top_cold([rng.choice(len(texts), 20)], cold, 50, TEXT_HISTORY)
    first_ms = 1e3 * (time.perf_counter() - t)
    cold_times = []
    for _ in range(args.requests):
        history = [rng.choice(len(texts), 20)]
        t = time.perf_counter()
        terms.top_cold(history, cold, 50, TEXT_HISTORY)
        cold_times.append(time.perf_counter() - t)
    cold_ms = np.asarray(cold_times) * 1e3
    terms.add([texts[0]])
    t = time.perf_counter()
    terms.top_cold([rng.choice(len(texts), 20)], np.r_[cold, len(texts)], 50, TEXT_HISTORY)
    posted_ms = 1e3 * (time.perf_counter() - t)
    out = {"items": len(texts), "fit_seconds": round(fit_s, 2), "stored_entries": int(m.nnz),
           "stored_mb": round((m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 1e6, 1),
           "mean_text_chars": round(float(np.mean([len(t) for t in texts])), 1),
           "candidates": args.candidates, "requests": args.requests,
           "p50_ms": round(float(np.percentile(ms, 50)), 3),
           "p99_ms": round(float(np.percentile(ms, 99)), 3),
           "cold_words": {"cold_items": int(cold.shape[0]), "first_call_ms": round(first_ms, 1),
                          "p50_ms": round(float(np.percentile(cold_ms, 50)), 3),
                          "p99_ms": round(float(np.percentile(cold_ms, 99)), 3),
                          "after_post_ms": round(posted_ms, 3)},
           "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(out)
    print(f"results: {write_results(f'lexical_cost_{len(texts)}', out)}")


if __name__ == "__main__":
    main()
