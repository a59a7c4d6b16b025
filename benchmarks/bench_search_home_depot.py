"""Search pipeline on Home Depot judgements: random, BM25, dense, hybrid (RRF), LambdaMART,
LambdaMART + cross-encoder.

Same protocol and query-disjoint split as ``bench_home_depot.py`` (NDCG@10 over each test
query's judged products, gain ``2^(r-1) - 1``, ties at their expected position; headroom =
(NDCG - random) / (1 - random)). The catalog is every distinct product title of the file; each
query re-ranks its own judged products with ``SearchIndex.candidates`` (the ``/v1/rerank``
path), so catalog-wide ranks are features too. Dense = zero-shot e5 (int8) by default.
``--dense tuned`` takes the fully fine-tuned e5 that ``bench_home_depot.py`` trained on the
train queries, but then LambdaMART learns from dense scores the encoder was fitted to on those
very queries (in training they look far more telling than on new queries), so that variant
measures a leak, not a ranker; it is kept to show the effect. LambdaMART trains on the
train queries' features (labels: relevance mapped to 0..6, gain ``2^(l/3) - 1``, i.e. the
metric's gain), with the number of trees chosen by early stopping on the validation queries;
the cross-encoder, when asked for, trains on train pairs and is mixed into the LambdaMART
score with a weight chosen on the validation queries.

Run: ``.venv/bin/python benchmarks/bench_search_home_depot.py [--cross-encoder]``.
Writes ``benchmarks/results/search_home_depot.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_home_depot import split_queries, summarize
from benchmarks.common import REPO, SHARED_DATA, write_results
from shelfwise.data.presets import read_home_depot_judgements
from shelfwise.ranking import LambdaMART, SearchRankerConfig
from shelfwise.search import FEATURES, FeatureBuilder, SearchIndex
from shelfwise.search.features import MATCH_FEATURES
from shelfwise.text import CachedEncoder, EmbeddingCache, get_encoder
from shelfwise.text.finetune import is_tuned_dir, load_tuned_encoder
from shelfwise.text.pairs import ndcg_by_query

K = 10


def dense_encoder(which: str) -> tuple[Any, str]:
    if which == "tuned":
        tuned = sorted((REPO / "var" / "bench" / "home_depot").glob("full-*"))
        if not tuned or not is_tuned_dir(tuned[0]):
            raise SystemExit("no tuned e5 under var/bench/home_depot: run "
                             "bench_home_depot.py first")
        return (CachedEncoder(load_tuned_encoder(tuned[0]), EmbeddingCache()),
                "e5 full fine-tune")
    return get_encoder("e5", cache_queries=True), "e5 zero-shot"


def feature_rows(frame: pd.DataFrame, index: SearchIndex, feats: FeatureBuilder,
                 pos: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Feature matrix aligned with ``frame`` rows, plus the raw retriever scores."""
    x = np.zeros((len(frame), len(FEATURES)), np.float32)
    raw = {name: np.zeros(len(frame), np.float64) for name in ("bm25", "ngram", "dense",
                                                                  "fused")}
    titles = frame["title"].astype(str).to_numpy()
    for query, rows in frame.groupby("query", sort=False).indices.items():
        docs = np.array([pos[t] for t in titles[rows]], dtype=np.int64)
        cand = index.candidates(docs, query=str(query))
        x[rows] = feats.build(str(query), cand)
        for name in ("bm25", "ngram", "dense"):
            raw[name][rows] = cand.scores[name]
        raw["fused"][rows] = cand.fused
    return x, raw


