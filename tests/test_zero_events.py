"""A shop with only its catalog: train, then search, similar items from text and new arrivals;
items posted later are searchable and similar at once, with or without the semantic model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shelfwise.cli.main import app
from shelfwise.config import ShelfwiseConfig
from shelfwise.data.schemas import Item
from shelfwise.serving import create_app
from shelfwise.storage import open_store

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CATALOG = [
    Item(id="shoe-red", title="Red running shoes, lightweight mesh", category=["Sport"],
         created_at=T0),
    Item(id="shoe-trail", title="Trail running shoes with grippy sole", category=["Sport"],
         created_at=T0 + timedelta(days=3)),
    Item(id="pan", title="Cast iron frying pan 28 cm", category=["Kitchen"],
         created_at=T0 + timedelta(days=1)),
    Item(id="kettle", title="Stainless steel kettle 1.7 l", category=["Kitchen"],
         created_at=T0 + timedelta(days=2)),
    Item(id="novel", title="Paperback novel, science fiction", category=["Books"]),
]
NO_SEMANTIC = ('[[train.generators]]\nname = "cooccurrence"\n\n'
               '[[train.generators]]\nname = "popularity"\nweight = 0.05\n\n'
               '[train.pipeline]\n[[train.pipeline.generators]]\nname = "cooccurrence"\n')


@pytest.fixture
def catalog_only(tmp_path: Path) -> tuple[str, Path]:
    """A store holding the catalog and no event at all, trained by the CLI as a shop would."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    store.upsert_items(CATALOG)
    store.close()
    config = tmp_path / "shelfwise.toml"
    config.write_text(NO_SEMANTIC)
    res = CliRunner().invoke(app, ["train", "--config", str(config), "--store", url,
                                   "--bundles", str(tmp_path / "bundles")], env={})
    assert res.exit_code == 0, res.output
    assert "0 interactions" in res.output
    return url, tmp_path / "bundles"


def test_a_catalog_alone_trains_and_serves_search_similar_and_new_arrivals(
        catalog_only: tuple[str, Path]) -> None:
    client = TestClient(create_app(*catalog_only))
    body = client.post("/v1/search", json={"query": "running shoes", "n": 2}).json()
    assert {i["item_id"] for i in body["items"]} == {"shoe-red", "shoe-trail"}
    similar = client.get("/v1/items/shoe-red/similar", params={"n": 2}).json()
    assert similar["items"][0]["item_id"] == "shoe-trail", "similar from the title's words"
    assert similar["items"][0]["explanation"]["reason"] == "similar_to"
    feed = client.get("/v1/users/first-visitor/feed", params={"n": 5, "diversity": 0}).json()
    assert feed["cold_start"] is True
    assert [i["item_id"] for i in feed["items"]][:4] == ["shoe-trail", "kettle", "pan",
                                                        "shoe-red"], "newest first"
    assert {i["explanation"]["reason"] for i in feed["items"]} == {"new_arrival"}


def test_a_posted_item_is_searchable_and_similar_without_the_semantic_model(
        catalog_only: tuple[str, Path]) -> None:
    client = TestClient(create_app(*catalog_only))
    r = client.post("/v1/items", json={"items": [
        {"id": "wok", "title": "Carbon steel wok, round bottom", "category": ["Kitchen"]},
        {"id": "sandals", "title": "Running sandals for trail and road",
         "category": ["Sport"], "available": False}]})
    assert r.status_code == 200
    body = client.post("/v1/search", json={"query": "carbon steel wok", "n": 3}).json()
    assert body["items"][0]["item_id"] == "wok"
    trail = client.post("/v1/search", json={"query": "trail running", "n": 5}).json()
    assert "sandals" not in {i["item_id"] for i in trail["items"]}, "unavailable stays out"
    similar = client.get("/v1/items/wok/similar", params={"n": 2}).json()
    assert similar["cold_start"] is True
    assert "kettle" in {i["item_id"] for i in similar["items"]}, "shares 'steel'"
    assert all(i["explanation"]["related_item"] == "wok" for i in similar["items"])


