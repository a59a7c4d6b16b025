"""Two-stage feed pipeline (generators → features → LambdaMART) vs each generator alone.

Datasets: Amazon Beauty (S3-Rec sequences, no text) and Amazon Video Games (UniSRec/LLMRank
processing, titles → the semantic e5 generator).

Protocol (DESIGN.md, sequential / feed): leave-last-out per user, full ranking over all items,
items of the fed history excluded, HR@10 / NDCG@10. Games also: LLMRank's candidate protocol
(the target among the first 20 items of the user's ``Games.random`` pool, NDCG@10), as in
``bench_games.py``.

* Settings on validation only: ``LeaveLastOut(validation=True)``; the pipeline is fitted once
  on ``s[:-2]`` (it holds out ``s[-3]`` internally as the ranker's target, fits its generators on
  ``s[:-3]``, then refits them on ``s[:-2]``); each second-stage setting of a small grid is
  trained with ``refit_ranker`` (same inner generators) and scored on a sample of validation
  users (history ``s[:-2]``, target ``s[-2]``). The best by validation NDCG@10 is kept.
* Test: ``LeaveLastOut()``; a fresh pipeline with the chosen setting is fitted on ``s[:-1]``
  (inner target ``s[-2]``, inner generators on ``s[:-2]``, refit on ``s[:-1]``) and scored for
  every user (history ``s[:-1]``, target ``s[-1]``). Each generator alone is the pipeline's own
  refitted generator (same params, same training data), so the comparison costs no extra fit.
  The pipeline's fit time includes fitting every generator twice.

Generator params are the validation-tuned ones of ``results/cf_beauty.json`` (Beauty) and of
``bench_games.py`` (Games).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_pipeline \
        [--datasets beauty,games] [--quick]

Writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.bench_cf_beauty import load_beauty
from benchmarks.common import SHARED_DATA, games_pools, write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.data.interactions import History, Interactions
from shelfwise.evaluation import NDCG, EvalSet, HitRate, LeaveLastOut, Split, format_table
from shelfwise.evaluation.runner import RECORD_COLUMNS, evaluate_sampled
from shelfwise.pipeline import Pipeline, PipelineConfig
from shelfwise.retrieval.base import CandidateGenerator, Scores, recommend

METRICS = [HitRate(10), NDCG(10)]
VALID_USERS = 6000

BEAUTY_GENERATORS: list[dict[str, Any]] = [
    {"name": "ease", "params": {"l2": 50.0, "history_decay": 0.7}},
    {"name": "als", "params": {"factors": 256, "alpha": 30.0, "regularization": 1.0,
                               "history_decay": 0.3}},
    {"name": "itemknn", "params": {"neighbors": 400, "shrink": 50.0, "history_decay": 0.5}},
    {"name": "cooccurrence", "params": {"window": 5, "history_decay": 0.5}},
    {"name": "popularity", "params": {"half_life_days": None}, "candidates": 10},
]
GAMES_GENERATORS: list[dict[str, Any]] = [
    {"name": "ease", "params": {"l2": 50.0, "history_decay": 0.7}},
    {"name": "cooccurrence", "params": {}},
    {"name": "itemknn", "params": {"neighbors": 400, "shrink": 50.0, "history_decay": 0.5}},
    {"name": "semantic", "params": {"encoder": "e5"}, "candidates": 20},
    {"name": "popularity", "params": {"half_life_days": None}, "candidates": 10},
]
#: Second-stage settings tried on validation (merged into the base config).
GRID: list[dict[str, Any]] = [
    {"candidates_per_generator": 50},
    {"candidates_per_generator": 100},
    {"candidates_per_generator": 50, "ranker": {"num_leaves": 63, "min_child_samples": 100,
                                                "learning_rate": 0.05}},
]
#: ``--grid wide`` adds settings with more patient early stopping (on more held-out groups) or
#: none: with ~500 held-out groups the default early stopping can stop at a noisy early peak.
GRID_WIDE: list[dict[str, Any]] = [*GRID, *[
    {"candidates_per_generator": n, "ranker": {"early_stopping_rounds": 100,
                                               "valid_fraction": 0.2, "learning_rate": 0.03}}
    for n in (50, 100)], {"candidates_per_generator": 50,
                          "ranker": {"early_stopping_rounds": None, "n_estimators": 150}}]
BASE: dict[str, Any] = {"max_train_users": 20_000, "min_groups": 200,
                        "ranker": {"n_estimators": 400}}


class Prefitted:
    """A fitted model whose ``fit`` does nothing (the benchmark fits and times it itself)."""

    name: ClassVar[str] = "prefitted"

    def __init__(self, model: CandidateGenerator) -> None:
        self.model = model

    @property
    def n_items_(self) -> int:
        return self.model.n_items_

    def fit(self, data: Interactions) -> Prefitted:
        return self

    def score(self, histories: Sequence[History]) -> Scores:
        return self.model.score(histories)

    def to_config(self) -> dict[str, Any]:
        return self.model.to_config()

    def save(self, path: Path) -> None:
        self.model.save(path)


def config_for(generators: list[dict[str, Any]], setting: dict[str, Any]) -> PipelineConfig:
    ranker = {**BASE["ranker"], **setting.get("ranker", {})}
    return PipelineConfig.from_dict({**BASE, **setting, "generators": generators,
                                     "ranker": ranker})


def metrics_on(model: CandidateGenerator, ev: EvalSet) -> dict[str, float]:
    reco, _ = recommend(model, ev.histories, 10)
    return {m.name: round(m.calc(reco, ev.targets), 6) for m in METRICS}


def sample(ev: EvalSet, n: int, seed: int = 0) -> EvalSet:
    if len(ev) <= n:
        return ev
    rows = np.sort(np.random.default_rng(seed).choice(len(ev), size=n, replace=False))
    return EvalSet(ev.users[rows], [ev.histories[r] for r in rows],
                   [ev.targets[r] for r in rows])


def tune(data: Interactions, generators: list[dict[str, Any]], grid: list[dict[str, Any]]
         ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    valid = sample(split.valid, VALID_USERS)
    start = time.perf_counter()
    pipe = Pipeline(config_for(generators, grid[0]), keep_inner=True).fit(split.train)
    print(f"  valid fit {time.perf_counter() - start:.0f}s", flush=True)
    rows = []
    for k, setting in enumerate(grid):
        if k:
            pipe.refit_ranker(config_for(generators, setting))
        rep = pipe.report_
        rows.append({"setting": setting, **metrics_on(pipe, valid), "mode": rep["mode"],
                     "candidate_recall": rep.get("candidate_recall"),
                     "mean_candidates": rep.get("mean_candidates"),
                     "train_groups": rep.get("train_groups"),
                     "best_iteration": rep.get("best_iteration"),
                     "second_stage_seconds": rep["seconds_second_stage"]})
        print(f"  valid {rows[-1]}", flush=True)
    singles = {alias: metrics_on(gen, valid) for alias, gen in pipe.generators_.items()}
    print(f"  valid singles {singles}", flush=True)
    best = max(rows, key=lambda r: (r["NDCG@10"], r["HR@10"]))
    return best["setting"], rows, {"generators_alone": singles, "users": len(valid)}


def records(models: dict[str, CandidateGenerator], fit_seconds: dict[str, float],
            split: Split, name: str, n_items: int) -> pd.DataFrame:
    rows = []
    for model_name, model in models.items():
        start = time.perf_counter()
        reco, _ = recommend(model, split.test.histories, 10)
        score_s = time.perf_counter() - start
        for m in METRICS:
            rows.append({"model": model_name, "dataset": name, "split": split.name,
                         "metric": m.name, "k": m.k,
                         "value": m.calc(reco, split.test.targets, n_items=n_items),
                         "fit_seconds": fit_seconds[model_name], "n_users": len(split.test),
                         "score_seconds": round(score_s, 2)})
    return pd.DataFrame(rows, columns=[*RECORD_COLUMNS, "score_seconds"])


def run(dataset: str, quick: bool, semantic: bool = True, wide: bool = False
        ) -> dict[str, Any]:
    t0 = time.perf_counter()
    if dataset == "beauty":
        data = load_beauty(SHARED_DATA / "amazon_sequences" / "Beauty.txt")
        name, generators = "amazon_beauty", BEAUTY_GENERATORS
    else:
        data, name = load_data(None, "amazon_games", None)
        generators = [g for g in GAMES_GENERATORS if semantic or g["name"] != "semantic"]
    if quick:
        generators = [g for g in generators if g["name"] != "ease"]
    grid = GRID[:1] if quick else GRID_WIDE if wide else GRID
    print(f"{name}: {data.n_users} users, {data.n_items} items, {len(data)} interactions",
          flush=True)
    setting, valid_rows, valid_singles = tune(data, generators, grid)
    cfg = config_for(generators, setting)
    split = LeaveLastOut().split(data)
    start = time.perf_counter()
    pipe = Pipeline(cfg).fit(split.train)
    fit_s = time.perf_counter() - start
    print(f"  test fit {fit_s:.0f}s", flush=True)
    models: dict[str, CandidateGenerator] = {a: Prefitted(g) for a, g in pipe.generators_.items()}
    models["pipeline"] = Prefitted(pipe)
    fit_seconds = {**pipe.report_["generator_fit_seconds"], "pipeline": round(fit_s, 2)}
    full = records(models, fit_seconds, split, name, data.n_items)
    print(format_table(full.drop(columns="score_seconds")), flush=True)
    out: dict[str, Any] = {
        "dataset": {"name": name, "users": data.n_users, "items": data.n_items,
                    "interactions": len(data)},
        "generators": generators, "validation": {"grid": valid_rows, **valid_singles},
        "chosen_setting": setting, "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash(), "pipeline_report": pipe.report_,
        "records": full.to_dict(orient="records"),
    }
    if dataset == "games":
        sub, negatives = games_pools(data, split)
        sampled = evaluate_sampled(models, data, sub, [NDCG(10), HitRate(1)], dataset=name,
                                   n_negatives=20, negatives=negatives)
        sampled["fit_seconds"] = sampled["model"].map(fit_seconds)
        print(format_table(sampled), flush=True)
        out["records_20_candidates"] = sampled.to_dict(orient="records")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def merge(files: list[str]) -> None:
    """Join result files of ``--part`` runs into ``results/pipeline.json``; ``FILE:NAME``
    stores that file's (single) dataset under ``NAME`` (e.g. a second grid's run)."""
    import json

    results: dict[str, Any] = {}
    seconds: dict[str, Any] = {}
    machines = []
    first: dict[str, Any] = {}
    for item in files:
        path, _, alias = item.partition(":")
        d = json.loads(Path(path).read_text())
        first = first or d
        machines.append(d["machine"])
        for key, value in d["results"].items():
            name = alias or key
            results[name] = {**value, "grid": d.get("grid", "default"),
                             "semantic": d.get("games_semantic", True)}
            seconds[name] = d["seconds"]
    out = {k: v for k, v in first.items()
           if k not in ("machine", "results", "seconds", "grid", "games_semantic")}
    out.update(results=results, seconds_per_part=seconds, machines=machines)
    print(f"results: {write_results('pipeline', out)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="beauty,games")
    parser.add_argument("--quick", action="store_true", help="no EASE, one setting")
    parser.add_argument("--no-semantic", action="store_true",
                        help="Games without the semantic generator (when encoding the titles "
                        "is too slow here, e.g. no warm embedding cache)")
    parser.add_argument("--grid", choices=["default", "wide"], default="default")
    parser.add_argument("--part", default=None,
                        help="write results/pipeline_<part>.json (runs in parallel); "
                        "merge with --merge")
    parser.add_argument("--merge", default=None,
                        help="comma-separated result files to merge into results/pipeline.json")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge.split(","))
        return
    start = time.perf_counter()
    results = {}
    with threadpool_limits(1):
        for ds in args.datasets.split(","):
            results[ds] = run(ds, args.quick, semantic=not args.no_semantic,
                              wide=args.grid == "wide")
    if args.quick:  # a smoke run: print only, keep the results file for full runs
        return
    name = "pipeline" if args.part is None else f"pipeline_{args.part}"
    path = write_results(name, {
        "protocols": ["leave-last-out, full ranking, fed-history items excluded, HR@10/NDCG@10",
                      "Games also: LLMRank, target + first 20 of Games.random, NDCG@10/HR@1"],
        "selection": "second-stage setting by validation NDCG@10 (LeaveLastOut(validation="
                     f"True), {VALID_USERS} sampled validation users)",
        "threads": 1, "results": results, "quick": args.quick,
        "games_semantic": not args.no_semantic, "grid": args.grid,
        "seconds": round(time.perf_counter() - start, 1)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
