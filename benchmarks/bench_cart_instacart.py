"""Cart completion on Instacart: the first half of a basket is the cart, the rest the target.

Protocol. Each user's orders by ``order_number``: the last order is the test basket, the one
before it the validation basket, earlier orders are training. Every basket is read in
``add_to_cart_order``; a basket of m >= 2 items gives the cart = its first max(1, m // 2) items
and the target set = the remaining items. Ranking is over the whole 49,688-product catalog (no
sampled negatives), cart items excluded. Recall@10 = targets found in the top 10 / number of
targets (not capped at 10); NDCG@10 = binary-gain DCG@10 / ideal DCG of min(10, targets) hits
(``shelfwise.evaluation.metrics.Recall`` / ``NDCG``). The user history a method may read is the
user's training orders, in order.

Models are fitted twice: on the orders before the validation basket (for choosing the cart
weights, by coordinate ascent on validation NDCG@10) and on every order before the test basket
(for the test numbers). Co-occurrence comes in two trainings: ``user`` = as a served bundle
trains it from the store (each user's whole sequence, pairs <= 3 steps apart) and ``basket`` =
pairs within one basket. SASRec (when ``shelfwise.retrieval.sasrec`` exists) is trained on
baskets as sequences, 1 thread, a few epochs.

Also timed: ``POST /v1/cart/recommend`` on a warm in-process app (FastAPI TestClient, SQLite
store holding the whole catalog and the training events) and the bare service call.

Run (one thread, ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` set):
``.venv/bin/python -m benchmarks.bench_cart_instacart [--epochs 3]``.
Writes ``benchmarks/results/cart_instacart.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, write_results
from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.evaluation.metrics import NDCG, Recall
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.popular import Popularity
from shelfwise.services.cart import CartConfig, CartScorer

K = 10
HAS_SASREC = importlib.util.find_spec("shelfwise.retrieval.sasrec") is not None


@dataclasses.dataclass
class Case:
    """One evaluated basket: its user, cart (add order), targets and the user's history."""

    user: int
    cart: np.ndarray
    target: np.ndarray
    history: np.ndarray


def load() -> tuple[pd.DataFrame, pd.DataFrame]:
    root = SHARED_DATA / "instacart"
    products = pd.read_csv(root / "products.csv").sort_values("product_id")
    orders = pd.read_csv(root / "order_products_sample.csv")
    back = orders.groupby("user_id")["order_number"].rank(method="dense", ascending=False)
    orders["back"] = back.astype(int)  # 1 = the user's last order, 2 = the one before...
    orders = orders.sort_values(["user_id", "order_number", "add_to_cart_order"])
    return products.reset_index(drop=True), orders.reset_index(drop=True)


def interactions(rows: pd.DataFrame, items: IdMap, by: str) -> Interactions:
    """Training rows as interactions of each user (``by="user"``) or each basket."""
    key = "user_id" if by == "user" else "order_id"
    frame = pd.DataFrame({
        "user_id": rows[key].astype(str),
        "item_id": rows["product_id"].astype(str),
        "timestamp": (rows["order_number"] * 1000 + rows["add_to_cart_order"]).astype(float),
    })
    return Interactions.from_frame(frame, items=items, has_time=False)


