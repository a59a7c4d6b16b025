"""One peer table: shelfwise's generators next to installed peers, same split, same metric code.

Protocol: leave-last-out per user (users with >= 3 items), full ranking over the whole catalog,
the fed history excluded, HR@10 / NDCG@10 from ``shelfwise.evaluation``; validation = the
second-to-last item (fit on ``s[:-2]``), test = the last item (fit on ``s[:-1]``, fed
``s[:-1]``). Cold slice: test targets with < 5 training interactions. Each split is written
once (``benchmarks/peers/splits.py``) and read by every model, in-process or in RecBole's venv.

Each (dataset, model) runs in its own subprocess, so fit seconds and peak memory (ru_maxrss,
which includes that model's validation fits of the same size) are per model; each result is
cached in ``benchmarks/results/peers/<dataset>__<model>.json`` with the split hash. The table is
printed and written to ``benchmarks/results/peers.{json,md}``.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_peers \
        --datasets beauty,sports,games --models all       # or e.g. --models ease,implicit_als
    .venv/bin/python -m benchmarks.bench_peers --table    # rebuild the table from the cache

RecBole needs its venv first: ``bash benchmarks/peers/setup_recbole.sh``.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info

CACHE = RESULTS / "peers"
PEER_MODELS = ("implicit_als", "implicit_bpr", "recbole_sasrec")
SHELFWISE_MODELS = ("popularity", "cooccurrence", "ease", "itemknn", "als", "bpr", "semantic")
DECAYS = [1.0, 0.7, 0.5, 0.3]
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# RecBole training-time budget (s of wall clock, one thread), per dataset: CPU-limited.
RECBOLE_BUDGET = {"beauty": 2400.0, "sports": 1800.0, "games": 1800.0}


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*axes.values())]


def beauty_configs() -> dict[str, dict[str, Any]]:
    """Validation-tuned configs of ``bench_cf_beauty`` (same protocol, same split)."""
    report = json.loads((RESULTS / "cf_beauty.json").read_text())
    return {r["model"]: r["params"] for r in report["results"]}


BEAUTY_ONLY = frozenset({"ease", "als", "bpr", "itemknn"})
FIT_KEYS = {"cooccurrence": {"window"}, "ease": {"l2"},
            "als": {"factors", "alpha", "regularization"},
            "bpr": {"factors", "learning_rate", "iterations"},
            "itemknn": {"neighbors", "shrink"}, "popularity": {"half_life_days"},
            "semantic": {"encoder"}}


def shelfwise_grids(dataset: str, model: str) -> tuple[list[dict[str, Any]],
                                                       list[dict[str, Any]]]:
    """(fit-time grid, score-time grid) of a shelfwise model on ``dataset``."""
    if model == "popularity":
        return [{"half_life_days": None}], [{}]
    if model == "semantic":
        # USE-m: on Games titles it beat e5 in bench_games (20-candidate NDCG 0.615 vs 0.585);
        # e5 was also ~50x slow here until int8.py stopped using torch._int_mm without VNNI.
        return [{"encoder": "use"}], grid(profile_decay=[0.8, 0.5])
    if dataset == "beauty" or model in BEAUTY_ONLY:
        # Beauty: already tuned on this exact protocol by bench_cf_beauty. BEAUTY_ONLY models
        # reuse Beauty's config elsewhere too: on the shared 2-core machine there was CPU for
        # one fit per model, not a validation sweep (see the note in peers.md).
        p = beauty_configs()[model]
        return ([{k: v for k, v in p.items() if k in FIT_KEYS[model]}],
                [{k: v for k, v in p.items() if k not in FIT_KEYS[model]}])
    if model == "cooccurrence":
        return grid(window=[3, 5, None]), grid(history_decay=[0.7, 0.5, 0.3])
    if model == "ease":
        return grid(l2=[50.0]), grid(history_decay=[1.0, 0.7, 0.5])  # 1 fit: CPU budget
    p = beauty_configs()[model]  # factor / kNN models: Beauty's fit params, decay re-tuned
    return [{k: v for k, v in p.items() if k in FIT_KEYS[model]}], grid(history_decay=DECAYS)


IMPLICIT_GRIDS = {
    "implicit_als": grid(factors=[128, 256], alpha=[10.0, 30.0], regularization=[1.0]),
    "implicit_bpr": grid(factors=[64, 128], learning_rate=[0.05, 0.1], regularization=[0.01],
                         iterations=[200]),
}


def hook_models(dataset: str) -> dict[str, Callable[[], Any]]:
    """Optional shelfwise models from ``benchmarks/sequential_models.py`` and
    ``benchmarks/pipeline_models.py`` (``models(dataset)`` -> name -> constructor)."""
    found: dict[str, Callable[[], Any]] = {}
    root = Path(__file__).resolve().parent
    for module in ("sequential_models", "pipeline_models"):
        if (root / f"{module}.py").exists():
            mod = importlib.import_module(f"benchmarks.{module}")
            try:
                found.update(mod.models(dataset))
            except Exception as exc:  # a hook without this dataset is skipped, loudly
                print(f"hook {module}: no models for {dataset}: {exc}", file=sys.stderr)
    return found


def all_models(dataset: str) -> list[str]:
    names = [m for m in SHELFWISE_MODELS if m != "semantic" or dataset == "games"]
    return names + list(hook_models(dataset)) + list(PEER_MODELS)


# ---- one (dataset, model), in its own process -------------------------------------------------
def worker(dataset: str, model: str) -> None:
    from threadpoolctl import threadpool_limits

    from benchmarks.peers import runners
    from benchmarks.peers.splits import PeerSplit
    from shelfwise.retrieval import make_generator

    split = PeerSplit.load(dataset)
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        if model in IMPLICIT_GRIDS:
            side = "peer"
            out = runners.run_implicit(split, model.removeprefix("implicit_"),
                                       IMPLICIT_GRIDS[model])
        elif model == "recbole_sasrec":
            side = "peer"
            out = runners.run_recbole(split, RECBOLE_BUDGET[dataset])
        elif model in SHELFWISE_MODELS:
            side = "shelfwise"
            fit_grid, score_grid = shelfwise_grids(dataset, model)
            out = runners.run_shelfwise(split, lambda **p: make_generator(model, **p),
                                        fit_grid, score_grid)
        else:
            side = "shelfwise"
            hooks = hook_models(dataset)
            if model not in hooks:
                raise SystemExit(f"unknown model {model!r} for {dataset}: "
                                 f"choose from {', '.join(all_models(dataset))}")
            out = runners.run_shelfwise(split, lambda **_: hooks[model](), [{}], [{}])
    _, _, targets = split.eval_set("test")
    record = {
        "dataset": dataset, "model": model, "side": side, "split_sha256": split.sha256,
        **runners.metrics_of(out.pop("reco"), targets, split.cold_mask()),
        "peak_mb": out.pop("peak_mb", None) or runners.peak_mb(),
        "wall_seconds": time.perf_counter() - start, **out,
        "machine": machine_info(),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"{dataset}__{model}.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"{dataset} {model}: HR@10 {record['HR@10']:.4f} NDCG@10 {record['NDCG@10']:.4f} "
          f"fit {record['fit_seconds']:.1f}s peak {record['peak_mb']:.0f} MB", flush=True)


# ---- orchestration and the table -------------------------------------------------------------
def cached(dataset: str, model: str) -> dict[str, Any] | None:
    from benchmarks.peers.splits import PeerSplit

    path = CACHE / f"{dataset}__{model}.json"
    if not path.exists():
        return None
    rec: dict[str, Any] = json.loads(path.read_text())
    return rec if rec.get("split_sha256") == PeerSplit.load(dataset).sha256 else None


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(datasets: list[str]) -> str:
    rows, records = [], []
    head = ("| dataset | model | side | HR@10 | NDCG@10 | cold HR@10 | cold NDCG@10 | cold n "
            "| fit s | peak MB |\n|---|---|---|---|---|---|---|---|---|---|")
    for ds in datasets:
        recs = [r for m in all_models(ds) if (r := cached(ds, m)) is not None]
        recs.sort(key=lambda r: -r["NDCG@10"])
        for r in recs:
            records.append({k: v for k, v in r.items() if k != "validation_sweep"})
            rows.append(f"| {ds} | {r['model']} | {r['side']} | {_fmt(r['HR@10'])} | "
                        f"{_fmt(r['NDCG@10'])} | {_fmt(r['cold HR@10'])} | "
                        f"{_fmt(r['cold NDCG@10'])} | {r['cold n']} | "
                        f"{_fmt(r['fit_seconds'], 1)} | {_fmt(r['peak_mb'], 0)} |")
    leaders = []
    for ds in datasets:
        recs = [r for r in records if r["dataset"] == ds]
        if recs:
            top = max(recs, key=lambda r: r["NDCG@10"])
            leaders.append(f"- {ds}: best NDCG@10 is {top['model']} ({top['side']})")
    md = "\n".join([head, *rows, "", *leaders])
    notes = Path(__file__).resolve().parent / "peers" / "NOTES.md"
    if notes.exists():
        md += "\n\n" + notes.read_text()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peers.md").write_text(
        "# Peer table (generated by benchmarks/bench_peers.py)\n\n"
        "Leave-last-out, full ranking, seen items excluded, validation = second-to-last item; "
        "cold = test targets with < 5 training interactions. One thread per model on a "
        "shared 2-core / 24 GB machine; fit s = final fit on s[:-1] (wall clock); peak MB = "
        "ru_maxrss of the model's process (includes its validation fits).\n\n" + md + "\n")
    (RESULTS / "peers.json").write_text(json.dumps(
        {"protocol": (__doc__ or "").split("\n\n")[1], "machine": machine_info(),
         "records": records}, indent=2, default=str))
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="beauty,sports,games")
    parser.add_argument("--models", default="all", help="comma list, or 'all'")
    parser.add_argument("--force", action="store_true", help="ignore cached results")
    parser.add_argument("--table", action="store_true", help="only rebuild the table")
    parser.add_argument("--worker", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    datasets = [d for d in args.datasets.split(",") if d]
    if not args.table:
        for ds in datasets:
            names = all_models(ds) if args.models == "all" else args.models.split(",")
            for model in names:
                if not args.force and cached(ds, model) is not None:
                    print(f"{ds} {model}: cached", flush=True)
                    continue
                print(f"== {ds} {model}", flush=True)
                proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_peers",
                                       "--worker", ds, model], env={**os.environ, **THREAD_ENV})
                if proc.returncode != 0:
                    print(f"{ds} {model}: FAILED (exit {proc.returncode})", flush=True)
    print(table(datasets))


if __name__ == "__main__":
    main()
