"""Cart completion: POST /v1/cart/recommend through the real app, and the scorer's signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.popular import Popularity
from shelfwise.services.cart import CartScorer
from shelfwise.serving import create_app
from tests.helpers import build


def basket_frame() -> pd.DataFrame:
    """bread+butter, chips+salsa and tea+honey always go together; milk is bought alone by
    many (the most popular item); ``tea_fan`` has only ever bought tea."""
    rows: list[tuple[str, str]] = []
    for u in range(6):
        rows += [(f"p{u}", "bread"), (f"p{u}", "butter")]
        rows += [(f"q{u}", "chips"), (f"q{u}", "salsa")]
    for u in range(4):
        rows += [(f"t{u}", "tea"), (f"t{u}", "honey")]
    rows += [(f"m{u}", "milk") for u in range(10)]
    rows += [("tea_fan", "tea")]
    return pd.DataFrame([(u, i, float(t)) for t, (u, i) in enumerate(rows)],
                        columns=["user_id", "item_id", "timestamp"])


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    url, bundles = build(basket_frame(), tmp_path)
    return TestClient(create_app(url, bundles))


def _ask(client: TestClient, items: list[str], **extra: object) -> dict[str, object]:
    r = client.post("/v1/cart/recommend", json={"items": items, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def _ids(body: dict[str, object]) -> list[str]:
    items = body["items"]
    assert isinstance(items, list)
    return [i["item_id"] for i in items]


def test_items_bought_together_come_back_with_the_reason(client: TestClient) -> None:
    body = _ask(client, ["bread"], n=3)
    assert body["request_id"] and body["model_version"] and body["cold_start"] is False
    assert body["cart"] == ["bread"] and body["unscored_items"] == []
    items = body["items"]
    assert isinstance(items, list)
    top = items[0]
    assert top["item_id"] == "butter" and top["explanation"]["reason"] == "bought_with"
    assert top["explanation"]["related_item"] == "bread"
    assert top["explanation"]["text"] == "Often bought with Item bread"
    assert top["title"] == "Item butter"
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_the_reason_names_the_cart_item_that_contributed_most(client: TestClient) -> None:
    body = _ask(client, ["bread", "chips"], n=4)
    items = body["items"]
    assert isinstance(items, list)
    assert {i["item_id"] for i in items[:2]} == {"butter", "salsa"}
    why = {i["item_id"]: i["explanation"]["related_item"] for i in items[:2]}
    assert why == {"butter": "bread", "salsa": "chips"}
    # the last-added cart item counts most
    assert _ids(body)[0] == "salsa"


def test_cart_items_are_never_returned(client: TestClient) -> None:
    cart = ["bread", "butter", "chips"]
    body = _ask(client, cart, n=100)
    ids = _ids(body)
    assert not set(cart) & set(ids)
    assert ids[0] == "salsa"
    assert len(ids) == len(set(ids)) == 7 - len(cart)  # every other catalog item, once


def test_unknown_item_ids_are_a_clear_error(client: TestClient) -> None:
    r = client.post("/v1/cart/recommend", json={"items": ["bread", "nope", "nada"]})
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "'nope'" in detail and "'nada'" in detail and "'bread'" not in detail
    assert "/v1/items" in detail
    r = client.post("/v1/cart/recommend", json={"items": ["bread", "bread"]})
    assert r.status_code == 422 and "'bread' appears twice" in r.text
    r = client.post("/v1/cart/recommend", json={"items": ["bread"], "n": 0})
    assert r.status_code == 422 and "n" in r.text
    r = client.post("/v1/cart/recommend", json={"item": ["bread"]})
    assert r.status_code == 422


def test_anonymous_and_empty_carts(client: TestClient) -> None:
    body = _ask(client, ["tea"], n=2)
    assert body["user_id"] is None and body["personalized"] is False
    assert _ids(body)[0] == "honey"
    assert body["sources"] == ["cooccurrence", "popularity"]
    empty = _ask(client, [], n=3)
    assert empty["cold_start"] is True and empty["sources"] == ["popularity"]
    assert _ids(empty)[0] == "milk"
    items = empty["items"]
    assert isinstance(items, list) and items[0]["explanation"]["reason"] == "popular_in"


def test_the_users_history_is_an_extra_signal(client: TestClient) -> None:
    anonymous = _ids(_ask(client, ["bread"], n=3))
    assert anonymous[:2] == ["butter", "milk"]
    body = _ask(client, ["bread"], user_id="tea_fan", n=3)
    assert body["personalized"] is True and "user_cooccurrence" in body["sources"]
    assert _ids(body)[:2] == ["butter", "honey"], "honey goes with the user's tea"
    items = body["items"]
    assert isinstance(items, list) and items[1]["explanation"]["reason"] == "similar_to"
    assert items[1]["explanation"]["parts"] == {"user_cooccurrence": items[1]["score"]}
    # an unknown user is simply anonymous
    stranger = _ask(client, ["bread"], user_id="stranger", n=3)
    assert stranger["personalized"] is False and _ids(stranger) == anonymous


def test_unavailable_and_new_items(client: TestClient) -> None:
    r = client.post("/v1/items", json={"items": [
        {"id": "butter", "title": "Item butter", "available": False, "category": ["B"]},
        {"id": "jam", "title": "Strawberry jam", "category": ["J"]},
        {"id": "blank", "title": ""}]})
    assert r.status_code == 200
    body = _ask(client, ["bread", "jam", "blank"], n=10)
    ids = _ids(body)
    assert "butter" not in ids, "unavailable items are never recommended"
    assert "jam" not in ids and "blank" not in ids, "cart items are never recommended"
    # a posted item with text reads as its look-alikes; one without text gives no signal
    assert body["cart"] == ["bread", "jam"] and body["unscored_items"] == ["blank"]


def test_cart_weights_come_from_the_serve_config(tmp_path: Path) -> None:
    from shelfwise.config import load_config

    url, bundles = build(basket_frame(), tmp_path)
    path = tmp_path / "shelfwise.toml"
    path.write_text("[serve.cart]\npopularity = 0.0\nuser_cooccurrence = 0.0\n")
    cfg = load_config(path, env={}).config
    assert cfg.serve.cart.popularity == 0.0
    client = TestClient(create_app(url, bundles, config=cfg))
    body = _ask(client, ["bread"], user_id="tea_fan", n=3)
    assert body["sources"] == ["cooccurrence"] and body["personalized"] is False
    path.write_text("[serve.cart]\npopularty = 1.0\n")
    with pytest.raises(ConfigError, match=r"serve\.cart\.popularty = 1\.0: unknown key; "
                       r"allowed here: .*popularity"):
        load_config(path, env={})


def test_a_sequential_generator_is_found_by_name_and_used() -> None:
    """x is followed by y, and z by x: co-occurrence ties y and z for the cart [x]; a
    next-item model (here first-order transitions, under the bundle name ``sasrec``) puts y
    first."""
    rows = []
    for u in range(6):
        rows += [(f"a{u}", "x"), (f"a{u}", "y"), (f"b{u}", "z"), (f"b{u}", "x")]
    rows += [(f"c{u}", "w") for u in range(3)]
    frame = pd.DataFrame([(u, i, float(t)) for t, (u, i) in enumerate(rows)],
                         columns=["user_id", "item_id", "timestamp"])
    data = Interactions.from_frame(frame)
    cooc = Cooccurrence(popularity_tiebreak=False).fit(data)
    nxt = Cooccurrence(window=1, directed=True, normalization="none",
                       popularity_tiebreak=False).fit(data)
    pop = Popularity().fit(data)
    x, y, z = (data.items.index(e) for e in ("x", "y", "z"))
    cart = np.array([x])

    plain = CartScorer.from_generators({"cooccurrence": cooc, "popularity": pop})
    assert plain.sequential is None and "sequential" not in plain.signals
    s = plain.score(cart)
    assert s.total[y] == pytest.approx(s.total[z], rel=1e-4)

    scorer = CartScorer.from_generators({"cooccurrence": cooc, "popularity": pop,
                                         "sasrec": nxt})
    assert scorer.sequential_name == "sasrec" and "sequential" in scorer.signals
    s = scorer.score(cart)
    assert s.total[y] > s.total[z] > s.total[data.items.index("w")]
    candidates = np.ones(data.n_items, dtype=bool)
    candidates[x] = False
    top = scorer.top(s, 2, candidates)
    assert [t[0] for t in top] == [y, z]
    assert top[0][2] in {"cooccurrence", "sequential"} and top[0][3] == x
    # no co-occurrence at all: the sequential model alone still answers
    alone = CartScorer(cooccurrence=None, popularity=pop, sequential=nxt,
                       sequential_name="sasrec")
    assert alone.top(alone.score(cart), 1, candidates)[0][0] == y
    with pytest.raises(ConfigError, match="cold-start"):
        CartScorer.from_generators({"cooccurrence": cooc})


def test_a_bundle_with_sasrec_feeds_the_cart(tmp_path: Path) -> None:
    """With the real SASRec generator in the bundle, the cart answer uses it (and the
    co-occurrence known answer still holds, since its weight dominates)."""
    pytest.importorskip("shelfwise.retrieval.sasrec")
    from shelfwise.bundle import GeneratorSpec, TrainConfig, train_bundle
    from shelfwise.data.loading import interactions_from_store
    from tests.helpers import store_from_frame

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = store_from_frame(basket_frame(), url)
    config = TrainConfig(generators=[
        GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
        GeneratorSpec(name="popularity", weight=0.05),
        GeneratorSpec(name="sasrec", weight=0.0,
                      params={"epochs": 2, "hidden": 8, "heads": 1, "layers": 1}),
    ], tune_weights=False)
    train_bundle(interactions_from_store(store), tmp_path / "bundles", config)
    store.close()
    client = TestClient(create_app(url, tmp_path / "bundles"))
    body = _ask(client, ["bread"], n=4)
    assert "sequential" in body["sources"]
    ids = _ids(body)
    assert ids[0] == "butter" and "bread" not in ids
