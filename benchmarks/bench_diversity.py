"""Accuracy against diversity: the served feed blend re-ranked by MMR, greedy DPP and
calibration at several knob values, on Amazon Beauty or Amazon Games.

Protocol: leave-last-out per user, full ranking over all items (seen items excluded); the
blend (``[train]`` defaults, weights tuned inside its fit as ``shelfwise train`` does) ranks
every item, its top ``--pool`` (100, as served) is re-ranked to 10 by the stage's own function
(:func:`shelfwise.ranking.diversity.diversify`). Metrics at 10: NDCG, HR, ILD (1 − mean
pairwise cosine of the item vectors below), category ILD, catalog and category coverage,
novelty (self-information of training popularity), miscalibration (Steck).

- Games: item vectors = the semantic generator's centred e5 title vectors (what the server
  re-ranks with); category = the platform suffix of the title ("... - PlayStation 2") when
  at least 30 titles share it (else unknown).
- Beauty (no text): item vectors = the S3-Rec attribute ids of ``Beauty_item2attributes.json``
  as unit multi-hot rows (categories and brand); category = the item's most common attribute
  (the broadest category it has).

    .venv/bin/python -m benchmarks.bench_diversity games   # or beauty

Writes ``benchmarks/results/diversity_<dataset>.json`` and ``.png`` (NDCG@10 against ILD@10).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import RESULTS, SHARED_DATA, write_results
from shelfwise.bundle import TrainConfig
from shelfwise.cli.evaluate_cmd import build_models, load_data
from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import (
    ILD,
    NDCG,
    CategoryCoverage,
    CategoryILD,
    Coverage,
    HitRate,
    ItemContext,
    LeaveLastOut,
    Miscalibration,
    Novelty,
)
from shelfwise.evaluation.runner import item_vectors
from shelfwise.ranking.diversity import diversify
from shelfwise.retrieval.base import recommend

KNOBS = "0,0.1,0.2,0.3,0.4,0.5,0.55,0.6,0.65,0.7,0.9"
METHODS = ["mmr", "mmr_mean", "dpp", "calibrated"]
K = 10


def beauty_items(data: Interactions) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Unit multi-hot attribute rows and each item's most common attribute as its category."""
    attrs: dict[str, list[int]] = json.loads(
        (SHARED_DATA / "amazon_sequences" / "Beauty_item2attributes.json").read_text())
    freq = Counter(a for v in attrs.values() for a in v)
    size = max(freq) + 1
    vec = np.zeros((data.n_items, size), np.float32)
    cats = np.full(data.n_items, -1, np.int64)
    for k, e in enumerate(data.items.ids):
        a = attrs.get(e, [])
        if a:
            vec[k, a] = 1.0 / np.sqrt(len(a))
            cats[k] = max(a, key=lambda x: (freq[x], -x))
    return vec, cats


