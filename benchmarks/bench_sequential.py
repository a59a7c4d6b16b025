"""Sequential generators (SASRec, TextSASRec) on Amazon Beauty, Sports and Games, full ranking.

Protocol (DESIGN.md, sequential): ``LeaveLastOut(validation=True)`` — the model trains on each
user's ``s[:-2]``; after every epoch it is scored on validation (history ``s[:-2]``, target
``s[-2]``) and the validation-best epoch is kept (training stops after ``--patience`` epochs
without improvement or when the wall-clock ``--budget-min`` would be exceeded). That model is
then tested once: history ``s[:-1]`` (the validation item is fed, not trained on, as in the
original SASRec code and S3-Rec's numbers), target ``s[-1]``. Full ranking over all items, items
of the fed history excluded, HR@10 / NDCG@10. The **cold-item slice** is the test users whose
target item has fewer than 5 interactions in the training data.

Each (dataset, model) runs in its own process so peak RSS (``ru_maxrss``: data loading +
training + evaluation) is that model's:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_sequential --dataset beauty \
        --model sasrec --budget-min 30       # writes var/sequential/beauty_sasrec.json
    .venv/bin/python -m benchmarks.bench_sequential --merge  # -> results/sequential.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, SHARED_DATA, write_results
from benchmarks.sequential_models import CLASSES, params
from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import NDCG, EvalSet, HitRate, LeaveLastOut
from shelfwise.retrieval import SASRec, recommend

PARTS = REPO / "var" / "sequential"
METRICS = [HitRate(10), NDCG(10)]
COLD_BELOW = 5
PUBLISHED = {
    "beauty": {"SASRec (S3-Rec paper, CIKM 2020)": {"HR@10": 0.0605, "NDCG@10": 0.0318},
               "S3-Rec": {"HR@10": 0.0647, "NDCG@10": 0.0327}},
    "sports": {"SASRec (S3-Rec paper, CIKM 2020)": {"HR@10": 0.0350, "NDCG@10": 0.0192},
               "S3-Rec": {"HR@10": 0.0385, "NDCG@10": 0.0204}},
    "games": {},
}
FILES = {"beauty": "Beauty.txt", "sports": "Sports_and_Outdoors.txt"}


def load(dataset: str) -> Interactions:
    if dataset in FILES:
        from benchmarks.bench_cf_beauty import load_beauty  # same "user item item ..." format

        return load_beauty(SHARED_DATA / "amazon_sequences" / FILES[dataset])
    from shelfwise.cli.evaluate_cmd import load_data

    data, _ = load_data(None, "amazon_games", None)
    return data


def metrics_on(model: SASRec, ev: EvalSet, rows: np.ndarray | None = None) -> dict[str, float]:
    hist = ev.histories if rows is None else [ev.histories[r] for r in rows]
    targets = ev.targets if rows is None else [ev.targets[r] for r in rows]
    reco, _ = recommend(model, hist, 10, exclude_seen=True)
    return {m.name: float(m.calc(reco, targets)) for m in METRICS}


def run(dataset: str, model_name: str, budget_min: float, patience: int, max_epochs: int,
        valid_users: int | None, overrides: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load(dataset)
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    valid, test = split.valid, split.test
    if valid_users is not None and valid_users < len(valid):  # cheaper epoch selection
        rows = np.sort(np.random.default_rng(0).choice(len(valid), valid_users, replace=False))
        valid = EvalSet(valid.users[rows], [valid.histories[r] for r in rows],
                        [valid.targets[r] for r in rows])
    p = params(dataset, model_name, **{**overrides, "epochs": max_epochs})
    model = CLASSES[model_name](**p)
    best: dict[str, Any] = {"NDCG@10": -1.0, "epoch": 0}
    stop = {"by": "max_epochs"}
    curve: list[dict[str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="seq-best-"))
    fit_start = time.perf_counter()
    budget = budget_min * 60.0

    def on_epoch(epoch: int, m: SASRec) -> bool:
        ev_start = time.perf_counter()
        val = metrics_on(m, valid)
        row = {**m.history_[-1], **{f"valid_{k}": v for k, v in val.items()},
               "valid_seconds": time.perf_counter() - ev_start}
        curve.append(row)
        print(json.dumps(row), flush=True)
        if val["NDCG@10"] > best["NDCG@10"]:
            best.update(val, epoch=epoch)
            m.save(tmp / "best")
        elapsed = time.perf_counter() - fit_start
        per_epoch = elapsed / epoch
        if elapsed + per_epoch > budget:
            print(f"budget: stopping after epoch {epoch} ({elapsed:.0f}s)", flush=True)
            stop["by"] = "budget"
            return True
        if epoch - int(best["epoch"]) >= patience:
            stop["by"] = "patience"
            return True
        return False

    model.fit(split.train, on_epoch=on_epoch)
    fit_seconds = time.perf_counter() - fit_start
    kept = CLASSES[model_name].load(tmp / "best")
    if model_name == "sasrec_text":
        kept.set_encoder(model.encoder)  # type: ignore[attr-defined]
    counts = np.bincount(split.train.item_idx, minlength=data.n_items)
    targets = np.array([int(t[0]) for t in test.targets])
    cold = np.flatnonzero(counts[targets] < COLD_BELOW)
    score_start = time.perf_counter()
    test_all = metrics_on(kept, test)
    score_seconds = time.perf_counter() - score_start
    test_cold = metrics_on(kept, test, cold) if len(cold) else {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "dataset": dataset,
        "model": model_name,
        "data": {"users": data.n_users, "items": data.n_items, "interactions": len(data),
                 "train_interactions": len(split.train), "test_users": len(test)},
        "params_of_kept_model": {**p, "epochs": int(best["epoch"])},
        "max_epochs": max_epochs,
        "valid_users_for_selection": len(valid),
        "epochs_run": len(curve),
        "best_epoch": int(best["epoch"]),
        "stopped_by": stop["by"],
        "valid_at_best": {k: best[k] for k in ("HR@10", "NDCG@10")},
        "test": test_all,
        "test_cold_items": {**test_cold, "users": len(cold),
                            "definition": f"test target has < {COLD_BELOW} train interactions"},
        "fit_seconds_total": fit_seconds,
        "fit_seconds_incl_per_epoch_validation": True,
        "train_seconds_to_best_epoch": float(sum(r["seconds"] for r in curve[: best["epoch"]])),
        "score_seconds_test_users": score_seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "wall_seconds": time.perf_counter() - t0,
        "budget_min": budget_min,
        "curve": curve,
    }


def merge() -> Path:
    parts = [json.loads(p.read_text()) for p in sorted(PARTS.glob("*.json"))]
    return write_results("sequential", {
        "protocol": (
            "LeaveLastOut(validation=True): train s[:-2]; epoch picked on validation (history "
            "s[:-2], target s[-2], NDCG@10); test history s[:-1], target s[-1]; full ranking "
            "over all items, history items excluded; HR@10/NDCG@10. Cold slice: test targets "
            f"with < {COLD_BELOW} training interactions."),
        "threads": 1,
        "note": "2-core machine shared with other jobs; seconds are wall-clock under load",
        "published": PUBLISHED,
        "results": parts,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", choices=["beauty", "sports", "games"])
    parser.add_argument("--model", choices=sorted(CLASSES), default="sasrec")
    parser.add_argument("--budget-min", type=float, default=30.0,
                        help="wall-clock training budget; stops before exceeding it")
    parser.add_argument("--patience", type=int, default=3,
                        help="stop after this many epochs without a better validation NDCG@10")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=None,
                        help="pick the epoch on a fixed random sample of this many validation "
                        "users (default: all)")
    parser.add_argument("--set", default="{}", help='JSON overrides, e.g. \'{"lr": 0.001}\'')
    parser.add_argument("--merge", action="store_true", help="combine parts into results")
    args = parser.parse_args()
    if args.merge:
        print(f"wrote {merge()}")
        return
    if args.dataset is None:
        parser.error("--dataset is required (or --merge)")
    if args.model == "sasrec_text" and args.dataset != "games":
        parser.error("sasrec_text needs item text: only the games dataset has titles")
    result = run(args.dataset, args.model, args.budget_min, args.patience, args.max_epochs,
                 args.valid_users, json.loads(args.set))
    PARTS.mkdir(parents=True, exist_ok=True)
    out = PARTS / f"{args.dataset}_{args.model}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dataset", "model", "epochs_run", "best_epoch",
                                             "test", "test_cold_items", "fit_seconds_total",
                                             "peak_rss_mb")}))
    print(f"wrote {out}")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    main()
