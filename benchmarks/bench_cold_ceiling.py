"""How far can the item-side signals go on cold targets? An oracle ceiling (issue 15, part 5).

Users whose validation target is a cold item (< 5 interactions in ``s[:-2]``) are ranked
**among the cold items only**, as if the model knew the target is cold (a served list does
not: it must also give warm items their places, so the served cold-item HR@10 stays below
these). Scores, each over the cold items, history items excluded:

* ``semantic``: the semantic generator's score (e5 title vectors, the served encoder);
* ``words``: the largest word-and-pair tf-idf cosine to the last 10 history items (the
  pipeline's ``lex_max_history``, ``shelfwise.ranking.lexical``);
* ``cooccurrence``: the co-occurrence generator's score (its few training interactions);
* ``combined``: ``semantic`` + a ``words`` + b ``cooccurrence`` (each scaled to its row
  maximum), a and b chosen on the first half of the users, HR@10 on the second half.

HR@10 / NDCG@10 per score on the second half. Slow parts: e5 title vectors (the embedding
cache makes reruns fast).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_cold_ceiling [amazon_games]

Writes ``benchmarks/results/cold_ceiling_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.bench_cold_start import cold_mask, targets_of
from benchmarks.common import write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.evaluation import LeaveLastOut
from shelfwise.ranking.features import TEXT_HISTORY
from shelfwise.ranking.lexical import TitleTerms
from shelfwise.retrieval import make_generator

WEIGHTS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0)


def scaled(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    top = np.nanmax(np.where(np.isfinite(rows), rows, np.nan), axis=1, keepdims=True)
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return np.where(np.isfinite(rows), rows / top, 0.0).astype(np.float32)


def metrics(scores: NDArray[np.float32], targets: NDArray[np.int64]) -> dict[str, float]:
    rank = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1)
    hit = rank < 10
    return {"HR@10": round(float(hit.mean()), 4),
            "NDCG@10": round(float(np.where(hit, 1 / np.log2(rank + 2.0), 0).mean()), 4)}


def run(dataset: str) -> dict[str, Any]:
    data, name = load_data(None, dataset, None)
    if data.item_text is None:
        raise SystemExit(f"{dataset} has no item texts")
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    cold = np.flatnonzero(cold_mask(split.train, np.arange(data.n_items)))
    targets = targets_of(split.valid)
    users = np.flatnonzero(np.isin(targets, cold))
    histories = [split.valid.histories[u] for u in users]
    at = np.searchsorted(cold, targets[users])  # target's column among the cold items
    start = time.perf_counter()
    parts: dict[str, NDArray[np.float32]] = {}
    for gen_name in ("semantic", "cooccurrence"):
        gen = make_generator(gen_name).fit(split.train)
        parts[gen_name] = np.vstack([
            getattr(gen, "score_exact", gen.score)(histories[lo:lo + 512])[:, cold]
            for lo in range(0, len(histories), 512)])
    terms = TitleTerms.fit(data.item_text)
    assert terms is not None
    words = np.full((len(histories), len(cold)), np.nan, np.float32)
    for r, h in enumerate(histories):
        _, best = terms.similarities([h], cold, np.array([0, len(cold)]), TEXT_HISTORY)
        words[r] = best
    parts["words"] = words
    for r, h in enumerate(histories):  # history items are never recommended
        seen = np.searchsorted(cold, h)
        seen = seen[(seen < len(cold)) & (cold[np.minimum(seen, len(cold) - 1)] == h)]
        for p in parts.values():
            p[r, seen] = -np.inf
    norm = {k: scaled(v) for k, v in parts.items()}
    half = len(users) // 2
    tune_rows, test_rows = np.arange(half), np.arange(half, len(users))

    def combined(a: float, b: float, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        s = norm["semantic"][rows] + a * norm["words"][rows] + b * norm["cooccurrence"][rows]
        s[~np.isfinite(parts["semantic"][rows])] = -np.inf
        return s

    grid = [{"words": a, "cooccurrence": b,
             **metrics(combined(a, b, tune_rows), at[tune_rows])}
            for a, b in itertools.product(WEIGHTS, WEIGHTS)]
    best = max(grid, key=lambda g: (g["HR@10"], g["NDCG@10"]))
    test = {k: metrics(np.where(np.isfinite(v[test_rows]), v[test_rows], -np.inf),
                       at[test_rows]) for k, v in parts.items()}
    test["combined"] = metrics(combined(best["words"], best["cooccurrence"], test_rows),
                               at[test_rows])
    return {"dataset": name, "protocol": __doc__.split("\n\n")[1].strip() if __doc__ else "",
            "cold_items": len(cold), "users_with_cold_target": len(users),
            "tune_users": int(half), "test_users": len(test_rows),
            "chosen_weights": {"words": best["words"], "cooccurrence": best["cooccurrence"]},
            "test": test, "tuning_grid": grid,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("dataset", nargs="?", default="amazon_games",
                    help="a preset with item texts (default amazon_games)")
    args = ap.parse_args()
    out = run(args.dataset)
    print(out["test"], out["chosen_weights"])
    name = f"cold_ceiling_{out['dataset']}"
    print(f"results: {write_results(name, out)}")


if __name__ == "__main__":
    main()
