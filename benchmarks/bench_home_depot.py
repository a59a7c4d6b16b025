"""Search re-ranking on Home Depot judgements: lexical, zero-shot encoders, fine-tuned e5.

Protocol (DESIGN.md, search): NDCG@10 over each test query's own judged products, gain
``2^(r-1) - 1`` (relevance 1 earns nothing; r is the raters' mean, 1..3), IDCG from the same
judged set; queries whose judged products all have relevance 1 are left out (no gain to rank).
Tied scores count at their expected position (mean discount of the tied positions), so
"random" is the exact expected NDCG of a random order, and BM25's many ties are not broken by
file order. Headroom captured = (NDCG - NDCG_random) / (1 - NDCG_random).

Split: the distinct queries (sorted) shuffled with ``numpy.random.default_rng(0)``; 20% are test,
the rest train; 10% of the train queries are validation (before/after scores inside the
fine-tuning run and ``--split val`` for choosing settings), the others give the training pairs:
query -> title with relevance >= ``--min-relevance`` (default 2.5), optionally with a hard
negative (a title of the same query graded >= 1 lower). BM25's IDF comes from all distinct
titles of the file (the catalog; titles are not labels).

Encoders are scored as served: e5 int8 (zero-shot and tuned), MiniLM fp32, USE. Run:
``.venv/bin/python benchmarks/bench_home_depot.py`` (defaults: LoRA and full, 2,000 pairs,
1 thread; tuned models go to ``var/bench/home_depot/`` and are reused or resumed on rerun).
Writes ``benchmarks/results/home_depot.json`` (not with ``--split val``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, SHARED_DATA, write_results
from shelfwise.data.presets import read_home_depot_judgements
from shelfwise.text import CachedEncoder, EmbeddingCache, TextEncoder, get_encoder
from shelfwise.text.bm25 import BM25Index
from shelfwise.text.finetune import FinetuneConfig, finetune, is_tuned_dir, load_tuned_encoder
from shelfwise.text.pairs import (
    JudgedNDCGEvaluator,
    cosine_scores,
    ndcg_by_query,
    pairs_from_judgements,
)

K = 10
SEED = 0


def split_queries(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """train / val / test frames with disjoint queries (see module docstring)."""
    queries = np.array(sorted(frame["query"].unique()))
    queries = queries[np.random.default_rng(SEED).permutation(len(queries))]
    n_test = round(0.2 * len(queries))
    test, rest = set(queries[:n_test]), queries[n_test:]
    n_val = round(0.1 * len(rest))
    val = set(rest[:n_val])
    part = frame["query"].map(lambda q: "test" if q in test else "val" if q in val else "train")
    return {name: frame[part == name].reset_index(drop=True) for name in ("train", "val", "test")}


def summarize(name: str, per_query: pd.Series, random_ndcg: float | None,
              seconds: float, **extra: Any) -> dict[str, Any]:
    ndcg = float(per_query.mean())
    row: dict[str, Any] = {"method": name, f"ndcg@{K}": round(ndcg, 4),
                           "stderr": round(float(per_query.std(ddof=1) / np.sqrt(len(per_query))),
                                           4),
                           "queries": len(per_query), "seconds": round(seconds, 1), **extra}
    if random_ndcg is not None:
        row["headroom"] = round((ndcg - random_ndcg) / (1 - random_ndcg), 4)
    print(f"{name:<28} NDCG@{K} {ndcg:.4f}  headroom {row.get('headroom', 0):+.3f}  "
          f"({seconds:.0f} s)", flush=True)
    return row


def encoder_scores(encoder: TextEncoder, frame: pd.DataFrame) -> tuple[pd.Series, float]:
    """Per-query NDCG@K of ``encoder``'s cosine ranking, and the seconds it took."""
    t = time.perf_counter()
    per_query = ndcg_by_query(frame, cosine_scores(encoder, frame), K)
    return per_query, time.perf_counter() - t


def paired(per_query: pd.Series, base: pd.Series) -> dict[str, float]:
    """Mean per-query difference to ``base`` with its standard error (same queries)."""
    diff = (per_query - base).dropna()
    return {"delta_vs_e5_zero_shot": round(float(diff.mean()), 4),
            "delta_stderr": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
            "queries_better": int((diff > 1e-9).sum()), "queries_worse": int((diff < -1e-9).sum())}