def groups_of(frame: pd.DataFrame) -> tuple[np.ndarray, list[int]]:
    """Row order that keeps each query's rows together, and the group sizes."""
    codes = pd.factorize(frame["query"])[0]
    order = np.argsort(codes, kind="stable")
    return order, np.bincount(codes).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cross-encoder", action="store_true")
    ap.add_argument("--ce-pairs", type=int, default=3000)
    ap.add_argument("--trees", type=int, default=1000,
                    help="most trees; early stopping on the validation queries picks fewer")
    ap.add_argument("--dense", choices=["zero-shot", "tuned"], default="zero-shot")
    ap.add_argument("--dense-exact-items", type=int, default=None,
                    help="[serve.search] dense_exact_items: 0 puts this 45k catalog on the "
                    "large-catalog path (HNSW list, estimated ranks); results then go to "
                    "search_home_depot_dense_ann.json")
    args = ap.parse_args()
    frame = read_home_depot_judgements(SHARED_DATA / "home_depot")
    parts = split_queries(frame)
    titles = sorted(frame["title"].astype(str).unique())
    pos = {t: i for i, t in enumerate(titles)}
    encoder, dense_name = dense_encoder(args.dense)
    t0 = time.perf_counter()
    vectors = np.asarray(encoder.encode_items(titles), np.float32)

    uq = sorted(frame["query"].astype(str).unique())  # batch-encode every query once
    qvec = dict(zip(uq, np.asarray(encoder.encode_queries(uq), np.float32), strict=True))

    def encode(q: str) -> np.ndarray:
        return qvec[q] if q in qvec else np.asarray(encoder.encode_queries([q])[0], np.float32)

    options = {} if args.dense_exact_items is None else {
        "dense_exact_items": args.dense_exact_items}
    index = SearchIndex(**options).fit(titles, vectors, encode)
    feats = FeatureBuilder(index, titles)
    build_s = time.perf_counter() - t0
    print(f"catalog {len(titles)} titles indexed in {build_s:.0f} s ({dense_name})", flush=True)
    data = {}
    for name in ("train", "val", "test"):
        t = time.perf_counter()
        data[name] = feature_rows(parts[name], index, feats, pos)
        print(f"features {name}: {len(parts[name])} rows in {time.perf_counter() - t:.0f} s",
              flush=True)
    test = parts["test"]
    rows: list[dict[str, Any]] = []
    random_q = ndcg_by_query(test, np.zeros(len(test)), K)
    rand = float(random_q.mean())
    rows.append(summarize("random (expected)", random_q, rand, 0))
    x_test, raw_test = data["test"]
    for name, key in (("bm25 (stemmed)", "bm25"), (f"dense ({dense_name})", "dense"),
                      ("hybrid RRF (bm25+ngram+dense)", "fused")):
        rows.append(summarize(name, ndcg_by_query(test, raw_test[key], K), rand, 0))

    x_tr, _ = data["train"]
    tr, va = parts["train"], parts["val"]
    labels = np.round((tr["relevance"].to_numpy() - 1) * 3).astype(int)
    order, groups = groups_of(tr)
    v_labels = np.round((va["relevance"].to_numpy() - 1) * 3).astype(int)
    v_order, v_groups = groups_of(va)
    x_va = data["val"][0]
    ranker = None
    for label, names in (("LambdaMART, without the word-match features",
                          [f for f in FEATURES if f not in MATCH_FEATURES]),
                         ("LambdaMART", list(FEATURES))):
        cols = [FEATURES.index(f) for f in names]
        t = time.perf_counter()
        ranker = LambdaMART(SearchRankerConfig(
            n_estimators=args.trees, learning_rate=0.03, num_leaves=15, min_child_samples=50,
            label_gain=[2 ** (k / 3) - 1 for k in range(7)], n_jobs=2)).fit(
            x_tr[order][:, cols], labels[order], groups, names,
            valid=(x_va[v_order][:, cols], v_labels[v_order], v_groups))
        fit_s = time.perf_counter() - t
        ltr_q = ndcg_by_query(test, ranker.predict(x_test[:, cols]), K)
        rows.append(summarize(label, ltr_q, rand, fit_s, trees=ranker.best_iteration_,
                              importance_gain=dict(sorted(ranker.importance().items(),
                                                          key=lambda kv: -kv[1]))))
    assert ranker is not None
    if args.cross_encoder:
        rows.append(cross_encoder_stage(args, parts, ranker, data, rand))
    write_results("search_home_depot" if args.dense_exact_items is None
                  else "search_home_depot_dense_ann", {
        "protocol": "Home Depot judgements, query-disjoint split of bench_home_depot.py "
                    "(seed 0, 20% test); NDCG@10 over each query's judged products, gain "
                    "2^(r-1)-1, ties at expected position; headroom vs expected random order",
        "catalog_titles": len(titles), "dense_encoder": dense_name,
        "dense_path": "HNSW list + estimated ranks" if index.approximate else "exact",
        "index_build_seconds": round(build_s, 1), "results": rows})


def cross_encoder_stage(args: argparse.Namespace, parts: dict[str, pd.DataFrame],
                        ranker: LambdaMART, data: dict[str, Any], rand: float) -> dict[str, Any]:
    """Train a cross-encoder on train pairs; mix z-scored CE and LambdaMART per query."""
    from shelfwise.text.cross_encoder import CrossEncoderScorer, train_cross_encoder

    tr = parts["train"].sample(n=min(args.ce_pairs, len(parts["train"])), random_state=0)
    pairs = [(str(q), str(t), float((r - 1) / 2)) for q, t, r in
             zip(tr["query"], tr["title"], tr["relevance"], strict=True)]
    out = REPO / "var" / "bench" / "search_ce"
    if not (out / "shelfwise_cross_encoder.json").exists():
        train_cross_encoder(pairs, out)
    train_s = float(json.loads((out / "shelfwise_cross_encoder.json").read_text())["seconds"])
    scorer = CrossEncoderScorer.load(out)

    def ce(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, float]:
        cached = out / f"scores-{name}.npz"  # scoring is the slow part: reuse on rerun
        if cached.exists():
            z = np.load(cached)
            return z["scores"], float(z["seconds"])
        s = np.zeros(len(frame))
        start = time.perf_counter()
        for query, rows in frame.groupby("query", sort=False).indices.items():
            s[rows] = scorer.score(str(query), frame["title"].astype(str).to_numpy()[rows])
        seconds = time.perf_counter() - start
        np.savez(cached, scores=s, seconds=seconds)
        return s, seconds

    def mix(frame: pd.DataFrame, a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
        z = np.zeros(len(frame))
        for _, rows in frame.groupby("query", sort=False).indices.items():
            za = (a[rows] - a[rows].mean()) / (a[rows].std() + 1e-9)
            zb = (b[rows] - b[rows].mean()) / (b[rows].std() + 1e-9)
            z[rows] = (1 - w) * za + w * zb
        return z

    val, test = parts["val"], parts["test"]
    ce_val, _ = ce(val, "val")
    ltr_val = ranker.predict(data["val"][0])
    grid = [round(w, 2) for w in np.linspace(0, 1, 11)]
    best = max(grid, key=lambda w: float(ndcg_by_query(val, mix(val, ltr_val, ce_val, w),
                                                       K).mean()))
    ce_test, score_s = ce(test, "test")
    ltr_test = ranker.predict(data["test"][0])
    q = ndcg_by_query(test, mix(test, ltr_test, ce_test, best), K)
    ce_only = float(ndcg_by_query(test, ce_test, K).mean())
    return summarize("LambdaMART + cross-encoder", q, rand, train_s, ce_weight=best,
                     ce_only_ndcg=round(ce_only, 4), ce_train_pairs=len(pairs),
                     ce_train_seconds=round(train_s, 1),
                     ce_ms_per_query=round(1000 * score_s / test["query"].nunique(), 1))


if __name__ == "__main__":
    main()
