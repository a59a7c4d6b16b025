"""Cold start as served: new users' first items, new items' text, attribute groups.

Three protocols, each through the server's own code (``Recommender`` over a real SQLite store
holding the catalog; the cold scorer, the new-item placement and the group tables are the
served functions):

- ``cold_users`` (Games, Beauty): a random set of users (``--users``) is held out of training
  entirely (a user split: they are new to the bundle, which is trained on everyone else's
  full histories with the ``[train]`` defaults). For k = 0, 1, 2 each held-out user's first
  k items are the history and item k+1 the target; full ranking over all items, history
  excluded, HR@10 and NDCG@10. Models: popularity (today's cold list), the bundle's
  co-occurrence and semantic generators, the served blend, and the cold profile (text
  vectors of the first items + log popularity) at several ``popularity_weight`` values.
- ``new_items`` (Games; needs text): ``--new-frac`` of the items (random) are removed from
  training and posted to the server afterwards (embedded, indexed, look-alikes found), as a
  shop posts products. Leave-last-out over every user (histories without the new items);
  the served blend feed (and with ``--pipeline`` two two-stage feeds, with and without
  the semantic generator among their candidates) with and without placing new items
  (``[serve.cold_start] new_items`` = 1, 2, 3, 5) on two slices: users whose target is a new
  item, and a random sample of all users (the full-data check that placement costs nothing).
- ``attributes`` (Open Bandit, campaigns ``all`` and ``men``, random + Bernoulli TS logs
  pooled): every click is a user with the impression's four user features as attributes.
  5-fold cross-validation over clicks: the training folds' clicks go into the store as
  users + click events, the bundle's popularity is trained on them, and each held-out
  click's user (attributes only, no events) gets the served cold feed: global popularity
  (no attributes stored) against attribute-conditioned popularity. HR@10/NDCG@10 of the
  clicked item among the campaign's items. Clicks are few (~200 in all), so the intervals
  are wide; this is the only dataset here with user attributes and item choices.

    .venv/bin/python -m benchmarks.bench_cold_start_serving games|beauty|open_bandit|latency

``latency``: the per-request work of a cold feed and of placing new items at 100k random
item vectors (HNSW, as served at that size); see :func:`latency`.

Writes ``benchmarks/results/cold_start_serving_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from benchmarks.common import SHARED_DATA, write_results
from shelfwise.bundle import GeneratorSpec, TrainConfig
from shelfwise.bundle.train import build_bundle
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.data.schemas import Event, EventType, Item, User
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut
from shelfwise.ranking.config import PipelineConfig
from shelfwise.retrieval.base import sorted_unique, top_k
from shelfwise.services.cold_start import ColdStartConfig, score_cold
from shelfwise.services.cold_users import ColdContext
from shelfwise.services.recommender import Recommender
from shelfwise.storage import open_store

PRESETS = {"beauty": "amazon_sequences", "games": "amazon_games"}
K = 10
WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0)


def metrics(reco: NDArray[np.int64], targets: list[int]) -> dict[str, float]:
    t = [np.asarray([x], np.int64) for x in targets]
    hr, nd = HitRate(K).calc_per_user(reco, t), NDCG(K).calc_per_user(reco, t)
    n = max(len(targets), 1)
    return {"HR@10": round(float(hr.mean()), 5), "NDCG@10": round(float(nd.mean()), 5),
            "HR@10_se": round(float(hr.std() / np.sqrt(n)), 5), "users": len(targets)}


def ranked(scores: NDArray[np.float32], exclude: NDArray[np.int64]) -> NDArray[np.int64]:
    idx, _ = top_k(np.asarray(scores, np.float32)[None, :], K, exclude=[exclude])
    out: NDArray[np.int64] = idx[0]
    return out


def serving_recommender(data: Interactions, train: Interactions, tmp: str,
                        config: ColdStartConfig, items: list[str] | None = None,
                        train_config: TrainConfig | None = None) -> Recommender:
    """A bundle trained on ``train`` and a Recommender over a store holding the catalog
    (``items``: the ids to store, default every item of ``data``)."""
    bundle = build_bundle(train, train_config)
    # the server's item map grows as items are posted: not the training data's own map
    bundle = dataclasses.replace(bundle, items=bundle.items.copy())
    store = open_store(f"sqlite:///{tmp}/shop.db")
    titles = data.item_text or [""] * data.n_items
    ids = items if items is not None else list(data.items.ids)
    store.upsert_items([Item(id=e, title=titles[data.items.index(e)]) for e in ids])
    return Recommender(bundle, store, cold_start=config)


# ---- cold users ------------------------------------------------------------------------
def cold_users(dataset: str, n_users: int, seed: int) -> dict[str, Any]:
    data, name = load_data(None, PRESETS[dataset], None)
    rng = np.random.default_rng(seed)
    hist = data.histories()
    held = np.sort(rng.choice(data.n_users, size=min(n_users, data.n_users), replace=False))
    train = data.select(~np.isin(data.user_idx, held))
    out: dict[str, Any] = {"dataset": name, "held_out_users": len(held)}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rec = serving_recommender(data, train, tmp, ColdStartConfig())
        out["train_seconds"] = round(time.perf_counter() - t, 1)
        rec.cold.groups.stop()
        to_model = rec.items.indices(list(data.items.ids))
        sem = rec.semantic
        pop = rec.cold.global_popularity().base.astype(np.float32)
        slices: dict[str, Any] = {}
        latency: list[float] = []
        for k in (0, 1, 2):
            rows: dict[str, list[NDArray[np.int64]]] = {}
            targets: list[int] = []
            for u in held:
                h = np.asarray(to_model[hist[int(u)][:k]], np.int64)
                targets.append(int(to_model[hist[int(u)][k]]))
                ex = sorted_unique(h)
                rows.setdefault("popularity", []).append(ranked(pop, ex))
                if k == 0:
                    continue
                for gen in ("cooccurrence", "semantic"):
                    if gen in rec.bundle.generators:
                        rows.setdefault(gen, []).append(
                            ranked(rec.generator_scores(gen, h), ex))
                scores, _, _ = rec._blend(h)
                rows.setdefault("served_blend", []).append(ranked(scores, ex))
                if sem is None:
                    continue
                profile = rec.cold.profile(ColdContext(), h)
                allowed = rec._allowed(ex)
                for w in WEIGHTS:
                    cfg = ColdStartConfig(popularity_weight=w)
                    t = time.perf_counter()
                    got = score_cold(profile, sem.vectors_, rec._ann, K, allowed, cfg)
                    if w == ColdStartConfig().popularity_weight:
                        latency.append(time.perf_counter() - t)
                    reco = np.full(K, -1, np.int64)
                    reco[: len(got.items)] = got.items
                    rows.setdefault(f"cold_profile(popularity_weight={w})", []).append(reco)
            slices[f"history={k}"] = {m: metrics(np.vstack(r), targets) for m, r in rows.items()}
        out["cold_users"] = slices
        if latency:
            ms = np.asarray(latency) * 1000
            out["cold_profile_ms"] = {"p50": round(float(np.percentile(ms, 50)), 3),
                                      "p99": round(float(np.percentile(ms, 99)), 3),
                                      "items": rec.n_model_items}
        rec.store.close()
    return out


# ---- new items -------------------------------------------------------------------------
#: Two-stage feeds for ``--pipeline``: without a text generator (it cannot score a posted
#: item at all) and with the bundle's semantic generator among its candidates.
PIPELINES: dict[str, list[dict[str, Any]]] = {
    "pipeline(cooccurrence+popularity)": [
        {"name": "cooccurrence", "params": {"popularity_tiebreak": False}},
        {"name": "popularity", "params": {"half_life_days": None}, "candidates": 10}],
    "pipeline(cooccurrence+semantic+popularity)": [
        {"name": "cooccurrence", "params": {"popularity_tiebreak": False}},
        {"name": "semantic", "candidates": 20},
        {"name": "popularity", "params": {"half_life_days": None}, "candidates": 10}],
}
PIPELINE_BASE: dict[str, Any] = {"candidates_per_generator": 50, "max_train_users": 10_000,
                                 "min_groups": 200, "ranker": {"n_estimators": 200}}
PLACED = (1, 2, 3, 5)


def new_items(dataset: str, frac: float, n_users: int, seed: int,
              pipeline: bool = False) -> dict[str, Any]:
    data, name = load_data(None, PRESETS[dataset], None)
    if data.item_text is None:
        return {"new_items": "skipped: the catalog has no text, so nothing places new items"}
    rng = np.random.default_rng(seed)
    split = LeaveLastOut().split(data)
    new = np.zeros(data.n_items, dtype=bool)
    new[rng.choice(data.n_items, size=int(frac * data.n_items), replace=False)] = True
    frame = split.train.to_frame()
    frame = frame[~frame["item_id"].isin(set(np.asarray(data.items.ids)[new]))]
    trained_ids = [e for e, is_new in zip(data.items.ids, new, strict=True) if not is_new]
    texts = dict(zip(data.items.ids, data.item_text, strict=True))
    train = Interactions.from_frame(frame, items=IdMap(trained_ids),
                                    has_time=data.has_time, item_text=texts)
    out: dict[str, Any] = {"dataset": name, "new_items": int(new.sum()),
                           "new_item_share": frac}
    users = split.test.users
    is_new_target = np.asarray([bool(new[int(t[0])]) for t in split.test.targets])
    pick_all = rng.choice(len(users), size=min(n_users, len(users)), replace=False)
    pick_new = np.flatnonzero(is_new_target)[:n_users]
    # trained items first, then the new ones: the store's order is the posting order
    order = trained_ids + [e for e, is_new in zip(data.items.ids, new, strict=True) if is_new]
    feeds: dict[str, TrainConfig] = {"served_blend": TrainConfig()}
    if pipeline:
        feeds.update({name: TrainConfig(pipeline=PipelineConfig.from_dict(
            {**PIPELINE_BASE, "generators": gens})) for name, gens in PIPELINES.items()})
    results: dict[str, Any] = {"cold_item_targets": {}, "all_users": {}}
    place_ms: list[float] = []
    for feed_name, train_config in feeds.items():
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            rec = serving_recommender(data, train, tmp, ColdStartConfig(), items=order,
                                      train_config=train_config)
            rec.cold.groups.stop()
            out[f"train_and_post_seconds[{feed_name}]"] = round(time.perf_counter() - t, 1)
            sem = rec.semantic
            assert sem is not None
            pipe = rec.bundle.pipeline
            if pipe is not None:
                out[f"mode[{feed_name}]"] = pipe.mode_
            to_model = rec.items.indices(list(data.items.ids))
            for label, pick in (("cold_item_targets", pick_new), ("all_users", pick_all)):
                rows: dict[str, list[NDArray[np.int64]]] = {}
                targets: list[int] = []
                for j in pick:
                    h_raw = split.test.histories[int(j)]
                    h = np.asarray(to_model[h_raw[~new[h_raw]]], np.int64)
                    targets.append(int(to_model[int(split.test.targets[int(j)][0])]))
                    ex = sorted_unique(h)
                    if pipe is None:
                        scores, names, lab = rec._blend(h)
                        base = rec._finish(scores, K, ex, lab, names)
                    else:
                        base = rec._pipeline_feed(pipe, h, K, ex).items
                    rows.setdefault(feed_name, []).append(_ids(rec, base))
                    profile = sem.profile(h)
                    for k in PLACED:
                        rec.cold_config = ColdStartConfig(new_items=k)
                        t = time.perf_counter()
                        placed = rec.with_new_items(base, profile, ex, K)
                        if k == ColdStartConfig().new_items:
                            place_ms.append(time.perf_counter() - t)
                        rows.setdefault(f"{feed_name}+new_items(new_items={k})", []).append(
                            _ids(rec, placed))
                    rec.cold_config = ColdStartConfig()
                    if pipe is None:
                        rows.setdefault("semantic", []).append(
                            ranked(rec.generator_scores("semantic", h), ex))
                results[label].update({m: metrics(np.vstack(r), targets)
                                       for m, r in rows.items()})
            rec.store.close()
    out["slices"] = results
    ms = np.asarray(place_ms) * 1000
    out["placement_ms"] = {"p50": round(float(np.percentile(ms, 50)), 3),
                           "p99": round(float(np.percentile(ms, 99)), 3)}
    return out


def _ids(rec: Recommender, items: list[Any]) -> NDArray[np.int64]:
    reco = np.full(K, -1, np.int64)
    idx = rec.items.indices([r.item_id for r in items][:K])
    reco[: len(idx)] = idx
    return reco


# ---- attribute groups (Open Bandit) ----------------------------------------------------
def _clicks(campaign: str) -> pd.DataFrame:
    frames = []
    for policy in ("random", "bts"):
        path = SHARED_DATA / "open_bandit" / policy / campaign / f"{campaign}.csv"
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if r["click"] == "1"]
        frames.append(pd.DataFrame(rows))
    df = pd.concat(frames, ignore_index=True)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def attributes(folds: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": "open_bandit (random + bts logs pooled)"}
    cfg = ColdStartConfig(window_days=None)
    for campaign in ("all", "men"):
        clicks = _clicks(campaign)
        n_items = int(pd.read_csv(SHARED_DATA / "open_bandit" / "random" / campaign /
                                  "item_context.csv")["item_id"].nunique())
        fold = np.random.default_rng(seed).permutation(len(clicks)) % folds
        feats = [f"user_feature_{k}" for k in range(4)]
        reco: dict[str, list[NDArray[np.int64]]] = {"global_popularity": [],
                                                     "attribute_popularity": []}
        targets: list[int] = []
        for f in range(folds):
            train, test = clicks[fold != f], clicks[fold == f]
            with tempfile.TemporaryDirectory() as tmp:
                rec, item_index = _obd_server(train, test, feats, n_items, cfg, tmp)
                for k, r in enumerate(test.itertuples()):
                    targets.append(item_index[str(r.item_id)])
                    for label, user in (("global_popularity", f"anon{k}"),
                                        ("attribute_popularity", f"test{k}")):
                        got = rec.feed(user, K).items
                        row = np.full(K, -1, np.int64)
                        row[: len(got)] = [item_index[g.item_id] for g in got]
                        reco[label].append(row)
                rec.store.close()
        out[campaign] = {"clicks": len(clicks), "items": n_items, "folds": folds,
                         **{m: metrics(np.vstack(r), targets) for m, r in reco.items()}}
        for m in reco:
            out[campaign][m]["bootstrap_HR@10_95"] = _bootstrap(np.vstack(reco[m]), targets,
                                                                seed)
        diff = _paired(np.vstack(reco["attribute_popularity"]),
                       np.vstack(reco["global_popularity"]), targets, seed)
        out[campaign]["HR@10_difference_95"] = diff
    return out


def _obd_server(train: pd.DataFrame, test: pd.DataFrame, feats: list[str], n_items: int,
                cfg: ColdStartConfig, tmp: str) -> tuple[Recommender, dict[str, int]]:
    """A store with the training clicks as users (attributes) + click events, a
    popularity-only bundle trained from it, and the test clicks' users (attributes only)."""
    from shelfwise.bundle import train_bundle
    from shelfwise.bundle.bundle import load_bundle
    from shelfwise.data.loading import interactions_from_store

    store = open_store(f"sqlite:///{tmp}/shop.db")
    ids = [str(i) for i in range(n_items)]
    store.upsert_items([Item(id=i, title=f"item {i}") for i in ids])
    store.upsert_users([User(id=f"u{k}", attributes={f: r[f] for f in feats})
                        for k, r in enumerate(train.to_dict("records"))])
    store.add_events([Event(id=f"c{k}", type=EventType.CLICK, user_id=f"u{k}",
                            item_id=str(r["item_id"]), timestamp=r["timestamp"])
                      for k, r in enumerate(train.to_dict("records"))])
    store.upsert_users([User(id=f"test{k}", attributes={f: r[f] for f in feats})
                        for k, r in enumerate(test.to_dict("records"))])
    config = TrainConfig(generators=[GeneratorSpec(name="popularity")], tune_weights=False)
    train_bundle(interactions_from_store(store), Path(tmp) / "bundles", config)
    rec = Recommender(load_bundle(Path(tmp) / "bundles"), store, cold_start=cfg)
    rec.cold.groups.stop()
    rec.cold.groups.refresh()
    return rec, {e: k for k, e in enumerate(rec.items.ids)}


