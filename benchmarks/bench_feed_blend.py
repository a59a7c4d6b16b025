"""Choose the feed blend's weights on validation, report test (demo shop or any preset).

Protocol: leave-last-out, full ranking, seen excluded. Weights are chosen by NDCG@10 on the
validation target (second-to-last item; train = all but the last two), then every generator is
refitted on all but the last item and the chosen blend is tested on the last item.

    .venv/bin/python -m benchmarks.bench_feed_blend [preset] [path]
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from benchmarks.common import write_results
from shelfwise.bundle import TrainConfig
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut, Split, evaluate, format_table
from shelfwise.retrieval import Cooccurrence, Popularity
from shelfwise.retrieval.blend import Blend, Frozen
from shelfwise.retrieval.semantic import Semantic

GRID = {"cooccurrence": [0.0, 0.25, 0.5, 1.0], "semantic": [0.0, 0.25, 0.5, 1.0],
        "popularity": [0.0, 0.05, 0.2]}


def parts(train: Interactions) -> dict[str, Frozen]:
    return {
        "cooccurrence": Frozen(Cooccurrence(popularity_tiebreak=False).fit(train)),
        "semantic": Frozen(Semantic().fit(train)),
        "popularity": Frozen(Popularity().fit(train)),
    }


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "demo"
    path = sys.argv[2] if len(sys.argv) > 2 else None
    start = time.perf_counter()
    data, name = load_data(None, preset, path)  # type: ignore[arg-type]
    metrics = [HitRate(10), NDCG(10)]
    vsplit = LeaveLastOut(validation=True).split(data)
    assert vsplit.valid is not None
    valid = Split(name="validation", train=vsplit.train, test=vsplit.valid)
    fitted = parts(vsplit.train)
    scores = {}
    for w in itertools.product(*GRID.values()):
        if sum(w) == 0:
            continue
        blend = Blend([(n, fitted[n], x) for n, x in zip(GRID, w, strict=True) if x > 0])
        rec = evaluate({"b": blend}, data, valid, metrics, dataset=name)  # type: ignore[dict-item]
        scores[w] = float(rec.loc[rec.metric == "NDCG@10", "value"].iloc[0])
    best = max(scores, key=lambda k: scores[k])
    weights = dict(zip(GRID, best, strict=True))
    print(f"validation-best weights {weights} (valid NDCG@10 {scores[best]:.4f})")
    test = LeaveLastOut().split(data)
    full = parts(test.train)
    models = {n: f for n, f in full.items()}
    models["feed (default weights)"] = Blend([("cooccurrence", full["cooccurrence"], 1.0),
                                              ("semantic", full["semantic"], 0.3),
                                              ("popularity", full["popularity"], 0.05)])
    models["feed (tuned weights)"] = Blend([(n, full[n], x) for n, x in weights.items() if x > 0])
    # what `shelfwise train` serves and `evaluate --models feed` measures: the default
    # generators, weights tuned inside the blend's own fit on the training part
    models["feed (served: tuned in fit)"] = Blend.from_specs(TrainConfig().generators)
    records = evaluate(models, data, test, metrics, dataset=name)  # type: ignore[arg-type]
    print(format_table(records))
    path_out = write_results(f"feed_blend_{name.replace(':', '_')}", {
        "protocol": "leave-last-out, full ranking, seen excluded; weights tuned on validation",
        "grid": GRID, "validation_ndcg": {str(k): v for k, v in scores.items()},
        "best_weights": weights, "records": records.to_dict(orient="records"),
        "seconds": round(time.perf_counter() - start, 1), "np": np.__version__,
    })
    print(f"results: {path_out}")


if __name__ == "__main__":
    main()
