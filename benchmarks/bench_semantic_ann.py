"""What the semantic generator's large-catalog scoring costs in quality: exact cosines against
every item vector, against HNSW top lists scored exactly with every other item given a typical
score (``exact_items`` exceeded; the mode catalogs above 50,000 items are served in).

On one dataset, full ranking, leave-last-out, seen items excluded: HR@10 / NDCG@10 of the
semantic generator alone and of the tuned feed blend (cooccurrence + semantic + popularity,
weights tuned on validation as ``shelfwise train`` does), once exact and once per
``--candidates`` setting with ``exact_items=0`` (so a 17k catalog takes the large-catalog path,
HNSW index included). Also the mean scoring time per user of the semantic generator (one user
at a time, single thread, as a server request scores it).

    .venv/bin/python -m benchmarks.bench_semantic_ann --dataset amazon_games

Results: ``benchmarks/results/semantic_ann_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut, evaluate, format_table
from shelfwise.retrieval.base import CandidateGenerator
from shelfwise.retrieval.blend import FOCUS, Blend
from shelfwise.retrieval.semantic import Semantic
from shelfwise.retrieval.spec import GeneratorSpec


def blend(params: dict[str, Any]) -> Blend:
    return Blend.from_specs([
        GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
        GeneratorSpec(name="semantic", weight=0.3, params=params),
        GeneratorSpec(name="popularity", weight=0.05)])


def request_ms(gen: Semantic, histories: list[Any], n: int = 300) -> float:
    """Mean milliseconds of ``score([history])`` over ``n`` histories, one thread."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        for h in histories[:20]:
            gen.score([h])
        start = time.perf_counter()
        for h in histories[:n]:
            gen.score([h])
    return round((time.perf_counter() - start) / min(n, len(histories)) * 1e3, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon_games", help="a preset name or a data path")
    ap.add_argument("--candidates", default="500,1000,2000",
                    help="ann_candidates settings to compare with exact scoring")
    ap.add_argument("--focus", default=None, help="Blend.focus settings for the ANN blends "
                    "(the other parts' best items the semantic part also scores exactly); "
                    f"default {FOCUS} only. Results then go to semantic_ann_<data>_focus.json")
    args = ap.parse_args()
    focuses = [int(f) for f in args.focus.split(",")] if args.focus else [FOCUS]
    start = time.perf_counter()
    path_arg = Path(args.dataset)
    data, name = (load_data(None, None, path_arg) if path_arg.exists()
                  else load_data(None, args.dataset, None))
    split = LeaveLastOut().split(data)
    settings: dict[str, dict[str, Any]] = {"exact": {}}
    for k in args.candidates.split(","):
        settings[f"ann top {int(k)}"] = {"exact_items": 0, "ann_candidates": int(k)}
    models: dict[str, CandidateGenerator] = {}
    for label, params in settings.items():
        models[f"semantic ({label})"] = Semantic(**params)
        for focus in focuses if params else [FOCUS]:  # exact scoring has no focus
            b = blend(params)
            b.focus = focus
            tag = label if focus == FOCUS or not params else f"{label}, focus {focus}"
            models[f"feed blend ({tag})"] = b
    table = evaluate(models, data, split, [HitRate(10), NDCG(10)], dataset=name)
    print(format_table(table))
    histories = [h for h in split.test.histories if len(h)]
    timing = {}
    for label in settings:
        gen = models[f"semantic ({label})"]
        assert isinstance(gen, Semantic)
        timing[label] = request_ms(gen, histories)
    print("semantic score() per request, ms:", timing)
    weights = {}
    for label, model in models.items():
        if isinstance(model, Blend):
            weights[label] = model.weights_
    out = write_results(f"semantic_ann_{name}{'_focus' if args.focus else ''}", {
        "protocol": "leave-last-out full ranking, seen excluded; blend weights tuned on "
                    "validation per setting; request_ms = one history per score() call, "
                    "one thread",
        "n_items": int(data.n_items), "settings": settings, "focus": focuses,
        "blend_weights": weights,
        "request_ms": timing, "records": table.to_dict(orient="records"),
        "seconds": round(time.perf_counter() - start, 1)})
    print(f"results: {out}")


if __name__ == "__main__":
    main()