def cases(orders: pd.DataFrame, back: int, items: IdMap) -> list[Case]:
    """A case per user's ``back``-th last basket with >= 2 items."""
    out = []
    for user, g in orders.groupby("user_id", sort=True):
        basket = g[g["back"] == back]
        if len(basket) < 2:
            continue
        seq = items.indices(basket["product_id"].astype(str))
        half = max(1, len(seq) // 2)
        hist = items.indices(g[g["back"] > back]["product_id"].astype(str))
        out.append(Case(int(user), seq[:half], np.unique(seq[half:]), hist))
    return out


class Memo:
    """A generator whose ``score`` remembers its answers (SASRec over the same sequence is
    asked once per sequence during the weight search)."""

    def __init__(self, gen: BaseGenerator) -> None:
        self.gen = gen
        self.name = gen.name
        self._cache: dict[bytes, np.ndarray] = {}

    @property
    def n_items_(self) -> int:
        return self.gen.n_items_

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        key = b"|".join(np.asarray(h, np.int64).tobytes() for h in histories)
        if key not in self._cache:
            self._cache[key] = self.gen.score(histories)
        return self._cache[key]


def fit_models(train: pd.DataFrame, items: IdMap, epochs: int, batch_size: int,
               log: dict[str, Any]) -> dict[str, Any]:
    by_user = interactions(train, items, "user")
    by_basket = interactions(train, items, "basket")
    t = time.perf_counter()
    models: dict[str, Any] = {
        "popularity": Popularity().fit(by_user),
        "cooc_user": Cooccurrence(popularity_tiebreak=False).fit(by_user),
        "cooc_basket": Cooccurrence(window=None, popularity_tiebreak=False).fit(by_basket),
    }
    log["fit_seconds_cooc_pop"] = round(time.perf_counter() - t, 2)
    if HAS_SASREC and epochs > 0:
        from shelfwise.retrieval.sasrec import SASRec

        t = time.perf_counter()
        model = SASRec(epochs=epochs, batch_size=batch_size, max_len=50, hidden=64, threads=1,
                       seed=0).fit(by_basket)
        log["fit_seconds_sasrec"] = round(time.perf_counter() - t, 1)
        log["sasrec_epochs"] = model.history_
        print(f"  sasrec fitted in {log['fit_seconds_sasrec']} s: {model.history_}",
              file=sys.stderr)
        models["sasrec"] = Memo(model)
    return models


def scorer(models: dict[str, Any], config: CartConfig, cooc: str) -> CartScorer:
    seq = models.get("sasrec")
    return CartScorer(cooccurrence=models[cooc], popularity=models["popularity"],
                      sequential=seq, sequential_name="sasrec" if seq else None, config=config)


def evaluate(s: CartScorer, data: list[Case], *, with_user: bool) -> dict[str, float]:
    reco = np.full((len(data), K), -1, np.int64)
    for row, c in enumerate(data):
        cand = np.ones(s.n_items, dtype=bool)
        cand[c.cart] = False
        scores = s.score(c.cart, c.history if with_user else None, cand)
        top = s.top(scores, K, cand)
        reco[row, : len(top)] = [t[0] for t in top]
    targets = [c.target for c in data]
    rec = Recall(K).calc_per_user(reco, targets)
    ndcg = NDCG(K).calc_per_user(reco, targets)
    n = len(data)
    return {"Recall@10": float(np.mean(rec)), "NDCG@10": float(np.mean(ndcg)),
            "Recall@10_se": float(np.std(rec) / np.sqrt(n)),
            "NDCG@10_se": float(np.std(ndcg) / np.sqrt(n)), "baskets": n}


ONLY = dict(cooccurrence=0.0, sequential=0.0, user_cooccurrence=0.0, user_repeat=0.0,
            popularity=0.0)
BASELINES: dict[str, tuple[dict[str, Any], str, bool]] = {
    # name: (config, co-occurrence training, reads the user history)
    "popularity": ({**ONLY, "popularity": 1.0}, "cooc_user", False),
    "buy again (user's past items)": ({**ONLY, "user_repeat": 1.0}, "cooc_user", True),
    "cooccurrence (user sequences, as the bundle trains it)":
        ({**ONLY, "cooccurrence": 1.0}, "cooc_user", False),
    "cooccurrence (within baskets)": ({**ONLY, "cooccurrence": 1.0}, "cooc_basket", False),
}
SEQ_BASELINE = {"sasrec (cart only)": ({**ONLY, "sequential": 1.0,
                                        "sequence_with_history": False}, "cooc_user", False)}
GRID: dict[str, list[Any]] = {
    "cooc": ["cooc_user", "cooc_basket"],
    "cooccurrence": [0.0, 0.3, 1.0, 3.0],
    "sequential": [0.0, 0.25, 0.5, 1.0, 2.0],
    "sequence_with_history": [False, True],
    "user_cooccurrence": [0.0, 0.05, 0.1, 0.3],
    "user_repeat": [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
    "popularity": [0.0, 0.02, 0.1],
    "cart_decay": [0.7, 0.9, 1.0],
    "history_decay": [0.9, 0.95, 0.98, 0.995, 1.0],
}


def tune(models: dict[str, Any], data: list[Case], log: list[dict[str, Any]]
         ) -> tuple[CartConfig, str]:
    """Coordinate ascent on validation NDCG@10 from the defaults (two passes)."""
    params: dict[str, Any] = {"cooc": "cooc_user", **CartConfig().model_dump(
        include={"cooccurrence", "sequential", "sequence_with_history", "user_cooccurrence",
                 "user_repeat", "popularity", "cart_decay", "history_decay"})}
    grid = {k: v for k, v in GRID.items() if "sasrec" in models or k not in
            ("sequential", "sequence_with_history")}

    def value(p: dict[str, Any]) -> float:
        cfg = CartConfig(**{k: v for k, v in p.items() if k != "cooc"})
        res = evaluate(scorer(models, cfg, p["cooc"]), data, with_user=True)
        log.append({**p, "valid_NDCG@10": res["NDCG@10"]})
        return res["NDCG@10"]

    best = value(params)
    for _ in range(2):
        changed = False
        for key, values in grid.items():
            for v in values:
                if v == params[key]:
                    continue
                trial = {**params, key: v}
                got = value(trial)
                if got > best + 1e-6:
                    best, params, changed = got, trial, True
            print(f"  tuned {key}: {params[key]} (valid NDCG@10 {best:.4f})", file=sys.stderr)
        if not changed:
            break
    cooc = params.pop("cooc")
    return CartConfig(**params), cooc


def latency(models: dict[str, Any], train: pd.DataFrame, products: pd.DataFrame,
            items: IdMap, config: CartConfig, cooc: str, data: list[Case],
            n_requests: int) -> dict[str, Any]:
    """p50/p99 of the endpoint on a warm TestClient and of the bare service call."""
    from fastapi.testclient import TestClient

    from shelfwise.bundle import GeneratorSpec, TrainConfig, train_bundle
    from shelfwise.data.schemas import Event, EventType, Item
    from shelfwise.services.cart import CartService
    from shelfwise.services.engine import Engine
    from shelfwise.serving import create_app
    from shelfwise.storage import open_store

    tmp = Path(tempfile.mkdtemp(prefix="cart-bench-"))
    url = f"sqlite:///{tmp / 'shop.db'}"
    t = time.perf_counter()
    store = open_store(url)
    store.upsert_items([Item(id=str(p), title=str(name)) for p, name in
                        zip(products["product_id"], products["product_name"], strict=True)])
    base = datetime(2017, 1, 1, tzinfo=UTC)
    store.add_events([
        Event(id=f"e{k}", type=EventType.PURCHASE, user_id=str(u), item_id=str(p),
              timestamp=base + timedelta(seconds=int(o) * 1000 + int(a)))
        for k, (u, p, o, a) in enumerate(zip(train["user_id"], train["product_id"],
                                             train["order_number"],
                                             train["add_to_cart_order"], strict=True))])
    store_seconds = time.perf_counter() - t
    # a bundle with the benchmark's own fitted models (same item index), its cart weights
    bundle = train_bundle(interactions(train.head(1000), items, "user"), tmp / "bundles",
                          TrainConfig(generators=[GeneratorSpec(name="cooccurrence"),
                                                  GeneratorSpec(name="popularity")],
                                      tune_weights=False))
    gens: dict[str, Any] = {"cooccurrence": models[cooc], "popularity": models["popularity"]}
    if "sasrec" in models:
        gens["sasrec"] = models["sasrec"].gen
    bundle = dataclasses.replace(bundle, generators=gens)  # the fully trained models
    engine = Engine(store=store, bundle=bundle)
    app = create_app(engine=engine)
    rec = engine.recommender
    client = TestClient(app)
    reqs = [{"items": items.externals(c.cart), "user_id": str(c.user), "n": K}
            for c in data[:n_requests]]
    for body in reqs[:20]:  # warm up (and fill the user-history cache once per user)
        assert client.post("/v1/cart/recommend", json=body).status_code == 200

    def pct(xs: list[float]) -> dict[str, float]:
        ms = np.asarray(xs) * 1000
        return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2)}

    out: dict[str, Any] = {"catalog_items": len(items), "requests": len(reqs),
                           "store_build_seconds": round(store_seconds, 1)}
    for label, cfg in (("tuned weights", config), ("default weights", CartConfig())):
        service = CartService(rec, cfg)
        engine.cart_service = service  # what the route serves
        for body in reqs:
            client.post("/v1/cart/recommend", json=body)
        http, direct = [], []
        for body in reqs:
            t = time.perf_counter()
            r = client.post("/v1/cart/recommend", json=body)
            http.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        for body in reqs:
            t = time.perf_counter()
            service.recommend(body["items"], body["user_id"], K)
            direct.append(time.perf_counter() - t)
        example = client.post("/v1/cart/recommend", json=reqs[0]).json()
        out[label] = {
            "http_testclient": pct(http), "service_call": pct(direct),
            "sources": example["sources"],
            "example": {"cart": example["cart"][:5],
                        "top3": [(i["title"], i["reason"]) for i in example["items"][:3]]}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="SASRec epochs (0 = no SASRec)")
    ap.add_argument("--batch-size", type=int, default=32, help="SASRec baskets per step")
    ap.add_argument("--latency-requests", type=int, default=300)
    args = ap.parse_args()
    products, orders = load()
    items = IdMap(products["product_id"].astype(str).tolist())
    valid_cases = cases(orders, 2, items)
    test_cases = cases(orders, 1, items)
    info: dict[str, Any] = {"valid": {}, "test": {}}
    print(f"validation baskets {len(valid_cases)}, test baskets {len(test_cases)}",
          file=sys.stderr)

    models_v = fit_models(orders[orders["back"] > 2], items, args.epochs, args.batch_size,
                          info["valid"])
    search_log: list[dict[str, Any]] = []
    tuned, tuned_cooc = tune(models_v, valid_cases, search_log)
    print(f"tuned: {tuned_cooc} {tuned.model_dump()}", file=sys.stderr)

    train = orders[orders["back"] > 1]
    models_t = fit_models(train, items, args.epochs, args.batch_size, info["test"])
    baselines = {**BASELINES, **(SEQ_BASELINE if "sasrec" in models_t else {})}
    results: dict[str, dict[str, float]] = {}
    for name, (cfg, cooc, with_user) in baselines.items():
        results[name] = evaluate(scorer(models_t, CartConfig(**cfg), cooc), test_cases,
                                 with_user=with_user)
    default = CartConfig()
    results["cart service, default weights, anonymous"] = evaluate(
        scorer(models_t, default, "cooc_user"), test_cases, with_user=False)
    results["cart service, default weights, with user"] = evaluate(
        scorer(models_t, default, "cooc_user"), test_cases, with_user=True)
    results["cart service, tuned weights, anonymous"] = evaluate(
        scorer(models_t, tuned, tuned_cooc), test_cases, with_user=False)
    results["cart service, tuned weights, with user"] = evaluate(
        scorer(models_t, tuned, tuned_cooc), test_cases, with_user=True)
    for name, r in results.items():
        print(f"{name:58s} Recall@10 {r['Recall@10']:.4f} ± {r['Recall@10_se']:.4f}  "
              f"NDCG@10 {r['NDCG@10']:.4f} ± {r['NDCG@10_se']:.4f}", file=sys.stderr)

    lat = latency(models_t, train, products, items, tuned, tuned_cooc, test_cases,
                  args.latency_requests)
    for label in ("tuned weights", "default weights"):
        print(f"latency, {label}: {lat[label]['http_testclient']} (HTTP), "
              f"{lat[label]['service_call']} (service)", file=sys.stderr)
    path = write_results("cart_instacart", {
        "dataset": "instacart order_products_sample (593 users, 15,183 orders)",
        "protocol": __doc__.split("Protocol. ", 1)[1].split("\n\nAlso timed")[0],
        "catalog_items": len(items),
        "baskets_evaluated": {"validation": len(valid_cases), "test": len(test_cases)},
        "sasrec": HAS_SASREC and args.epochs > 0,
        "sasrec_params": {"epochs": args.epochs, "batch_size": args.batch_size, "max_len": 50,
                          "hidden": 64, "trained_on": "training baskets as sequences"},
        "results": results,
        "tuned_config": {"cooccurrence_training": tuned_cooc, **tuned.model_dump()},
        "default_config": default.model_dump(),
        "weight_search": search_log,
        "fit": info,
        "latency": lat,
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
