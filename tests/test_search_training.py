"""The search ranker learned from logged searches: HTTP searches, clicks citing their
request_id, training, and a new server that serves the learned order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shelfwise.bundle import GeneratorSpec, TrainConfig, load_bundle, train_bundle
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.services.recommender import Recommender
from shelfwise.services.search_training import (
    SearchTrainingConfig,
    logged_searches,
    train_search_ranker,
)
from shelfwise.serving import create_app
from shelfwise.storage import open_store

BRANDS = ["Makita", "Bosch", "Dewalt", "Ryobi"]
PRODUCTS = ["cordless drill 18V", "work light", "battery pack", "drill bit set"]
CONFIG = SearchTrainingConfig(min_searches=20)


def brand_of(user: int) -> str:
    return BRANDS[user % len(BRANDS)]


@pytest.fixture()
def shop(tmp_path: Path) -> tuple[str, Path]:
    """Brand-loyal shoppers: each bought a work light and a battery of one brand."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    store.upsert_items([Item(id=f"{b}-{k}", title=f"{b} {p}", brand=b, category=["Tools"],
                             price=50.0) for b in BRANDS for k, p in enumerate(PRODUCTS)])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.add_events([Event(id=f"h{u}-{k}", type=EventType.PURCHASE, user_id=f"u{u}",
                            item_id=f"{brand_of(u)}-{k}", timestamp=t0 + timedelta(hours=u))
                      for u in range(80) for k in (1, 2)])
    cfg = TrainConfig(generators=[GeneratorSpec(name="cooccurrence"),
                                  GeneratorSpec(name="popularity", weight=0.05)])
    train_bundle(interactions_from_store(store), tmp_path / "bundles", cfg)
    store.close()
    return url, tmp_path / "bundles"


def top_is_own_brand(client: TestClient, users: range) -> float:
    hits = []
    for u in users:
        body = client.post("/v1/search", json={"query": "cordless drill", "user_id": f"u{u}",
                                               "n": 4}).json()
        hits.append(body["items"][0]["item_id"] == f"{brand_of(u)}-0")
    return float(np.mean(hits))


def test_ranker_learned_from_logged_clicks_serves_each_shopper_their_brand(
        shop: tuple[str, Path]) -> None:
    url, bundles = shop
    client = TestClient(create_app(url, bundles))
    assert top_is_own_brand(client, range(60, 80)) <= 0.5, "the fused order is brand-blind"
    for u in range(60):  # logged searches; each shopper clicks their own brand's drill
        body = client.post("/v1/search", json={"query": "cordless drill", "user_id": f"u{u}",
                                               "n": 8}).json()
        assert body["ranker"] == "rrf"
        client.post("/v1/events", json={"events": [{
            "type": "click", "user_id": f"u{u}", "item_id": f"{brand_of(u)}-0",
            "request_id": body["request_id"]}]})
    store = client.app.state.store  # type: ignore[attr-defined]
    client.post("/v1/rerank", json={"query": "drill", "user_id": "u1",
                                    "items": ["Bosch-0", "Makita-0"]})
    client.app.state.engine.impressions.flush()  # type: ignore[attr-defined]
    logged = logged_searches(store)
    assert [s.reranked for s in logged].count(True) == 1 and logged[-1].reranked
    logged = logged[:-1]
    assert len(logged) == 80 and sum(bool(s.grades) for s in logged) == 60
    assert all(len(s.shown) >= 4 for s in logged)

    rec = Recommender(load_bundle(bundles), store)
    report = train_search_ranker(store, rec, CONFIG)
    assert report.trained and report.ranker is not None, report.summary()
    assert report.holdout_ndcg10["lambdamart"] > report.holdout_ndcg10["rrf"]
    # train as `shelfwise train` does: the ranker is inside the bundle before it is published
    cfg = rec.bundle.manifest.config.model_copy(update={"search_ranker": CONFIG})
    bundle = train_bundle(interactions_from_store(store), bundles, cfg, store=store)
    assert "search_ranker" in bundle.manifest.parts
    assert bundle.manifest.search_ranker is not None
    assert bundle.manifest.search_ranker["trained"] is True
    assert bundle.path is not None and (bundle.path / "search_ranker").is_dir()

    fresh = TestClient(create_app(url, bundles))  # a restarted server loads the ranker
    first = fresh.post("/v1/search", json={"query": "cordless drill", "user_id": "u60"}).json()
    assert first["ranker"] == "lambdamart" and first["personalized"] is True
    assert top_is_own_brand(fresh, range(60, 80)) == 1.0, "shoppers who never searched"
    anonymous = fresh.post("/v1/search", json={"query": "work light"}).json()
    assert anonymous["items"][0]["item_id"].endswith("-1"), "the query still rules"
    # an experiment whose B variant answers without the learned ranker
    fresh.post("/v1/experiments", json={"id": "no-ranker", "surfaces": ["search"], "variants": [
        {"name": "A", "share": 0.5},
        {"name": "B", "share": 0.5, "overrides": {"search_ranker": False}}]})
    fresh.post("/v1/experiments/no-ranker/start")
    rankers = {"A": set(), "B": set()}
    for u in range(60, 80):
        body = fresh.post("/v1/search", json={"query": "cordless drill",
                                              "user_id": f"u{u}"}).json()
        rankers[body["experiments"]["no-ranker"]].add(body["ranker"])
    assert rankers == {"A": {"lambdamart"}, "B": {"rrf"}}


