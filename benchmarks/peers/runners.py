"""Fit-and-score of one (dataset, model) of the peer table; run by ``bench_peers.py --worker``.

Every model reads the same :class:`PeerSplit` and ends in the same place: a ``(n_test, 10)``
array of item indices with the fed history excluded, scored by shelfwise's ``HitRate(10)`` and
``NDCG(10)`` (overall and on the cold-item slice).

* shelfwise generators: tuned on validation (fit on ``s[:-2]``, fed ``s[:-2]``, target
  ``s[-2]``; fit-time grid x score-time grid, best by NDCG@10), then refit on ``s[:-1]`` and
  ranked by ``shelfwise.retrieval.recommend`` (seen excluded).
* implicit ALS / BPR, used natively: ``model.fit(user_items)`` then
  ``model.recommend(users, user_items[users], N=10, filter_already_liked_items=True)`` with its
  own learned user factors (test history = the user's training row, so this is legitimate).
* RecBole SASRec: ``recbole_runner.py`` in its own venv; its exported score matrix goes through
  shelfwise's ``top_k`` with the history excluded.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from benchmarks.peers.splits import WORK, PeerSplit
from shelfwise.data.interactions import History
from shelfwise.evaluation import NDCG, HitRate
from shelfwise.retrieval import BaseGenerator, recommend, top_k

PEERS_DIR = Path(__file__).resolve().parent
RECBOLE_PY = PEERS_DIR / ".venv-recbole" / "bin" / "python"
METRICS = (HitRate(10), NDCG(10))


def metrics_of(reco: NDArray[np.int64], targets: NDArray[np.int64],
               cold: NDArray[np.bool_] | None = None) -> dict[str, Any]:
    """HR@10 / NDCG@10 overall (with standard error) and on the cold slice."""
    t = [np.array([x]) for x in targets]
    out: dict[str, Any] = {"n": len(t)}
    for m in METRICS:
        per = m.calc_per_user(reco, t)
        out[m.name] = float(np.nanmean(per))
        out[f"{m.name}_se"] = float(np.nanstd(per) / np.sqrt(len(per)))
        if cold is not None:
            out[f"cold {m.name}"] = float(np.nanmean(per[cold])) if cold.any() else None
    if cold is not None:
        out["cold n"] = int(cold.sum())
    return out


def peak_mb() -> float:
    """Peak resident memory of this process and its finished children, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


# ---- shelfwise generators ---------------------------------------------------------------------
def _with_params(model: BaseGenerator, params: dict[str, Any]) -> BaseGenerator:
    """The fitted ``model`` with score-time parameters changed (validated, no refit)."""
    if params:
        model.config = type(model.config)(**{**model.config.model_dump(), **params})
    return model