def run_finetune(method: str, args: argparse.Namespace, parts: dict[str, pd.DataFrame]
                 ) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse / resume) one tuned encoder; returns its directory and run facts."""
    pairs = pairs_from_judgements(parts["train"], min_relevance=args.min_relevance,
                                  hard_negatives=args.hard_negatives, seed=SEED)
    cfg = FinetuneConfig(method=method, max_pairs=args.max_pairs, batch_size=args.batch_size,
                         max_len=args.max_len, lr=args.lr, train_layers=args.train_layers,
                         epochs=args.epochs, symmetric=args.symmetric,
                         temperature=args.temperature,
                         num_threads=args.threads, seed=SEED)
    key = json.dumps({**cfg.training_key(), "min_rel": args.min_relevance,
                      "hard": args.hard_negatives, "split": args.split}, sort_keys=True)
    import hashlib

    out = Path(args.workdir) / f"{method}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if not is_tuned_dir(out):
        val = parts["val"]
        keep = sorted(val["query"].unique())[: args.val_queries]
        evaluator = JudgedNDCGEvaluator(val[val["query"].isin(keep)], k=K)
        resume = (out / "checkpoint.pt").exists()
        print(f"fine-tuning {method} on {min(len(pairs), args.max_pairs)} of {len(pairs)} pairs "
              f"-> {out}{' (resuming)' if resume else ''}", flush=True)
        res = finetune(pairs, out, cfg, evaluator=evaluator, resume=resume, progress=True)
        if not res.finished:
            raise SystemExit("fine-tuning stopped early; rerun to resume")
    manifest = json.loads((out / "shelfwise_encoder.json").read_text())
    steps, seconds = manifest["steps"], manifest["seconds"]
    facts = {"pairs_available": len(pairs), "pairs": manifest["pairs"], "steps": steps,
             "train_seconds": seconds,
             "pairs_per_second": round(manifest["pairs"] * cfg.epochs / seconds, 2),
             "val_before": manifest["before"], "val_after": manifest["after"],
             "final_loss": round(manifest["final_loss"], 4), "config": manifest["config"],
             "hard_negatives": args.hard_negatives, "min_relevance": args.min_relevance}
    print(f"  {steps} steps in {seconds:.0f} s ({facts['pairs_per_second']} pairs/s); val "
          f"{manifest['before']} -> {manifest['after']}", flush=True)
    return out, facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--models", default="random,bm25,minilm,use,e5",
                    help="also: e5-static")
    ap.add_argument("--out", default="home_depot", help="results name (results/<out>.json)")
    ap.add_argument("--methods", default="lora,full", help="fine-tuning methods ('' = none)")
    ap.add_argument("--max-pairs", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--train-layers", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--hard-negatives", action="store_true")
    ap.add_argument("--min-relevance", type=float, default=2.5)
    ap.add_argument("--val-queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(REPO / "var" / "bench" / "home_depot"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    t_all = time.perf_counter()
    path = SHARED_DATA / "home_depot" / "judgements.csv"
    parts = split_queries(read_home_depot_judgements(path))
    frame = parts[args.split]
    if args.split == "val":  # choose settings without the test queries: inner validation
        train = parts["train"]
        qs = np.array(sorted(train["query"].unique()))
        inner = set(qs[np.random.default_rng(SEED + 1).permutation(len(qs))][: len(qs) // 10])
        is_inner = train["query"].isin(inner)
        parts = {"train": train[~is_inner], "val": train[is_inner], "test": parts["test"]}
    print(f"{args.split}: {frame['query'].nunique()} queries, {len(frame)} judged pairs; "
          f"train: {parts['train']['query'].nunique()} queries", flush=True)
    models = [m for m in args.models.split(",") if m]
    rows: list[dict[str, Any]] = []

    t = time.perf_counter()
    random_q = ndcg_by_query(frame, np.zeros(len(frame)), K)
    random_ndcg = float(random_q.mean())
    rows.append(summarize("random (expected)", random_q, None, time.perf_counter() - t))
    if "bm25" in models:
        t = time.perf_counter()
        catalog = sorted(read_home_depot_judgements(path)["title"].unique())
        where = {title: i for i, title in enumerate(catalog)}
        index = BM25Index().fit(catalog)
        scores = np.zeros(len(frame))
        for q, idx in frame.groupby("query").indices.items():
            scores[idx] = index.score(str(q), [where[x] for x in frame["title"].iloc[idx]])
        rows.append(summarize("bm25 (stemmed)", ndcg_by_query(frame, scores, K), random_ndcg,
                              time.perf_counter() - t))
    store = EmbeddingCache()
    methods = [m for m in args.methods.split(",") if m]
    zero_shot: pd.Series | None = None
    for name in ("minilm", "use", "e5", "e5-static"):
        if name in models or (name == "e5" and methods):
            enc = get_encoder(name, num_threads=args.threads)
            per_query, secs = encoder_scores(enc, frame)
            if name == "e5":
                zero_shot = per_query
            label = {"e5": "e5 zero-shot (int8)", "minilm": "minilm", "use": "use",
                     "e5-static": "e5-static (distilled from e5)"}[name]
            extra = paired(per_query, zero_shot) if zero_shot is not None and name != "e5" \
                else {}
            rows.append(summarize(label, per_query, random_ndcg, secs, encoder=enc.id,
                                  **extra))
    tuned: dict[str, Any] = {}
    for method in methods:
        out, facts = run_finetune(method, args, parts)
        enc = CachedEncoder(load_tuned_encoder(out, num_threads=args.threads), store)
        per_query, secs = encoder_scores(enc, frame)
        assert zero_shot is not None
        extra = {k: facts[k] for k in ("pairs", "train_seconds", "pairs_per_second")}
        rows.append(summarize(f"e5 + {method} fine-tune (int8)", per_query, random_ndcg, secs,
                              encoder=enc.id, **extra, **paired(per_query, zero_shot)))
        print(f"  vs zero-shot: {rows[-1]['delta_vs_e5_zero_shot']:+.4f} "
              f"± {rows[-1]['delta_stderr']:.4f}", flush=True)
        tuned[method] = facts

    payload = {
        "benchmark": "home_depot",
        "protocol": (f"NDCG@{K} over each test query's judged products, gain 2^(r-1)-1, IDCG "
                     "from the same set, ties at expected position; queries with no gain "
                     "excluded; headroom = (NDCG - random) / (1 - random)"),
        "split": (f"distinct queries shuffled with numpy default_rng({SEED}): 20% test, 80% "
                  "train, of which 10% validation; query-disjoint"),
        "data": str(path),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
        "finetune": tuned,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    trials = Path(args.workdir) / "val_trials.jsonl"
    if args.split == "test":
        if trials.exists():  # settings tried on validation queries before this run
            payload["validation_trials"] = [
                json.loads(line) for line in trials.read_text().splitlines() if line.strip()]
        print(f"wrote {write_results(args.out, payload)}")
    else:
        trials.parent.mkdir(parents=True, exist_ok=True)
        with trials.open("a") as fh:
            for method, facts in tuned.items():
                row = next(r for r in rows if r["method"].startswith(f"e5 + {method}"))
                cfg = facts["config"]
                fh.write(json.dumps({
                    "method": method, "pairs": facts["pairs"],
                    "hard_negatives": facts["hard_negatives"], "lr": cfg["lr"],
                    "temperature": cfg["temperature"], "train_layers": cfg["train_layers"],
                    "val_ndcg@10": row[f"ndcg@{K}"],
                    "delta_vs_e5_zero_shot": row["delta_vs_e5_zero_shot"],
                    "delta_stderr": row["delta_stderr"],
                    "inner_val_before_after": [facts["val_before"].get(f"ndcg@{K}"),
                                               facts["val_after"].get(f"ndcg@{K}")],
                    "pairs_per_second": facts["pairs_per_second"]}) + "\n")
        print(json.dumps(payload["rows"], indent=1, default=str))


if __name__ == "__main__":
    main()
