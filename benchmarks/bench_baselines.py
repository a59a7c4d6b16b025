"""Popularity, co-occurrence and the served feed blend on Amazon Beauty and Sports.

Protocol (S3-Rec / SASRec): leave-last-out per user, full ranking over all items, seen items
excluded. Co-occurrence hyperparameters are chosen on validation (second-to-last item, train =
all but the last two); the chosen config is then refitted on all but the last item and tested.

    .venv/bin/python -m benchmarks.bench_baselines
"""

from __future__ import annotations

import itertools
import sys
import time

import pandas as pd

from benchmarks.common import SHARED_DATA, write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut, Split, evaluate, format_table
from shelfwise.retrieval import Cooccurrence, Popularity
from shelfwise.retrieval.blend import Blend

PUBLISHED = {
    "Beauty": {"PopRec HR@10": 0.0152, "SASRec": (0.0605, 0.0318), "S3-Rec": (0.0647, 0.0327)},
    "Sports_and_Outdoors": {"SASRec": (0.0350, 0.0192), "S3-Rec": (0.0385, 0.0204)},
}
GRID = {"window": [1, 2, 3, 5, None], "history_decay": [0.3, 0.5, 0.7, 0.9]}


def run(name: str) -> pd.DataFrame:
    path = SHARED_DATA / "amazon_sequences" / f"{name}.txt"
    data, _ = load_data(None, "amazon_sequences", path)
    metrics = [HitRate(10), NDCG(10)]
    valid_split = LeaveLastOut(validation=True).split(data)
    assert valid_split.valid is not None
    valid_as_test = Split(name="validation", train=valid_split.train, test=valid_split.valid)
    best, best_ndcg = {}, -1.0
    for window, decay in itertools.product(GRID["window"], GRID["history_decay"]):
        params = {"window": window, "history_decay": decay}
        rec = evaluate({"c": Cooccurrence(**params)}, data, valid_as_test, metrics,
                       dataset=name)
        ndcg = float(rec.loc[rec.metric == "NDCG@10", "value"].iloc[0])
        if ndcg > best_ndcg:
            best, best_ndcg = params, ndcg
    print(f"{name}: validation-best cooccurrence {best} (valid NDCG@10 {best_ndcg:.4f})",
          file=sys.stderr)
    models = {
        "popularity": Popularity(),
        "cooccurrence (default)": Cooccurrence(),
        "cooccurrence (tuned)": Cooccurrence(**best),
        "feed blend": Blend([("cooccurrence", Cooccurrence(**best), 1.0),
                             ("popularity", Popularity(), 0.05)]),
    }
    records = evaluate(models, data, LeaveLastOut(), metrics, dataset=name)
    records["tuned_params"] = str(best)
    return records


def main() -> None:
    start = time.perf_counter()
    frames = [run(name) for name in PUBLISHED]
    records = pd.concat(frames, ignore_index=True)
    for frame in frames:
        print(format_table(frame))
    path = write_results("baselines", {
        "protocol": "leave-last-out, full ranking, seen excluded; tuned on validation",
        "published": PUBLISHED,
        "records": records.to_dict(orient="records"),
        "seconds": round(time.perf_counter() - start, 1),
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