def _bootstrap(reco: NDArray[np.int64], targets: list[int], seed: int) -> list[float]:
    hit = (reco == np.asarray(targets)[:, None]).any(axis=1).astype(float)
    rng = np.random.default_rng(seed)
    means = [hit[rng.integers(0, len(hit), len(hit))].mean() for _ in range(2000)]
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)),
                                                               4)]


def _paired(a: NDArray[np.int64], b: NDArray[np.int64], targets: list[int], seed: int
            ) -> list[float]:
    t = np.asarray(targets)[:, None]
    d = (a == t).any(axis=1).astype(float) - (b == t).any(axis=1).astype(float)
    rng = np.random.default_rng(seed)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)),
                                                               4)]


# ---- latency at shop scale (synthetic) -------------------------------------------------
def latency(n_items: int, requests: int, seed: int) -> dict[str, Any]:
    """The per-request work of a cold feed and of placing new items, at ``n_items`` random
    unit vectors (dim 384) in the ANN the server uses at that size (HNSW above 50k), with a
    Zipf popularity, three attribute groups of 5,000 items each and 1% untouched items:
    the attribute mix, the allowed mask, :func:`score_cold` and :func:`place_new`."""
    from shelfwise.retrieval.ann import VectorIndex
    from shelfwise.services.cold_start import (
        ColdProfile,
        Component,
        Group,
        PopularityMix,
        place_new,
        single_threaded_ann,
    )

    single_threaded_ann()  # as every serving thread does before its first search
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((n_items, 384)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    t = time.perf_counter()
    index = VectorIndex(384, n_hint=n_items)
    index.add(vec)
    build_s = time.perf_counter() - t
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    base = PopularityMix.of(pop[rng.permutation(n_items)] / pop.sum())  # built once
    groups = []
    for g in range(3):
        items = np.sort(rng.choice(n_items, 5000, replace=False))
        share = rng.random(5000)
        groups.append((Group("k", str(g), 50 + g, items, share / share.sum(),
                             np.argsort(-share).astype(np.int64)), 0.8))
    untouched = rng.random(n_items) < 0.01
    blocked = rng.random(n_items) < 0.05
    cfg = ColdStartConfig()

    def search(v: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        i, s = index.search(v[None, :] if v.ndim == 1 else v, k)
        return (i[0], s[0]) if v.ndim == 1 else (i, s)

    cold_ms, place_ms = [], []
    for _ in range(requests):
        h = rng.choice(n_items, 2, replace=False)
        t = time.perf_counter()
        mix = base.with_groups(groups)
        allowed = ~blocked.copy()
        allowed[h] = False
        profile = ColdProfile([Component("history", "a", vec[h[0]], 0.8),
                               Component("history", "b", vec[h[1]], 1.0),
                               Component("query", "q", vec[rng.integers(n_items)], 1.0)],
                              mix)
        got = score_cold(profile, vec, search, K, allowed, cfg)
        cold_ms.append(time.perf_counter() - t)
        t = time.perf_counter()
        v = profile.vector()
        assert v is not None
        cand, sims = search(v, cfg.pool + 2)
        place_new(list(zip(got.items.tolist(), got.scores.tolist(), strict=True)), cand, sims,
                  untouched, allowed, cfg.new_items)
        place_ms.append(time.perf_counter() - t)

    def pct(xs: list[float]) -> dict[str, float]:
        ms = np.asarray(xs) * 1000
        return {"p50": round(float(np.percentile(ms, 50)), 3),
                "p99": round(float(np.percentile(ms, 99)), 3)}

    return {"items": n_items, "requests": requests, "ann": "hnsw" if n_items > 50_000 else
            "exact", "index_build_seconds": round(build_s, 1), "cold_feed_ms": pct(cold_ms),
            "place_new_items_ms": pct(place_ms)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=[*sorted(PRESETS), "open_bandit", "latency"])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--new-frac", type=float, default=0.05)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline", action="store_true",
                        help="new_items: also two-stage feeds (trains two pipelines)")
    args = parser.parse_args()
    start = time.perf_counter()
    load = os.getloadavg()
    result: dict[str, Any] = {"protocol": __doc__.split("\n\n")[1] if __doc__ else "",
                              "config_defaults": ColdStartConfig().model_dump(mode="json")}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]]
    if args.dataset == "open_bandit":
        steps = [("attributes", lambda: attributes(args.folds, args.seed))]
    elif args.dataset == "latency":
        steps = [("latency", lambda: latency(100_000, 500, args.seed))]
    else:
        steps = [("cold_users", lambda: cold_users(args.dataset, args.users, args.seed)),
                 ("new_items", lambda: new_items(args.dataset, args.new_frac, args.users,
                                                 args.seed, args.pipeline))]
    for key, step in steps:
        result[key] = step()
        print(key, result[key])
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["load_average_at_start"] = [round(x, 2) for x in load]
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = write_results(f"cold_start_serving_{args.dataset}", result)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