def test_events_after_a_catalog_only_start_make_the_feed_personal(
        catalog_only: tuple[str, Path]) -> None:
    client = TestClient(create_app(*catalog_only))
    r = client.post("/v1/events", json={"events": [
        {"type": "view", "user_id": "v1", "item_id": "pan"}]})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    feed = client.get("/v1/users/v1/feed", params={"n": 3}).json()
    assert feed["cold_start"] is False and "pan" not in {i["item_id"] for i in feed["items"]}


def test_with_the_semantic_model_a_catalog_alone_gives_semantic_neighbours(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    store.upsert_items(CATALOG)
    store.close()
    res = CliRunner().invoke(app, ["train", "--store", url, "--bundles",
                                   str(tmp_path / "bundles")], env={})
    assert res.exit_code == 0, res.output
    client = TestClient(create_app(url, tmp_path / "bundles"))
    similar = client.get("/v1/items/pan/similar", params={"n": 1}).json()
    assert similar["cold_start"] is False
    assert similar["items"][0]["item_id"] == "kettle"
    assert similar["items"][0]["explanation"]["reason"] == "similar_to"
    r = client.post("/v1/items", json={"items": [
        {"id": "skillet", "title": "Cast iron skillet, pre-seasoned", "category": ["Kitchen"]}]})
    assert r.status_code == 200
    top = client.get("/v1/items/skillet/similar", params={"n": 1}).json()["items"][0]
    assert top["item_id"] == "pan", "a posted item is placed by its vector at once"


def test_items_posted_to_one_worker_or_imported_reach_every_other(
        catalog_only: tuple[str, Path]) -> None:
    """Two servers on one store (two workers): an item posted to one, or written to the
    store by `shelfwise import items` while both serve, is searchable and similar on the
    other once it looks (``Engine.sync_catalog``, on a timer in a server); an item made
    unavailable on one leaves the other's lists too."""
    url, bundles = catalog_only
    cfg = ShelfwiseConfig.model_validate({  # no timer during the test: it looks when told
        "storage": {"url": url, "bundles": str(bundles)}, "serve": {"catalog_sync_seconds": 300}})
    one, other = TestClient(create_app(config=cfg)), TestClient(create_app(config=cfg))
    assert one.post("/v1/items", json={"items": [
        {"id": "wok", "title": "Carbon steel wok, round bottom",
         "category": ["Kitchen"]}]}).status_code == 200
    assert other.get("/v1/items/wok/similar").status_code == 404, "not looked yet"
    engine = other.app.state.engine  # type: ignore[attr-defined]
    assert engine.sync_catalog() == 1 and engine.sync_catalog() == 0
    body = other.post("/v1/search", json={"query": "carbon steel wok", "n": 3}).json()
    assert body["items"][0]["item_id"] == "wok"
    similar = other.get("/v1/items/wok/similar", params={"n": 2}).json()
    assert "kettle" in {i["item_id"] for i in similar["items"]}, "shares 'steel'"
    store = open_store(catalog_only[0])
    store.upsert_items([Item(id="teapot", title="Cast iron teapot", category=["Kitchen"])])
    store.close()
    assert one.app.state.engine.sync_catalog() == 1  # type: ignore[attr-defined]
    assert engine.sync_catalog() == 1
    for client in (one, other):
        hits = client.post("/v1/search", json={"query": "cast iron teapot", "n": 1}).json()
        assert hits["items"][0]["item_id"] == "teapot"
    assert one.post("/v1/items", json={"items": [
        {"id": "kettle", "title": "Stainless steel kettle 1.7 l", "category": ["Kitchen"],
         "available": False}]}).status_code == 200
    assert "kettle" in {i["item_id"] for i in other.get(
        "/v1/items/wok/similar", params={"n": 5}).json()["items"]}, "not looked yet"
    assert engine.sync_catalog() == 1, "a changed item is applied too"
    assert "kettle" not in {i["item_id"] for i in other.get(
        "/v1/items/wok/similar", params={"n": 5}).json()["items"]}, "sold out everywhere"