def run_shelfwise(split: PeerSplit, make: Callable[..., BaseGenerator],
                  fit_grid: list[dict[str, Any]], score_grid: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    sweep: list[dict[str, Any]] = []
    if len(fit_grid) * len(score_grid) > 1:
        _, hist, targets = split.eval_set("valid")
        train = split.interactions(split.valid_seqs)
        for fp in fit_grid:
            model = make(**fp).fit(train)
            for sp_ in score_grid:
                reco, _ = recommend(_with_params(model, sp_), hist, 10, exclude_seen=True)
                sweep.append({"params": {**fp, **sp_}, **metrics_of(reco, targets)})
                print("  valid", json.dumps(sweep[-1]), flush=True)
            del model
        best = max(sweep, key=lambda r: (r["NDCG@10"], r["HR@10"]))["params"]
    else:
        best = {**fit_grid[0], **score_grid[0]}
    fit_keys = set().union(*fit_grid)
    _, hist, _ = split.eval_set("test")
    train = split.interactions(split.train_seqs)
    start = time.perf_counter()
    model = make(**{k: v for k, v in best.items() if k in fit_keys}).fit(train)
    fit_s = time.perf_counter() - start
    model = _with_params(model, {k: v for k, v in best.items() if k not in fit_keys})
    start = time.perf_counter()
    reco, _ = recommend(model, hist, 10, exclude_seen=True)
    return {"params": best, "fit_seconds": fit_s, "score_seconds": time.perf_counter() - start,
            "reco": reco, "validation_sweep": sweep}


# ---- implicit, native usage --------------------------------------------------------------------
def _csr(split: PeerSplit, seqs: list[History]) -> sp.csr_matrix:
    lens = np.fromiter(map(len, seqs), np.int64, count=len(seqs))
    rows = np.repeat(np.arange(len(seqs)), lens)
    m = sp.csr_matrix((np.ones(int(lens.sum()), np.float32), (rows, np.concatenate(seqs))),
                      shape=(len(seqs), split.n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _implicit_model(kind: str, params: dict[str, Any]) -> Any:
    if kind == "als":
        from implicit.als import AlternatingLeastSquares

        return AlternatingLeastSquares(**params, iterations=15, random_state=0, num_threads=1,
                                       use_gpu=False)
    from implicit.bpr import BayesianPersonalizedRanking

    return BayesianPersonalizedRanking(**params, random_state=0, num_threads=1, use_gpu=False)


def _implicit_reco(model: Any, user_items: sp.csr_matrix, users: NDArray[np.int64]
                   ) -> NDArray[np.int64]:
    parts = []
    for lo in range(0, users.shape[0], 4096):
        u = users[lo : lo + 4096]
        ids, _ = model.recommend(u, user_items[u], N=10, filter_already_liked_items=True)
        parts.append(np.asarray(ids, np.int64))
    return np.vstack(parts)


def run_implicit(split: PeerSplit, kind: str, grid: list[dict[str, Any]]) -> dict[str, Any]:
    sweep: list[dict[str, Any]] = []
    users, _, targets = split.eval_set("valid")
    x_valid = _csr(split, split.valid_seqs)
    for params in grid if len(grid) > 1 else []:
        model = _implicit_model(kind, params)
        model.fit(x_valid, show_progress=False)
        sweep.append({"params": params,
                      **metrics_of(_implicit_reco(model, x_valid, users), targets)})
        print("  valid", json.dumps(sweep[-1]), flush=True)
    best = max(sweep, key=lambda r: (r["NDCG@10"], r["HR@10"]))["params"] if sweep else grid[0]
    users, _, targets = split.eval_set("test")
    x = _csr(split, split.train_seqs)
    model = _implicit_model(kind, best)
    start = time.perf_counter()
    model.fit(x, show_progress=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    reco = _implicit_reco(model, x, users)
    import implicit

    return {"params": {**best, **({"iterations": 15} if kind == "als" else {})},
            "library": f"implicit {implicit.__version__}", "fit_seconds": fit_s,
            "score_seconds": time.perf_counter() - start, "reco": reco,
            "validation_sweep": sweep}


# ---- RecBole SASRec ----------------------------------------------------------------------------
def run_recbole(split: PeerSplit, budget_seconds: float) -> dict[str, Any]:
    """Train in the RecBole venv (or reuse its finished output for this split), then rank."""
    folder = WORK / split.name / "recbole"
    scores_file, meta_file = folder / "scores.npy", folder / "meta.json"
    stamp = folder / "split.sha256"
    fresh = (meta_file.exists() and stamp.exists() and stamp.read_text() == split.sha256)
    if not fresh:
        if not RECBOLE_PY.exists():
            raise SystemExit(f"RecBole venv missing: run {PEERS_DIR / 'setup_recbole.sh'}")
        folder.mkdir(parents=True, exist_ok=True)
        meta_file.unlink(missing_ok=True)
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        subprocess.run([str(RECBOLE_PY), str(PEERS_DIR / "recbole_runner.py"),
                        "--split", str(split.path), "--scores", str(scores_file),
                        "--meta", str(meta_file), "--workdir", str(folder),
                        "--budget-seconds", str(budget_seconds)], check=True, env=env,
                       cwd=folder)  # RecBole writes log/ and log_tensorboard/ into its cwd
        stamp.write_text(split.sha256)
    meta = json.loads(meta_file.read_text())
    scores = np.load(scores_file, mmap_mode="r")
    _, hist, _ = split.eval_set("test")
    parts = []
    for lo in range(0, scores.shape[0], 2048):
        idx, _ = top_k(np.asarray(scores[lo : lo + 2048]), 10, exclude=hist[lo : lo + 2048])
        parts.append(idx)
    return {"params": meta["config"], "library": meta["library"],
            "fit_seconds": meta["fit_seconds"], "score_seconds": meta["score_seconds"],
            "peak_mb": meta["peak_rss_mb"], "reco": np.vstack(parts),
            "epochs": {k: meta[k] for k in ("epochs_run", "best_epoch", "stop_reason",
                                            "mean_epoch_seconds",
                                            "best_valid_ndcg10_recbole_evaluator")},
            "history": meta["history"]}
