"""Amazon Video Games: semantic (text-only) next-item recommendation vs CF, two protocols.

1. Full ranking, leave-last-out (test target = the last item of ``Games.test.inter``), seen
   items excluded, over all 40k users and 16,859 titled items.
2. LLMRank's candidate protocol: the target among the first 20 items of the user's
   ``Games.random`` pool (4,764 users have one), NDCG@10. Published (LLMRank, ECIR 2024, on a
   200-user sample): BM25 0.3461, UniSRec zero-shot 0.4071, ChatGPT 0.5031, GPT-4 0.6288.

The feed blend's weights are tuned on validation (second-to-last item) as ``shelfwise train`` does.

    .venv/bin/python -m benchmarks.bench_games [--encoders e5,use]
    .venv/bin/python -m benchmarks.bench_games --encoders e5,e5-static \
        --blend-encoders e5-static --out games_static
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from benchmarks.common import games_pools, write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.evaluation import (
    MRR,
    NDCG,
    HitRate,
    LeaveLastOut,
    evaluate,
    format_table,
)
from shelfwise.evaluation.runner import evaluate_sampled
from shelfwise.retrieval import EASE, Cooccurrence, Popularity
from shelfwise.retrieval.base import CandidateGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.semantic import Semantic
from shelfwise.retrieval.spec import GeneratorSpec

PUBLISHED_NDCG10_20CAND = {"BM25": 0.3461, "UniSRec zero-shot": 0.4071, "ChatGPT": 0.5031,
                           "GPT-4": 0.6288}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoders", default="e5,use")
    parser.add_argument("--out", default="games", help="results name (results/<out>.json)")
    parser.add_argument("--blend-encoders", default="",
                        help="also the feed blend with these encoders (e.g. e5-static)")
    args = parser.parse_args()
    start = time.perf_counter()
    data, name = load_data(None, "amazon_games", None)
    metrics = [HitRate(10), NDCG(10), MRR(10)]
    split = LeaveLastOut().split(data)
    models: dict[str, CandidateGenerator] = {
        "popularity": Popularity(),
        "cooccurrence": Cooccurrence(),
        "ease": EASE(l2=50.0, history_decay=0.7),
    }
    for enc in args.encoders.split(","):
        models[f"semantic ({enc})"] = Semantic(encoder=enc)
    # tuned inside fit on the split's training part, exactly as `train` serves it
    models["feed blend (tuned)"] = Blend.from_specs([
        GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
        GeneratorSpec(name="semantic", weight=0.3), GeneratorSpec(name="popularity", weight=0.05)])
    for enc in args.blend_encoders.split(","):  # the same blend over another encoder
        if enc:
            models[f"feed blend (tuned, {enc})"] = Blend.from_specs([
                GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
                GeneratorSpec(name="semantic", weight=0.3, params={"encoder": enc}),
                GeneratorSpec(name="popularity", weight=0.05)])
    full = evaluate(models, data, split, metrics, dataset=name)
    print(format_table(full))

    # LLMRank protocol on the users with a candidate pool
    sub, negatives = games_pools(data, split)
    sampled = evaluate_sampled(models, data, sub, [NDCG(10), HitRate(1)], dataset=name,
                               n_negatives=20, negatives=negatives)
    print(format_table(sampled))
    records = pd.concat([full, sampled], ignore_index=True)
    blend = models["feed blend (tuned)"]
    assert isinstance(blend, Blend)
    path = write_results(args.out, {
        "protocols": ["leave-last-out full ranking, seen excluded",
                      "LLMRank: target + first 20 of Games.random, users with a pool"],
        "published_ndcg10_20_candidates": PUBLISHED_NDCG10_20CAND,
        "tuned_blend": {"weights": blend.weights_, "tuning": blend.tuning_},
        "records": records.to_dict(orient="records"),
        "seconds": round(time.perf_counter() - start, 1),
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
