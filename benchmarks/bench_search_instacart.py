"""Personalized search on Instacart: the aisle name as the query, the product bought as the
answer, the whole 49,688-product catalog searched; plus search latency at that size.

Protocol: each user's orders by ``order_number``. Test queries: every product of the user's
last order, query = that product's aisle name, history = the products of all earlier orders.
Training queries for LambdaMART: the same built from each user's second-to-last order (history
= orders before it), so no test order is ever seen in training. Candidates come from the hybrid
retriever over item texts (product name | department > aisle, as the store builds them) with
depth 300; a query whose product is not among the candidates scores 0. Reported: NDCG@10 and
MRR (reciprocal rank in the served top 100, 0 beyond) for the fused score, LambdaMART without
personal features (they are zeroed) and LambdaMART with them. Latency: one query = retrieve +
features + LambdaMART over the full catalog, single process, timed over the test queries.

Run: ``.venv/bin/python benchmarks/bench_search_instacart.py``.
Writes ``benchmarks/results/search_instacart.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, write_results
from shelfwise.data.loading import item_text
from shelfwise.ranking import LambdaMART, SearchRankerConfig
from shelfwise.search import FEATURES, FeatureBuilder, SearchIndex, UserContext
from shelfwise.search.features import PERSONAL_FEATURES
from shelfwise.text import get_encoder

DEPTH = 300


def load() -> tuple[pd.DataFrame, pd.DataFrame]:
    root = SHARED_DATA / "instacart"
    products = pd.read_csv(root / "products.csv")
    aisles = pd.read_csv(root / "aisles.csv")
    depts = pd.read_csv(root / "departments.csv")
    products = products.merge(aisles, on="aisle_id").merge(depts, on="department_id")
    products = products.sort_values("product_id").reset_index(drop=True)
    orders = pd.read_csv(root / "order_products_sample.csv")
    return products, orders


def queries(orders: pd.DataFrame, pos: dict[int, int], back: int) -> list[dict[str, Any]]:
    """One query per product of each user's ``back``-th last order (1 = last)."""
    out = []
    for user, g in orders.groupby("user_id"):
        numbers = sorted(g["order_number"].unique())
        if len(numbers) <= back:
            continue
        target = numbers[-back]
        before = g[g["order_number"] < target].sort_values(["order_number",
                                                             "add_to_cart_order"])
        hist = np.array([pos[p] for p in before["product_id"]], dtype=np.int64)
        for p in g[g["order_number"] == target]["product_id"]:
            out.append({"user": user, "target": pos[int(p)], "history": hist})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="use", help="dense encoder ('' = lexical only)")
    ap.add_argument("--max-train", type=int, default=4000)
    args = ap.parse_args()
    products, orders = load()
    pos = {int(p): i for i, p in enumerate(products["product_id"])}
    cats = [[str(d), str(a)] for d, a in zip(products["department"], products["aisle"],
                                              strict=True)]
    names = products["product_name"].astype(str).tolist()
    texts = [item_text(n, c) for n, c in zip(names, cats, strict=True)]
    aisle_of = products["aisle"].astype(str).to_numpy()
    t0 = time.perf_counter()
    vectors = encode = None
    if args.encoder:
        enc = get_encoder(args.encoder)
        vectors = np.asarray(enc.encode_items(texts), np.float32)

        aisles = sorted(set(products["aisle"].astype(str)))  # the only queries asked
        qvec = dict(zip(aisles, np.asarray(enc.encode_queries(aisles), np.float32),
                        strict=True))

        def encode(q: str) -> np.ndarray:
            return qvec[q] if q in qvec else np.asarray(enc.encode_queries([q])[0],
                                                        np.float32)
    index = SearchIndex(depth=DEPTH).fit(texts, vectors, encode)
    build_s = time.perf_counter() - t0
    train_q = queries(orders, pos, back=2)
    test_q = queries(orders, pos, back=1)
    rng = np.random.default_rng(0)
    if len(train_q) > args.max_train:
        train_q = [train_q[i] for i in rng.choice(len(train_q), args.max_train, replace=False)]
    # popularity from purchases before each user's last order (no test order counted)
    last = orders.groupby("user_id")["order_number"].transform("max")
    pop = np.zeros(len(products))
    np.add.at(pop, [pos[int(p)] for p in orders[orders["order_number"] < last]["product_id"]], 1)
    feats = FeatureBuilder(index, names, cats, None, pop, vectors)
    print(f"{len(products)} products indexed in {build_s:.0f} s; {len(train_q)} train / "
          f"{len(test_q)} test queries", flush=True)

    def user_ctx(q: dict[str, Any]) -> UserContext:
        h = q["history"]
        prof = None
        if vectors is not None and len(h):
            w = 0.9 ** np.arange(len(h) - 1, -1, -1)
            p = (w[:, None] * vectors[h]).sum(axis=0)
            prof = (p / (np.linalg.norm(p) + 1e-12)).astype(np.float32)
        return UserContext(profile=prof, history=h)

    def rows(qs: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for q in qs:
            query = aisle_of[q["target"]]
            cand = index.retrieve(query)
            x = feats.build(query, cand, user_ctx(q))
            out.append((cand.index, x, cand.fused))
        return out

    t = time.perf_counter()
    tr = rows(train_q)
    te = rows(test_q)
    feat_s = time.perf_counter() - t
    personal = [FEATURES.index(f) for f in PERSONAL_FEATURES]
    results: list[dict[str, Any]] = []
    rankers = {}
    for variant in ("no personal features", "personalized"):
        xs, ys, groups = [], [], []
        for q, (idx, x, _) in zip(train_q, tr, strict=True):
            if q["target"] not in set(idx.tolist()):
                continue
            x = x.copy()
            if variant != "personalized":
                x[:, personal] = 0
            xs.append(x)
            ys.append((idx == q["target"]).astype(int))
            groups.append(len(idx))
        rankers[variant] = LambdaMART(SearchRankerConfig(n_estimators=300, n_jobs=2)).fit(
            np.vstack(xs), np.concatenate(ys), groups, FEATURES)
    for name in ("hybrid RRF", "LambdaMART, no personal features", "LambdaMART personalized"):
        ndcg, rr = [], []
        for q, (idx, x, fused) in zip(test_q, te, strict=True):
            if name == "hybrid RRF":
                s = fused
            else:
                v = "personalized" if "personalized" in name and "no" not in name \
                    else "no personal features"
                x = x.copy()
                if v != "personalized":
                    x[:, personal] = 0
                s = rankers[v].predict(x)
            order = idx[np.lexsort((idx, -s))]
            hit = np.flatnonzero(order[:100] == q["target"])
            r = int(hit[0]) + 1 if len(hit) else 0
            rr.append(1.0 / r if r else 0.0)
            ndcg.append(1.0 / np.log2(r + 1) if r and r <= 10 else 0.0)
        row = {"method": name, "ndcg@10": round(float(np.mean(ndcg)), 4),
               "mrr@100": round(float(np.mean(rr)), 4),
               "mrr_stderr": round(float(np.std(rr, ddof=1) / np.sqrt(len(rr))), 4),
               "queries": len(rr)}
        print(row, flush=True)
        results.append(row)
    recall = float(np.mean([q["target"] in set(i.tolist()) for q, (i, _, _) in
                            zip(test_q, te, strict=True)]))
    lat = []
    ranker = rankers["personalized"]
    if args.encoder:  # latency includes encoding the query, as served
        index.encode_query = lambda q: np.asarray(enc.encode_queries([q])[0], np.float32)
    for q in test_q[:500]:
        start = time.perf_counter()
        query = aisle_of[q["target"]]
        cand = index.retrieve(query)
        ranker.predict(feats.build(query, cand, user_ctx(q)))
        lat.append(1000 * (time.perf_counter() - start))
    latency = {"items": len(products), "queries": len(lat),
               "p50_ms": round(float(np.percentile(lat, 50)), 1),
               "p99_ms": round(float(np.percentile(lat, 99)), 1)}
    print("latency", latency, flush=True)
    write_results("search_instacart", {
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "encoder": args.encoder or None, "index_build_seconds": round(build_s, 1),
        "feature_seconds": round(feat_s, 1), "candidate_recall@300": round(recall, 4),
        "results": results, "latency_in_process": latency})


if __name__ == "__main__":
    main()
