"""Cold start as served: new users (attributes, a first query, onboarding picks) and new items
(posted after training) in the feed — blend and pipeline bundles —, similar items and the cart,
each explained; plus known answers for the placement, the group shrinkage and the look-alikes.

The shop: "north" shoppers (8) buy kitchen items, "south" shoppers (5) garden items, so
global popularity favours the kitchen; three gamers (no region) buy games.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from shelfwise.bundle import TrainConfig, train_bundle
from shelfwise.data.ids import IdMap
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item, User
from shelfwise.ranking.config import PipelineConfig
from shelfwise.services.cart import LookAlikes
from shelfwise.services.cold_groups import GroupPopularity
from shelfwise.services.cold_start import (
    ColdProfile,
    ColdStartConfig,
    Component,
    PopularityMix,
    place_new,
    score_cold,
    text_neighbours,
)
from shelfwise.serving import create_app
from shelfwise.storage import Store, open_store
from tests.helpers import counted_queries, free_port, wait_for_health

T0 = datetime.now(UTC) - timedelta(days=2)  # group popularity counts recent events
KITCHEN = {"k1": "Stainless steel chef knife 20 cm", "k2": "Bamboo cutting board",
           "k3": "Cast iron frying pan 28 cm", "k4": "Ceramic teapot with infuser"}
GARDEN = {"g1": "Garden hose 20 m with spray nozzle", "g2": "Pruning shears for roses",
          "g3": "Wildflower seed mix for bees"}
GAMES = {"r1": "Elven Saga: fantasy role-playing game for PC",
         "r2": "Mechanical gaming keyboard with RGB lights"}
CATEGORY = {**{i: ["Home", "Kitchen"] for i in KITCHEN},
            **{i: ["Home", "Garden"] for i in GARDEN}, **{i: ["Games"] for i in GAMES}}


def fill_shop(store: Store) -> None:
    """The catalog, the shoppers (with their region) and their purchases."""
    store.upsert_items([Item(id=i, title=t, category=CATEGORY[i])
                        for i, t in {**KITCHEN, **GARDEN, **GAMES}.items()])
    walks: list[tuple[str, str | None, list[str]]] = []
    walks += [(f"n{u}", "north", ["k1", "k2", "k3", "k4"]) for u in range(8)]
    walks += [(f"s{u}", "south", ["g1", "g2", "g3"]) for u in range(5)]
    walks += [(f"p{u}", None, ["r1", "r2"]) for u in range(3)]
    store.upsert_users([User(id=u, attributes={"region": r} if r else {}) for u, r, _ in walks])
    t = 0
    events = []
    for u, _, items in walks:
        for item in items:
            events.append(Event(id=f"e{t}", type=EventType.PURCHASE, user_id=u, item_id=item,
                                timestamp=T0 + timedelta(minutes=t)))
            t += 1
    store.add_events(events)


def wait_ready(client: TestClient, what: str = "attribute_groups") -> None:
    deadline = time.monotonic() + 30
    while not client.get("/health").json()["ready"].get(what):
        assert time.monotonic() < deadline, f"{what} never became ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("cold_shop")
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = open_store(url)
    fill_shop(store)
    train_bundle(interactions_from_store(store), tmp / "bundles")
    store.close()
    return url, tmp / "bundles"


@pytest.fixture
def client(shop: tuple[str, Path], tmp_path: Path) -> TestClient:
    """A fresh copy of the trained shop per test (tests post users, items and events)."""
    import shutil

    url, bundles = shop
    src = Path(url.removeprefix("sqlite:///"))
    shutil.copy(src, tmp_path / "shop.db")
    c = TestClient(create_app(f"sqlite:///{tmp_path / 'shop.db'}", bundles))
    wait_ready(c)
    return c


def feed(client: TestClient, user: str, n: int = 3, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/users/{user}/feed", params={"n": n, "diversity": 0, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    for item in body["items"]:
        assert item["explanation"]["reason"] and item["explanation"]["text"], item
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def why(body: dict[str, Any], item: str) -> dict[str, Any]:
    found: dict[str, Any] = next(i["explanation"] for i in body["items"] if i["item_id"] == item)
    return found


# ---- new users -------------------------------------------------------------------------------
def test_a_user_with_only_attributes_gets_their_groups_favourites(client: TestClient) -> None:
    stranger = feed(client, "stranger")
    assert stranger["cold_start"] and set(ids(stranger)) <= set(KITCHEN), \
        "global popularity favours the kitchen"
    assert client.post("/v1/users", json={"users": [
        {"id": "newcomer", "attributes": {"region": "south", "shoe_size": 41}}]}).json() == \
        {"written": 1}
    body = feed(client, "newcomer")
    assert body["cold_start"] and set(ids(body)) == set(GARDEN), "the south's garden items"
    assert ids(body) != ids(stranger)
    for item in ids(body):
        e = why(body, item)
        assert e["reason"] == "popular_with" and e["label"] == "region: south"
        assert e["source"] == "cold_start" and e["parts"]["popular_with"] > 0
        assert e["text"] == "Popular with shoppers like you (region: south)"
    client.post("/v1/users", json={"users": [{"id": "northerner",
                                              "attributes": {"region": "north"}}]})
    assert set(ids(feed(client, "northerner"))) <= set(KITCHEN)


def test_a_value_without_enough_shoppers_conditions_nothing(client: TestClient) -> None:
    client.post("/v1/users", json={"users": [{"id": "lone", "attributes": {"region": "west"}}]})
    assert ids(feed(client, "lone")) == ids(feed(client, "stranger"))


def test_one_onboarding_pick_shapes_the_next_feed(client: TestClient) -> None:
    r = client.post("/v1/users/picker/onboarding", json={"items": ["g2"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": "picker", "items": ["g2"], "interests": [], "accepted": 1,
                        "duplicates": 0}
    again = client.post("/v1/users/picker/onboarding", json={"items": ["g2"]}).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1, "a repeated pick is stored once"
    body = feed(client, "picker", n=2)
    assert not body["cold_start"] and set(ids(body)) == {"g1", "g3"}
    assert {why(body, i)["related_item"] for i in ids(body)} == {"g2"}
    profile = client.get("/v1/users/picker/profile").json()
    assert profile["recent_items"] == ["g2"]


def test_a_picked_category_shapes_the_next_feed(client: TestClient) -> None:
    r = client.post("/v1/users/gardener/onboarding", json={"categories": ["Garden"]})
    assert r.status_code == 200 and r.json()["interests"] == ["Garden"]
    body = feed(client, "gardener")
    assert body["cold_start"] and set(ids(body)) == set(GARDEN)
    for item in ids(body):
        e = why(body, item)
        assert e["reason"] == "matches_interest" and e["label"] == "Garden"
        assert e["text"] == "Matches your interest in Garden"
    client.post("/v1/users/gardener/onboarding", json={"categories": ["Home > Kitchen"]})
    assert client.post("/v1/users/gardener/onboarding", json={"categories": ["Garden"]}).json()[
        "interests"] == ["Home > Kitchen", "Garden"], "merged, the latest pick last"


def test_onboarding_refuses_unknown_picks_and_stores_nothing(client: TestClient) -> None:
    before = client.get("/health").json()["counts"]["events"]
    r = client.post("/v1/users/x/onboarding", json={"items": ["g1", "nope"]})
    assert r.status_code == 404 and "'nope'" in r.text
    r = client.post("/v1/users/x/onboarding", json={"items": ["g1"], "categories": ["Toys"]})
    assert r.status_code == 404 and "'Toys'" in r.text
    assert client.post("/v1/users/x/onboarding", json={}).status_code == 422
    assert client.get("/health").json()["counts"]["events"] == before


def test_a_first_search_query_shapes_the_next_feed(client: TestClient) -> None:
    wait_ready(client, "search_index")
    encoder = client.app.state.recommender.semantic.encoder  # type: ignore[attr-defined]
    log = client.app.state.engine.impressions  # type: ignore[attr-defined]
    # the search event is written behind the answer: held back here, the feed still sees it
    with counted_queries(encoder) as calls, log._write_lock:
        r = client.post("/v1/search", json={"query": "fantasy role-playing game",
                                            "user_id": "seeker", "n": 3})
        assert r.status_code == 200, r.text
        assert client.app.state.store.search_queries("seeker") == []  # type: ignore[attr-defined]
        body = feed(client, "seeker", n=2)
    assert calls == ["fantasy role-playing game"], "the feed reused the search's vector"
    assert body["cold_start"] and ids(body)[0] == "r1"
    e = why(body, "r1")
    assert e["reason"] == "matches_query" and e["label"] == "fantasy role-playing game"
    assert e["text"] == "Because you searched \u201cfantasy role-playing game\u201d"
    zh = client.get("/v1/users/seeker/feed", params={"n": 1, "diversity": 0},
                    headers={"Accept-Language": "zh-CN"}).json()
    assert zh["items"][0]["explanation"]["text"].startswith("因为您搜索过「fantasy")


# ---- new items -------------------------------------------------------------------------------
NEW_KNIFE = {"id": "k9", "title": "Damascus steel chef knife 21 cm",
             "category": ["Home", "Kitchen"]}


def test_a_posted_item_reaches_the_feed_similar_items_and_the_cart(client: TestClient) -> None:
    client.post("/v1/events", json={"events": [
        {"id": "c1", "type": "click", "user_id": "cook", "item_id": "k1"}]})
    before = feed(client, "cook", n=3)
    assert client.post("/v1/items", json={"items": [NEW_KNIFE]}).json() == {"written": 1}
    # the feed of a user whose history matches its text
    body = feed(client, "cook", n=3)
    assert "k9" in ids(body) and "k9" not in ids(before)
    e = why(body, "k9")
    assert e["reason"] == "new_arrival" and e["source"] == "new_item"
    assert e["related_item"] == "k1" and e["label"] == "Kitchen"
    assert e["text"].startswith("New arrival, like Stainless steel chef knife")
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True), "placed on the list's own scale"
    # similar items of a near-identical item
    similar = client.get("/v1/items/k1/similar", params={"n": 3, "diversity": 0}).json()
    assert ids(similar)[0] == "k9"
    assert why(similar, "k9")["reason"] == "new_arrival"
    assert why(similar, "k9")["related_item"] == "k1"
    # a companion in the cart: k2 is bought with k1, which the new knife looks like
    r = client.post("/v1/cart/recommend", json={"items": ["k2"], "n": 4})
    cart = r.json()
    assert "k9" in ids(cart), cart
    e = why(cart, "k9")
    assert e["reason"] == "new_arrival" and e["related_item"] == "k2"
    assert e["text"] == "New arrival that goes with Bamboo cutting board"
    # and a new item in the cart reads as its look-alikes
    alone = client.post("/v1/cart/recommend", json={"items": ["k9"], "n": 2}).json()
    assert alone["cart"] == ["k9"] and alone["unscored_items"] == []
    assert set(ids(alone)) <= set(KITCHEN) and not alone["cold_start"]


# ---- the pipeline bundle ---------------------------------------------------------------------
THEMES = {
    "kitchen": ["Chef knife", "Cutting board", "Frying pan", "Teapot", "Saucepan",
                "Whisk", "Colander", "Rolling pin", "Spatula", "Mixing bowl"],
    "garden": ["Garden hose", "Pruning shears", "Flower seeds", "Watering can", "Rake",
               "Shovel", "Wheelbarrow", "Planter pot", "Compost bin", "Garden gloves"],
    "games": ["Fantasy RPG game", "Racing game", "Gaming mouse", "Gaming keyboard",
              "Game controller", "Strategy game", "Puzzle game", "Headset for gaming",
              "Shooter game", "Platformer game"],
}


@pytest.fixture(scope="module")
def pipeline_shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Store]:
    """Three themes, 180 shoppers each walking 5 items of one theme; the feed is the
    two-stage pipeline (LambdaMART over co-occurrence and popularity candidates)."""
    tmp = tmp_path_factory.mktemp("cold_pipeline")
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = open_store(url)
    store.upsert_items([Item(id=f"{t}{k}", title=title, category=[t])
                        for t, titles in THEMES.items() for k, title in enumerate(titles)])
    rng = np.random.default_rng(0)
    events, t = [], 0
    for u in range(180):
        theme = list(THEMES)[u % 3]
        for k in rng.choice(10, size=5, replace=False):
            events.append(Event(id=f"e{t}", type=EventType.VIEW, user_id=f"u{u}",
                                item_id=f"{theme}{k}", timestamp=T0 + timedelta(minutes=t)))
            t += 1
    store.add_events(events)
    pipe = PipelineConfig.from_dict({
        "generators": [{"name": "cooccurrence", "params": {"popularity_tiebreak": False}},
                       {"name": "popularity", "params": {"half_life_days": None}}],
        "candidates_per_generator": 15, "min_groups": 30, "tune_blend": False,
        "ranker": {"n_estimators": 40, "min_child_samples": 5,
                   "early_stopping_rounds": None}})
    cfg = TrainConfig(pipeline=pipe, tune_weights=False)
    train_bundle(interactions_from_store(store), tmp / "bundles", cfg)
    client = TestClient(create_app(url, tmp / "bundles"))
    return client, store


def test_a_posted_item_reaches_the_pipeline_feed(
        pipeline_shop: tuple[TestClient, Store]) -> None:
    client, store = pipeline_shop
    rec = client.app.state.recommender  # type: ignore[attr-defined]
    assert rec.bundle.pipeline is not None and rec.bundle.pipeline.mode_ == "ranker"
    user = "u0"  # a kitchen shopper
    assert set(store.interaction_items(user)) <= {f"kitchen{k}" for k in range(10)}
    before = feed(client, user, n=10)
    assert {why(before, i)["source"] for i in ids(before)} == {"pipeline"}
    r = client.post("/v1/items", json={"items": [
        {"id": "kitchen-new", "title": "Chef knife, Japanese santoku", "category": ["kitchen"]},
        {"id": "garden-new", "title": "Garden hose reel", "category": ["garden"]}]})
    assert r.status_code == 200
    body = feed(client, user, n=10)
    assert "kitchen-new" in ids(body) and "garden-new" not in ids(body)[:5]
    e = why(body, "kitchen-new")
    assert e["reason"] == "new_arrival" and e["source"] == "new_item"
    assert e["related_item"] in set(store.interaction_items(user))
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True), "placed on the pipeline's own scale"
    trained = [i for i in ids(body) if not i.endswith("-new")]
    assert trained == ids(before)[: len(trained)], "the pipeline's own order is kept"


# ---- known answers ---------------------------------------------------------------------------
def test_place_new_inserts_at_the_text_rank_on_the_lists_scale() -> None:
    ranked = [(0, 3.0), (1, 2.0), (2, 1.0)]
    cand = np.array([5, 1, 0, 6, 2, 7])
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.05], np.float32)
    untouched = np.array([False] * 5 + [True] * 3)
    allowed = np.ones(8, dtype=bool)
    out = place_new(ranked, cand, sims, untouched, allowed, max_new=3)
    assert [p.item for p in out] == [5, 0, 1, 6, 2], "7 matches worse than every trained item"
    assert out[0].new and out[0].rank == 0 and out[0].score > 3.0
    assert out[3].new and out[3].rank == 2 and out[3].score == pytest.approx(1.5)
    assert [p.item for p in place_new(ranked, cand, sims, untouched, allowed, 1)] == \
        [5, 0, 1, 2], "at most max_new"
    allowed[5] = False
    assert [p.item for p in place_new(ranked, cand, sims, untouched, allowed, 3)] == \
        [0, 1, 6, 2], "a seen or unavailable new item is never placed"
    assert place_new(ranked, cand, sims, untouched, allowed, 0) == place_new(
        ranked, cand[:0], sims[:0], untouched, allowed, 3)


def test_group_popularity_is_shrunk_toward_global_by_group_size(store: Store) -> None:
    """Five south shoppers: weight 5 / (5 + 10) on their distribution, 2/3 on global."""
    fill_shop(store)
    items = IdMap([*KITCHEN, *GARDEN, *GAMES])
    dist = np.zeros(len(items))
    dist[: len(KITCHEN)] = 1.0 / len(KITCHEN)
    base = PopularityMix.of(dist)
    cfg = ColdStartConfig(shrinkage=10.0, min_group_users=5, window_days=None)
    groups = GroupPopularity(store, items, cfg)
    assert groups.refresh() == 2 and groups.keys == ["region"]
    mix = groups.mix({"region": "south", "other": [1, 2]}, base)
    assert mix is not None and [(g.value, round(w, 4)) for g, w in mix.groups] == \
        [("south", 0.3333)]
    every = mix.values(np.arange(len(items)))
    g1 = items.index("g1")
    assert every[g1] == pytest.approx(1 / 3 * 1 / 3)
    assert every[0] == pytest.approx(2 / 3 * 1 / 4)
    assert every.sum() == pytest.approx(1.0)
    allowed = np.ones(len(items), dtype=bool)
    assert set(mix.top(3, allowed).tolist()) >= {g1, items.index("g2"), items.index("g3")}
    lifted = mix.lift(g1)
    assert lifted is not None and lifted[0].value == "south"
    assert groups.mix({"region": "west"}, base) is None and groups.mix({}, base) is None
    strict = GroupPopularity(store, items, cfg.model_copy(update={"min_group_users": 6}))
    assert strict.refresh() == 1, "the south (5 shoppers) is below the floor"


def test_score_cold_favours_a_picked_categorys_popular_members() -> None:
    vectors = np.eye(4, dtype=np.float32)
    pop = PopularityMix.of(np.array([0.1, 0.2, 0.3, 0.4]))
    profile = ColdProfile([Component("interest", "A", np.zeros(4, np.float32), 1.0,
                                     np.array([0, 1]))], pop)
    allowed = np.ones(4, dtype=bool)

    def search(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = vectors @ v
        o = np.argsort(-s)[:k]
        return o[None, :], s[o][None, :]

    got = score_cold(profile, None, None, 2, allowed, ColdStartConfig())
    assert got.items.tolist() == [1, 0] and got.main == ["interest", "interest"]
    profile.components = [Component("query", "q", vectors[2], 1.0)]
    got = score_cold(profile, vectors, search, 2, allowed,
                     ColdStartConfig(popularity_weight=0.1))
    assert got.items.tolist() == [2, 3] and got.main[0] == "query"
    assert got.parts[0]["query"] == pytest.approx(1.0)


def test_look_alikes_weights_and_imputation() -> None:
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.96, 0.28]], np.float32)

    def search(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = np.atleast_2d(v) @ vectors.T
        o = np.argsort(-s, axis=1)[:, :k]
        return o, np.take_along_axis(s, o, axis=1)

    nb, w = text_neighbours(search, vectors[3:], n_trained=3, k=2)
    assert nb.tolist() == [[0, 1]]
    assert w.sum() == pytest.approx(0.96, abs=1e-5), "sum of weights = best cosine"
    look = LookAlikes(3, nb, w)
    assert look.impute(np.array([1.0, 0.0, 5.0], np.float32))[0] == pytest.approx(w[0, 0])


# ---- the real server, over each store backend ------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``shelfwise serve`` over the shop in a fresh store of each backend."""
    url = (f"sqlite:///{tmp_path / 'shop.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    store = open_store(url)
    fill_shop(store)
    train_bundle(interactions_from_store(store), tmp_path / "bundles")
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfwise", "serve", "--store", url, "--bundles",
         str(tmp_path / "bundles"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, 90, lambda: proc.stdout.read().decode()
                        if proc.stdout else "")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cold_start_over_the_real_server(served: str) -> None:
    """Attributes, an onboarding category and a posted item through ``shelfwise serve``:
    the group query and the user row read from SQLite and PostgreSQL alike."""
    with httpx.Client(base_url=served, timeout=30) as http:
        deadline = time.monotonic() + 30
        while not http.get("/health").json()["ready"]["attribute_groups"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        http.post("/v1/users", json={"users": [{"id": "new", "attributes": {"region": "south"}}]})
        body = http.get("/v1/users/new/feed", params={"n": 3, "diversity": 0}).json()
        assert set(ids(body)) == set(GARDEN)
        assert {why(body, i)["reason"] for i in ids(body)} == {"popular_with"}
        r = http.post("/v1/users/fan/onboarding", json={"categories": ["Games"]})
        assert r.status_code == 200, r.text
        body = http.get("/v1/users/fan/feed", params={"n": 2, "diversity": 0}).json()
        assert set(ids(body)) == set(GAMES)
        assert http.post("/v1/items", json={"items": [NEW_KNIFE]}).status_code == 200
        similar = http.get("/v1/items/k1/similar", params={"n": 3, "diversity": 0}).json()
        assert ids(similar)[0] == "k9" and why(similar, "k9")["reason"] == "new_arrival"
