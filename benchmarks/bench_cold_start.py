"""Cold start, measured: every shelfwise model on all users, cold-item targets and cold users,
before and after the pipeline's cold-item changes (issue 15, part 5).

Protocol (DESIGN.md, sequential / feed): leave-last-out per user, full ranking over all items,
items of the fed history excluded, HR@10 / NDCG@10 and n per slice:

* ``all``: every test user (history ``s[:-1]``, target ``s[-1]``);
* ``cold_items``: test users whose target has fewer than 5 interactions in the training data
  (``s[:-1]`` of every user; the peer table's cold slice, ``benchmarks/peers/splits.py``);
* ``zero_items``: the part of ``cold_items`` whose target was never seen in training (what an
  item posted after training is);
* ``cold_users``: users with at most 2 items before the target. None exist in these 5-core
  datasets (``natural_cold_users`` says how many), so every test user is fed only the last 2
  items of its history, same target; the models are the ones fitted above.

Models: popularity, co-occurrence, item-kNN, ALS, BPR and EASE with the validation-tuned params
of the peer table (``results/peers/<dataset>__<model>.json``); semantic (e5, the served
encoder, title vectors from the embedding cache; Games only); text SASRec with
``benchmarks/sequential_models.py``'s tuned params (Games, ``--sasrec-text``: ~1 h of one
core); the feed blend (``[train]`` defaults, weights tuned inside its fit as ``shelfwise train``
does); and the served two-stage pipeline with the generators and the validation-chosen second
stage of ``bench_pipeline.py`` (``results/pipeline.json``). A model the pipeline already holds
with the same params is that fitted generator (no second fit).

``before`` is the pipeline as it was: no cold candidates, no cold boost and without the
features added by issue 15 (``NEW_FEATURES``, dropped by ``drop_features``: then the ranker
reads exactly the former columns). ``after`` is chosen on validation — generators fitted on
``s[:-2]``, validation target ``s[-2]``, ``--valid-users`` sampled users for ``all`` and every
validation user with a cold target for ``cold_items`` — among the ``AFTER_GRID`` second stages
(cold candidates per generator, cold items by shared words) times the ``BOOSTS``
(``cold_boost``): the best cold-item HR@10 whose validation HR@10 and NDCG@10 over all users
are not below ``before``'s. The whole
validation curve is kept (``validation``: what more cold hits would cost). On test, ``before``
and ``after`` are trained in the same run on the same split with the same generators
(``Pipeline.refit_ranker``), so only the second stage differs.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_cold_start \
        games [--skip ease] [--sasrec-text] [--valid-users 10000]

Writes ``benchmarks/results/cold_start_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from benchmarks.bench_cf_beauty import load_beauty
from benchmarks.bench_pipeline import (
    BEAUTY_GENERATORS,
    GAMES_GENERATORS,
    Prefitted,
    config_for,
    sample,
)
from benchmarks.common import RESULTS, SHARED_DATA, write_results
from benchmarks.peers.splits import COLD_BELOW
from shelfwise.bundle import TrainConfig
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.data.interactions import History, Interactions
from shelfwise.evaluation import NDCG, EvalSet, HitRate, LeaveLastOut
from shelfwise.pipeline import Pipeline, PipelineConfig
from shelfwise.ranking.features import COLD_BELOW as PIPELINE_COLD_BELOW
from shelfwise.retrieval import make_generator, recommend
from shelfwise.retrieval.base import CandidateGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.spec import GeneratorSpec

METRICS = (HitRate(10), NDCG(10))
COLD_USER_ITEMS = 2
CF_MODELS = ("popularity", "cooccurrence", "itemknn", "als", "bpr", "ease")
NEW_FEATURES = ["item_position", "history_cold_share", "history_pop", "sem_max_history",
                "lex_last_item", "lex_max_history"]
"""Feed features added with the cold-item work; ``before`` drops them."""
#: Second stages tried on validation for ``after`` (the new features always on): cold
#: candidates per generator (alias -> top-N among cold items; absent aliases are ignored)
#: and the cold items sharing the most words with the history (``cold_words``).
AFTER_GRID: list[dict[str, Any]] = [
    {"cold_candidates": {}},
    {"cold_candidates": {"semantic": 50, "cooccurrence": 50}},
    {"cold_candidates": {}, "cold_words": 50},
    {"cold_candidates": {"semantic": 50, "cooccurrence": 50}, "cold_words": 50},
]
#: ``cold_boost`` values tried with each of them (no retraining: added at score time).
BOOSTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)


def load(dataset: str) -> tuple[Interactions, str, list[dict[str, Any]]]:
    if dataset == "beauty":
        return (load_beauty(SHARED_DATA / "amazon_sequences" / "Beauty.txt"), "amazon_beauty",
                BEAUTY_GENERATORS)
    data, name = load_data(None, "amazon_games", None)
    return data, name, GAMES_GENERATORS


def pipeline_config(generators: list[dict[str, Any]], setting: dict[str, Any],
                    variant: dict[str, Any] | None) -> PipelineConfig:
    """``before`` (``variant`` None) or a variant (``AFTER_GRID`` entry, optionally with
    ``cold_boost``) of the served config."""
    if variant is None:
        return config_for(generators, {**setting, "drop_features": NEW_FEATURES})
    cold = variant["cold_candidates"]
    gens = [{**g, "cold_candidates": cold.get(g.get("alias") or g["name"])} for g in generators]
    extra = {k: v for k, v in variant.items() if k != "cold_candidates"}
    return config_for(gens, {**setting, **extra})


# ---- slices ------------------------------------------------------------------------------------
def slice_metrics(reco: NDArray[np.int64], targets: NDArray[np.int64],
                  masks: dict[str, NDArray[np.bool_]]) -> dict[str, dict[str, Any]]:
    t = [np.array([x]) for x in targets]
    per = {m.name: m.calc_per_user(reco, t) for m in METRICS}
    return {name: {"n": int(mask.sum()), **{k: round(float(v[mask].mean()), 6) if mask.any()
                                             else None for k, v in per.items()}}
            for name, mask in masks.items()}


def evaluate_model(model: CandidateGenerator, histories: Sequence[History],
                   short: Sequence[History], targets: NDArray[np.int64],
                   masks: dict[str, NDArray[np.bool_]]) -> dict[str, Any]:
    """``all`` / cold-item slices on the full histories, ``cold_users`` on the short ones."""
    start = time.perf_counter()
    reco, _ = recommend(model, histories, 10)
    out: dict[str, Any] = dict(slice_metrics(reco, targets, masks))
    reco, _ = recommend(model, short, 10)
    out["cold_users"] = slice_metrics(reco, targets, {"x": np.ones(len(targets), bool)})["x"]
    out["score_seconds"] = round(time.perf_counter() - start, 1)
    return out


def cold_mask(train: Interactions, targets: NDArray[np.int64], below: int = COLD_BELOW
              ) -> NDArray[np.bool_]:
    counts = np.bincount(train.item_idx, minlength=train.n_items)
    return np.asarray(counts[targets] < below)


def targets_of(ev: EvalSet) -> NDArray[np.int64]:
    return np.fromiter((int(t[0]) for t in ev.targets), np.int64, count=len(ev))


# ---- validation: choose ``after`` ------------------------------------------------------------
def boost_curve(pipe: Pipeline, histories: Sequence[History], targets: NDArray[np.int64],
                boosts: Sequence[float]) -> list[dict[str, float]]:
    """HR@10 / NDCG@10 of ``pipe`` (fitted with no boost) at each cold boost, from one
    scoring: candidates score >= 0, and adding the boost to cold candidates before or after the
    per-row shift the pipeline applies gives the same order. Ties count optimistically."""
    assert pipe.stats_ is not None and not pipe.config.cold_boost
    ranks = np.zeros((len(boosts), len(targets)), np.int64)
    for lo in range(0, len(histories), 1000):
        part = histories[lo : lo + 1000]
        s = pipe.score(part)
        for r, h in enumerate(part):
            s[r, h] = -np.inf
        cold = (s >= 0) & (pipe.stats_.counts(s.shape[1]) < PIPELINE_COLD_BELOW)[None, :]
        rows = np.arange(len(part))
        t = targets[lo : lo + 1000]
        for k, b in enumerate(boosts):
            x = s + np.float32(b) * cold
            ranks[k, lo : lo + len(part)] = (x > x[rows, t][:, None]).sum(axis=1)
    hit = ranks < 10
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return [{"cold_boost": b, "HR@10": round(float(hit[k].mean()), 6),
             "NDCG@10": round(float(ndcg[k].mean()), 6)} for k, b in enumerate(boosts)]


def choose_after(data: Interactions, generators: list[dict[str, Any]], setting: dict[str, Any],
                 n_users: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    targets = targets_of(split.valid)
    cold = np.flatnonzero(cold_mask(split.train, targets))
    some = sample(split.valid, n_users)
    sets = {"all": (some.histories, targets_of(some)),
            "cold_items": ([split.valid.histories[k] for k in cold], targets[cold])}
    start = time.perf_counter()
    pipe = Pipeline(pipeline_config(generators, setting, None), keep_inner=True).fit(split.train)
    print(f"  valid fit {time.perf_counter() - start:.0f}s", flush=True)
    rows: list[dict[str, Any]] = []
    for variant in [None, *AFTER_GRID]:
        if variant is not None:
            pipe.refit_ranker(pipeline_config(generators, setting, variant))
        curves = {name: boost_curve(pipe, h, t, (0.0,) if variant is None else BOOSTS)
                  for name, (h, t) in sets.items()}
        for k, point in enumerate(curves["all"]):
            rows.append({"variant": "before" if variant is None else {
                **variant, "cold_boost": point["cold_boost"]},
                "best_iteration": pipe.report_.get("best_iteration"),
                "all": {"n": len(sets["all"][1]), **point},
                "cold_items": {"n": len(cold), **curves["cold_items"][k]}})
            print(f"  valid {json.dumps(rows[-1])}", flush=True)
    base = rows[0]["all"]
    ok = [r for r in rows[1:] if r["all"]["HR@10"] >= base["HR@10"]
          and r["all"]["NDCG@10"] >= base["NDCG@10"]] or rows[1:2]
    best = max(ok, key=lambda r: (r["cold_items"]["HR@10"], r["all"]["HR@10"]))
    return best["variant"], rows


# ---- the standalone models ---------------------------------------------------------------------
def peer_params(dataset: str, model: str) -> dict[str, Any]:
    """The validation-tuned params of the peer table (its cached record for this model)."""
    path = RESULTS / "peers" / f"{dataset}__{model}.json"
    params: dict[str, Any] = json.loads(path.read_text())["params"]
    return params


def standalone(dataset: str, pipe: Pipeline, train: Interactions, skip: set[str],
               sasrec_text: bool) -> tuple[dict[str, CandidateGenerator], dict[str, Any]]:
    """Each model of the table, fitted on ``train`` (or the pipeline's own copy)."""
    models: dict[str, CandidateGenerator] = {}
    info: dict[str, Any] = {}
    names = [m for m in CF_MODELS if m not in skip]
    if dataset == "games" and "semantic" not in skip:
        names.append("semantic")
    for name in names:
        params = {"encoder": "e5"} if name == "semantic" else peer_params(dataset, name)
        spec = GeneratorSpec(name=name, params=params)
        same = next((k for k in pipe.config.generators if k.same_model(spec)), None)
        if same is not None:
            models[name] = Prefitted(pipe.generators_[same.key])
            info[name] = {"params": params, "fit_seconds": pipe.report_[
                "generator_fit_seconds"].get(same.key), "from": f"pipeline:{same.key}"}
            continue
        start = time.perf_counter()
        models[name] = make_generator(name, **params).fit(train)
        info[name] = {"params": params, "fit_seconds": round(time.perf_counter() - start, 1)}
        print(f"  {name} fit {info[name]['fit_seconds']}s", flush=True)
    if sasrec_text:
        import torch

        from benchmarks.sequential_models import CLASSES
        from benchmarks.sequential_models import params as sequential_params

        torch.set_num_threads(1)
        p = sequential_params(dataset, "sasrec_text")
        start = time.perf_counter()
        models["sasrec_text"] = CLASSES["sasrec_text"](**p).fit(train)
        info["sasrec_text"] = {"params": p, "fit_seconds": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    blend = Blend.from_specs(TrainConfig().generators).fit(train)
    models["feed_blend"] = blend
    info["feed_blend"] = {"weights": blend.weights_, "skipped": blend.skipped_,
                          "tuning": blend.tuning_,
                          "fit_seconds": round(time.perf_counter() - start, 1)}
    return models, info


def sequential_reference(dataset: str) -> list[dict[str, Any]]:
    """SASRec / text SASRec as ``bench_sequential`` measured them (not refitted here unless
    ``--sasrec-text``): trained on ``s[:-2]`` with the epoch chosen on validation, so the fit
    data and the cold slice (counted on ``s[:-2]``) differ slightly from this table's."""
    path = RESULTS / "sequential.json"
    if not path.is_file():
        return []
    return [{"model": r["model"], "all": r["test"], "cold_items": r["test_cold_items"]}
            for r in json.loads(path.read_text())["results"] if r["dataset"] == dataset]


def run(dataset: str, skip: set[str], sasrec_text: bool, valid_users: int) -> dict[str, Any]:
    assert PIPELINE_COLD_BELOW == COLD_BELOW, "the pipeline's cold items are the slice's"
    t0 = time.perf_counter()
    data, name, generators = load(dataset)
    if "ease" in skip:
        generators = [g for g in generators if g["name"] != "ease"]
    setting = json.loads((RESULTS / "pipeline.json").read_text())["results"][dataset][
        "chosen_setting"]
    print(f"{name}: {data.n_users} users, {data.n_items} items, {len(data)} interactions; "
          f"pipeline setting {setting}", flush=True)
    variant, valid_rows = choose_after(data, generators, setting, valid_users)
    print(f"  after = {variant}", flush=True)

    split = LeaveLastOut().split(data)
    test = split.test
    targets = targets_of(test)
    counts = np.bincount(split.train.item_idx, minlength=data.n_items)
    masks = {"all": np.ones(len(test), bool), "cold_items": counts[targets] < COLD_BELOW,
             "zero_items": counts[targets] == 0}
    short = [h[-COLD_USER_ITEMS:] for h in test.histories]
    natural = int(sum(len(h) <= COLD_USER_ITEMS for h in test.histories))

    start = time.perf_counter()
    pipe = Pipeline(pipeline_config(generators, setting, None), keep_inner=True).fit(split.train)
    fit_before = round(time.perf_counter() - start, 1)
    print(f"  test fit {fit_before}s", flush=True)
    before_report = pipe.report_
    models, info = standalone(dataset, pipe, split.train, skip, sasrec_text)
    before: dict[str, Any] = {}
    for model_name, model in models.items():
        before[model_name] = {**evaluate_model(model, test.histories, short, targets, masks),
                              **info[model_name]}
        print(f"  {model_name} {json.dumps(before[model_name], default=str)}", flush=True)
    before["pipeline"] = {**evaluate_model(pipe, test.histories, short, targets, masks),
                          "fit_seconds": fit_before}
    print(f"  pipeline before {json.dumps(before['pipeline'])}", flush=True)

    after_cfg = pipeline_config(generators, setting, variant)
    start = time.perf_counter()
    pipe.refit_ranker(after_cfg)
    refit_s = round(time.perf_counter() - start, 1)
    after = {"pipeline": {**evaluate_model(pipe, test.histories, short, targets, masks),
                          "second_stage_seconds": refit_s}}
    print(f"  pipeline after {json.dumps(after['pipeline'])}", flush=True)

    best_name, best = max(((k, v) for k, v in before.items()),
                          key=lambda kv: kv[1]["cold_items"]["HR@10"] or 0.0)
    best_cold = best["cold_items"]["HR@10"]
    got = after["pipeline"]
    return {
        "dataset": {"name": name, "users": data.n_users, "items": data.n_items,
                    "interactions": len(data), "test_users": len(test),
                    "natural_cold_users": natural},
        "slices": {k: int(v.sum()) for k, v in masks.items()} | {"cold_users": len(test)},
        "pipeline_generators": generators, "pipeline_setting": setting,
        "validation": valid_rows, "after_variant": variant,
        "after_config": after_cfg.model_dump(mode="json"),
        "before": before, "after": after,
        "reference_sequential": sequential_reference(dataset),
        "pipeline_report_before": before_report, "pipeline_report_after": pipe.report_,
        "target": {"best_cold_item_model_before": best_name,
                   "best_cold_item_hr10_before": best_cold,
                   "needed_cold_item_hr10": None if best_cold is None else 2 * best_cold,
                   "pipeline_cold_item_hr10_after": got["cold_items"]["HR@10"],
                   "pipeline_hr10_before": before["pipeline"]["all"]["HR@10"],
                   "pipeline_hr10_after": got["all"]["HR@10"],
                   "met": bool(best_cold is not None and got["cold_items"]["HR@10"]
                               >= 2 * best_cold and got["all"]["HR@10"]
                               >= before["pipeline"]["all"]["HR@10"])},
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", choices=["beauty", "games"])
    parser.add_argument("--skip", default="", help="comma-separated models not to run, e.g. "
                        "ease (also leaves it out of the pipeline) or semantic")
    parser.add_argument("--sasrec-text", action="store_true",
                        help="also train text SASRec (Games; ~1 h of one core)")
    parser.add_argument("--valid-users", type=int, default=10_000,
                        help="validation users sampled for the 'all' slice when choosing after")
    args = parser.parse_args()
    if args.sasrec_text and args.dataset != "games":
        parser.error("text SASRec needs item titles: only games has them")
    with threadpool_limits(1):
        out = run(args.dataset, {s for s in args.skip.split(",") if s}, args.sasrec_text,
                  args.valid_users)
    path = write_results(f"cold_start_{args.dataset}", {
        "protocol": "leave-last-out, full ranking, fed-history items excluded, HR@10/NDCG@10; "
                    f"cold items: target with < {COLD_BELOW} training interactions; cold "
                    f"users: history cut to its last {COLD_USER_ITEMS} items",
        "threads": 1, **out})
    print(f"results: {path}; target met: {out['target']['met']}")


if __name__ == "__main__":
    main()