def games_categories(data: Interactions) -> NDArray[np.int64]:
    """The platform suffix of each title (shared by >= 30 titles), else -1."""
    texts = data.item_text or [""] * data.n_items
    tail = [t.rsplit(" - ", 1)[1].strip() if " - " in t else "" for t in texts]
    counts = Counter(tail)
    names = sorted(t for t, c in counts.items() if t and c >= 30)
    code = {t: k for k, t in enumerate(names)}
    return np.asarray([code.get(t, -1) for t in tail], np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=["beauty", "games"])
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--users", type=int, default=0, help="evaluate a sample (0 = all)")
    parser.add_argument("--knobs", default=KNOBS, help="comma-separated, starting with 0")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="a subset replaces those methods' rows in an earlier result")
    args = parser.parse_args()
    knobs = [float(x) for x in args.knobs.split(",")]
    assert knobs[0] == 0.0, "the first knob is 0: the base the others are compared with"
    start = time.perf_counter()
    preset = "amazon_games" if args.dataset == "games" else "amazon_sequences"
    data, name = load_data(None, preset, None)
    split = LeaveLastOut().split(data)
    test = split.test
    users = np.arange(len(test))
    if args.users and args.users < len(users):
        users = np.sort(np.random.default_rng(0).choice(len(users), args.users, replace=False))
    histories = [test.histories[u] for u in users]
    targets = [test.targets[u] for u in users]
    model = build_models(["feed"], TrainConfig())["feed"]
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - t0
    if args.dataset == "games":
        vectors = item_vectors(model)
        assert vectors is not None, "the Games blend has a semantic generator"
        cats = games_categories(data)
    else:
        vectors, cats = beauty_items(data)
    t0 = time.perf_counter()
    pool, scores = recommend(model, histories, args.pool, exclude_seen=True)
    rank_s = time.perf_counter() - t0
    ctx = ItemContext(vectors=vectors, categories=cats,
                      popularity=np.bincount(split.train.item_idx, minlength=data.n_items),
                      histories=histories)
    metrics = [NDCG(K), HitRate(K), ILD(K), CategoryILD(K), Coverage(K), CategoryCoverage(K),
               Novelty(K), Miscalibration(K)]
    hist_cats = [cats[h[-50:]] for h in histories]
    rows: list[dict[str, Any]] = []
    methods = args.methods.split(",")
    for method in methods:
        for knob in knobs:
            if knob == 0.0 and method != methods[0]:
                rows.append({**rows[0], "method": method})
                continue
            t0 = time.perf_counter()
            reco = np.full((len(histories), K), -1, np.int64)
            for u in range(len(histories)):
                ok = pool[u] >= 0
                items = pool[u][ok]
                order = diversify(method, scores[u][ok], knob, K,  # type: ignore[arg-type]
                                  vectors=vectors[items], categories=cats[items],
                                  history_categories=hist_cats[u])
                reco[u, : len(order)] = items[order]
            seconds = time.perf_counter() - t0
            row: dict[str, Any] = {"method": method, "knob": knob,
                                   "ms_per_list": round(1000 * seconds / len(histories), 3)}
            for m in metrics:
                row[m.name] = round(m.calc(reco, targets, n_items=data.n_items, context=ctx)
                                    if hasattr(m, "needs") else
                                    m.calc(reco, targets, n_items=data.n_items), 5)
            rows.append(row)
            print(json.dumps(row), flush=True)
    old = RESULTS / f"diversity_{args.dataset}.json"
    if set(methods) != set(METHODS) and old.is_file():  # merge into the earlier sweep
        rows += [r for r in json.loads(old.read_text())["rows"] if r["method"] not in methods]
        rows.sort(key=lambda r: (METHODS.index(r["method"]), r["knob"]))
        rows.insert(0, rows.pop(next(i for i, r in enumerate(rows) if r["knob"] == 0)))
    base = rows[0]
    for r in rows:
        r["ndcg_rel_change"] = round(r["NDCG@10"] / base["NDCG@10"] - 1, 4)
        r["ild_rel_change"] = round(r["ILD@10"] / base["ILD@10"] - 1, 4)
    ok = [r for r in rows if r["ndcg_rel_change"] >= -0.02 and r["ild_rel_change"] >= 0.25]
    best = max(ok, key=lambda r: (r["ild_rel_change"], r["NDCG@10"]), default=None)
    _plot(rows, args.dataset)
    path = write_results(f"diversity_{args.dataset}", {
        "dataset": name, "protocol": "leave-last-out, full ranking, seen excluded; served "
        f"feed blend, its top {args.pool} re-ranked to {K}",
        "users": len(histories), "pool": args.pool, "fit_seconds": round(fit_s, 1),
        "rank_seconds": round(rank_s, 1),
        "item_vectors": "semantic e5 title vectors (centred)" if args.dataset == "games"
        else "unit multi-hot S3-Rec attributes",
        "categories": "title platform suffix" if args.dataset == "games"
        else "most common attribute",
        "target": "<= 2% relative NDCG@10 loss for >= +25% ILD@10",
        "meets_target": best, "rows": rows,
        "seconds": round(time.perf_counter() - start, 1)})
    print(f"results: {path}; meets target: {best}")


def _plot(rows: list[dict[str, Any]], dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in METHODS:
        pts = [r for r in rows if r["method"] == method]
        ax.plot([r["ILD@10"] for r in pts], [r["NDCG@10"] for r in pts], "o-", label=method)
        for r in pts:
            ax.annotate(f"{r['knob']:g}", (r["ILD@10"], r["NDCG@10"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    base = rows[0]
    ax.axhline(base["NDCG@10"] * 0.98, color="grey", ls=":", lw=1, label="−2% NDCG@10")
    ax.axvline(base["ILD@10"] * 1.25, color="grey", ls="--", lw=1, label="+25% ILD@10")
    ax.set_xlabel("ILD@10 (1 − mean pairwise cosine)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"Amazon {dataset.title()}: diversity knob sweep (labels = knob)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"diversity_{dataset}.png", dpi=120)


if __name__ == "__main__":
    main()
