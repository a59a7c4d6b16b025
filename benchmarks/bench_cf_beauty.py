"""Collaborative-filtering generators on Amazon Beauty (S3-Rec preprocessing, 5-core).

Protocol (DESIGN.md, sequential / feed): leave-last-out per user, full ranking over all items,
items of the fed history excluded, HR@10 and NDCG@10 from ``shelfwise.evaluation``.

* Tuning: ``LeaveLastOut(validation=True)``: train = each user's ``s[:-2]``, fed history =
  ``s[:-2]``, target = ``s[-2]``. Every config of a small grid is scored; the best by
  validation NDCG@10 is kept. Parameters that only act at score time (``history_decay``) are
  swept on one fitted model instead of refitting.
* Test: ``LeaveLastOut()``: train = ``s[:-1]``, fed history = ``s[:-1]``, target = ``s[-1]``;
  only the validation-best config of each model is run, through ``evaluate``.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cf_beauty.py`` (~22 min on
one core; ``--quick`` tries one config per model). Writes ``benchmarks/results/cf_beauty.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.common import machine_info
from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import NDCG, EvalSet, HitRate, LeaveLastOut, evaluate
from shelfwise.retrieval import BaseGenerator, Cooccurrence, Popularity, recommend
from shelfwise.retrieval.ease import EASE
from shelfwise.retrieval.implicit_models import ALS, BPR
from shelfwise.retrieval.itemknn import ItemKNN

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
BEAUTY = DATA / "amazon_sequences" / "Beauty.txt"
OUT = REPO / "benchmarks" / "results" / "cf_beauty.json"
METRICS = [HitRate(10), NDCG(10)]
DECAYS = [1.0, 0.7, 0.5, 0.3]


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]


# model -> (class, fit-time grid, score-time grid)
SWEEPS: dict[str, tuple[type[BaseGenerator], list[dict[str, Any]], list[dict[str, Any]]]] = {
    "popularity": (Popularity, [{"half_life_days": None}], [{}]),
    "cooccurrence": (Cooccurrence, grid(window=[3, 5, None]), grid(history_decay=[0.7, 0.5, 0.3])),
    "ease": (EASE, grid(l2=[25.0, 50.0, 100.0, 200.0]), grid(history_decay=DECAYS)),
    "als": (
        ALS,
        grid(factors=[128, 256], alpha=[10.0, 30.0, 100.0], regularization=[1.0]),
        grid(history_decay=DECAYS),
    ),
    "bpr": (
        BPR,
        grid(factors=[64, 128], learning_rate=[0.05, 0.1], iterations=[200]),
        grid(history_decay=DECAYS),
    ),
    "itemknn": (
        ItemKNN,
        grid(neighbors=[100, 200, 400], shrink=[0.0, 50.0, 200.0]),
        grid(history_decay=DECAYS),
    ),
}


def load_beauty(path: Path) -> Interactions:
    """Each line ``user item item ...``, oldest first; the order is the only time."""
    users, items = [], []
    with path.open() as fh:
        for line in fh:
            user, *seq = line.split()
            users += [user] * len(seq)
            items += seq
    return Interactions.from_frame(pd.DataFrame({"user_id": users, "item_id": items}))


def score_on(model: BaseGenerator, ev: EvalSet) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    reco, _ = recommend(model, ev.histories, 10, exclude_seen=True)
    seconds = time.perf_counter() - start
    return {m.name: m.calc(reco, ev.targets) for m in METRICS}, seconds


def with_params(model: BaseGenerator, **params: Any) -> BaseGenerator:
    """The fitted ``model`` with score-time parameters changed (validated, no refit)."""
    model.config = type(model.config)(**{**model.config.model_dump(), **params})
    return model


def tune(name: str, data: Interactions, quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cls, fit_grid, score_grid = SWEEPS[name]
    if quick:
        fit_grid, score_grid = fit_grid[:1], score_grid[:1]
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    rows = []
    for fit_params in fit_grid:
        start = time.perf_counter()
        model = cls(**fit_params).fit(split.train)
        fit_seconds = time.perf_counter() - start
        for score_params in score_grid:
            metrics, _ = score_on(with_params(model, **score_params), split.valid)
            rows.append(
                {"params": {**fit_params, **score_params}, "fit_seconds": fit_seconds, **metrics}
            )
            print(f"  valid {name} {rows[-1]}", flush=True)
        del model
    best = max(rows, key=lambda r: (r["NDCG@10"], r["HR@10"]))
    return best, rows


def trained_user_vectors_als(params: dict[str, Any], data: Interactions) -> dict[str, float]:
    """Reference: implicit's own ALS ranking with its *trained* user vectors (no fold-in).

    Legitimate on this test split only because the fed history equals the training row.
    """
    from implicit.cpu.als import AlternatingLeastSquares

    split = LeaveLastOut().split(data)
    model = AlternatingLeastSquares(
        factors=params["factors"],
        regularization=params["regularization"],
        alpha=params["alpha"],
        iterations=15,
        num_threads=1,
        random_state=0,
    )
    model.fit(split.train.to_csr(binary=True), show_progress=False)
    scores_all = []
    for start in range(0, len(split.test), 2048):
        users = split.test.users[start : start + 2048]
        hist = split.test.histories[start : start + 2048]
        s = (model.user_factors[users] @ model.item_factors.T).astype(np.float32)
        for row, h in enumerate(hist):
            s[row, h] = -np.inf
        scores_all.append(np.argsort(-s, axis=1)[:, :10])
    reco = np.vstack(scores_all)
    return {m.name: m.calc(reco, split.test.targets) for m in METRICS}


def machine() -> dict[str, Any]:
    return {**machine_info(), "threads_used": 1, "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one config per model")
    parser.add_argument("--models", nargs="*", default=list(SWEEPS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    data = load_beauty(BEAUTY)
    print(f"Beauty: {data.n_users} users, {data.n_items} items, {len(data)} interactions")
    test_split = LeaveLastOut().split(data)
    results, sweep = [], []
    for name in args.models:
        best, rows = tune(name, data, args.quick)
        sweep += [{"model": name, **r} for r in rows]
        cls = SWEEPS[name][0]
        model = cls(**best["params"])
        rec = evaluate({name: model}, data, test_split, METRICS, dataset="beauty")
        test = dict(zip(rec["metric"], rec["value"], strict=True))
        _, score_seconds = score_on(model, test_split.test)
        results.append(
            {
                "model": name,
                "params": best["params"],
                "valid": {m.name: best[m.name] for m in METRICS},
                "test": test,
                "fit_seconds": float(rec["fit_seconds"].iloc[0]),
                "score_seconds_all_users": score_seconds,
                "configs_tried": len(rows),
            }
        )
        print(f"TEST {results[-1]}", flush=True)

    reference: dict[str, Any] = {
        "published SASRec (S3-Rec paper)": {"HR@10": 0.0605, "NDCG@10": 0.0318},
    }
    als = next((r for r in results if r["model"] == "als"), None)
    if als is not None:
        reference["implicit ALS, trained user vectors (no fold-in), same params"] = (
            trained_user_vectors_als(als["params"], data)
        )
    n_test = len(test_split.test)
    hr = max((r["test"]["HR@10"] for r in results), default=0.0)
    report = {
        "dataset": {
            "name": "Amazon Beauty (S3-Rec preprocessing)",
            "file": "amazon_sequences/" + BEAUTY.name,
            "users": data.n_users,
            "items": data.n_items,
            "interactions": len(data),
        },
        "protocol": (
            "leave-last-out per user; full ranking over all items; fed-history items excluded; "
            "HR@10/NDCG@10. Tuning on validation only (train s[:-2], history s[:-2], target "
            "s[-2]); test = validation-best config refit on s[:-1], history s[:-1], target s[-1]."
        ),
        "selection": "max validation NDCG@10 (ties: HR@10)",
        "test_users": n_test,
        "hr_standard_error_at_best": float(np.sqrt(hr * (1 - hr) / n_test)),
        "machine": machine(),
        "results": results,
        "reference": reference,
        "validation_sweep": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    for r in results:
        t, v = r["test"], r["valid"]
        print(
            f"{r['model']:<13} test HR {t['HR@10']:.4f} NDCG {t['NDCG@10']:.4f}  "
            f"valid NDCG {v['NDCG@10']:.4f}  fit {r['fit_seconds']:.1f}s  {r['params']}"
        )


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main()