def test_too_few_or_unhelpful_logs_keep_the_fused_order(shop: tuple[str, Path]) -> None:
    url, bundles = shop
    client = TestClient(create_app(url, bundles))
    store = client.app.state.store  # type: ignore[attr-defined]
    rec = Recommender(load_bundle(bundles), store)
    report = train_search_ranker(store, rec, CONFIG)
    assert not report.trained and "0 logged searches" in report.reason
    for u in range(40):  # each asks for one product by name and clicks it, the fused top hit
        body = client.post("/v1/search", json={"query": f"{BRANDS[u % 3]} battery pack",
                                               "user_id": f"u{u}"}).json()
        assert body["items"][0]["item_id"] == f"{BRANDS[u % 3]}-2"
        client.post("/v1/events", json={"events": [{
            "type": "click", "user_id": f"u{u}", "item_id": f"{BRANDS[u % 3]}-2",
            "request_id": body["request_id"]}]})
    report = train_search_ranker(store, rec, CONFIG)
    assert not report.trained and "does not beat" in report.reason, report.summary()
    assert report.holdout_ndcg10["rrf"] == pytest.approx(1.0) and report.ranker is None


def test_shelfwise_train_learns_the_search_ranker(shop: tuple[str, Path], tmp_path: Path
                                                  ) -> None:
    from typer.testing import CliRunner

    from shelfwise.bundle.bundle import resolve_bundle_path
    from shelfwise.cli.main import app

    url, bundles = shop
    client = TestClient(create_app(url, bundles))
    for u in range(60):
        body = client.post("/v1/search", json={"query": "cordless drill", "user_id": f"u{u}",
                                               "n": 8}).json()
        client.post("/v1/events", json={"events": [{
            "type": "purchase", "user_id": f"u{u}", "item_id": f"{brand_of(u)}-0",
            "request_id": body["request_id"]}]})
    client.app.state.engine.impressions.flush()  # type: ignore[attr-defined]
    config = tmp_path / "train.toml"
    config.write_text('[[generators]]\nname = "cooccurrence"\n\n'
                      '[[generators]]\nname = "popularity"\nweight = 0.05\n')
    res = CliRunner().invoke(app, ["train", "--store", url, "--bundles", str(bundles),
                                   "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "search ranker: trained on 60 logged searches (" in res.output
    assert (resolve_bundle_path(bundles) / "search_ranker").is_dir()
