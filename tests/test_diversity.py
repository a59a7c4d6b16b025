"""Diversity re-ranking: known answers for MMR, greedy DPP and calibration, caps, and the
``diversity`` knob on feed, search and similar items (0 = exactly the model's order)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shelfwise.config import ShelfwiseConfig
from shelfwise.evaluation import ILD, CategoryILD, ItemContext
from shelfwise.ranking.diversity import DiversityConfig, diversify, dpp, mmr, relevance
from shelfwise.services.stages import StagesConfig
from shelfwise.serving import create_app
from tests.helpers import build

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine

# A pool, best first: four near-copies of one direction, then two other directions.
VEC = np.array([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.98, 0.0, 0.1], [0.97, 0.1, 0.1],
                [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
SCORES = np.array([1.0, 0.95, 0.9, 0.85, 0.5, 0.4])
CATS = np.array([0, 0, 0, 0, 1, 2])


def _ild(order: np.ndarray) -> float:
    return ILD(len(order)).calc(order[None, :], [[]], context=ItemContext(vectors=VEC))


@pytest.mark.parametrize("method", ["mmr", "mmr_mean", "dpp", "calibrated"])
def test_knob_zero_is_the_pool_order_and_one_raises_ild(method: str) -> None:
    kw = {"vectors": VEC, "categories": CATS, "history_categories": np.array([0, 1, 2])}
    base = diversify(method, SCORES, 0.0, 3, **kw)  # type: ignore[arg-type]
    assert base.tolist() == [0, 1, 2]
    div = diversify(method, SCORES, 1.0, 3, **kw)  # type: ignore[arg-type]
    assert {4, 5} < set(div.tolist())  # one of each direction / category
    assert _ild(div) > _ild(base) + 0.5
    ctx = ItemContext(categories=CATS)
    assert CategoryILD(3).calc(div[None, :], [[]], context=ctx) == 1.0


def test_mmr_and_dpp_known_orders() -> None:
    rel = relevance(SCORES)
    # λ = 0.5: after item 0, items 1-3 are ~cos 0.99 to it, so item 4 wins:
    # 0.5·0.17 − 0 > 0.5·0.92 − 0.5·0.99
    assert mmr(rel, VEC, 0.5, 3).tolist() == [0, 4, 5]
    assert mmr(rel, VEC, 0.05, 3).tolist() == [0, 1, 2]  # a little diversity keeps the top
    assert dpp(rel, VEC, 0.9, 3).tolist()[0] == 0
    assert dpp(rel, VEC, 0.0, 6).tolist() == list(range(6))


def test_calibration_follows_the_history_mix() -> None:
    # history all category 0: the calibrated list stays in category 0 even at λ = 1
    out = diversify("calibrated", SCORES, 1.0, 3, categories=CATS,
                    history_categories=np.array([0, 0, 0]))
    assert sorted(out.tolist()) == [0, 1, 2]
    # a 2:1 history of categories 0 and 1 gets 2 + 1
    out = diversify("calibrated", SCORES, 0.9, 3, categories=CATS,
                    history_categories=np.array([0, 0, 1]))
    assert sorted(CATS[out].tolist()) == [0, 0, 1]


@pytest.mark.parametrize("method", ["mmr", "mmr_mean", "dpp", "calibrated"])
def test_caps_are_respected_at_any_knob(method: str) -> None:
    brands = np.array([0, 1, 0, 1, 0, 1])
    for lam in (0.0, 0.3, 1.0):
        out = diversify(method, SCORES, lam, 6, vectors=VEC, categories=CATS,  # type: ignore[arg-type]
                        history_categories=CATS, brands=brands, max_per_category=2,
                        max_per_brand=2)
        assert np.bincount(CATS[out]).max() <= 2 and np.bincount(brands[out]).max() <= 2
        assert len(set(out.tolist())) == len(out) == 4  # 2 brands x 2: the caps bind
    assert diversify("mmr", SCORES, 0.0, 4, categories=CATS, max_per_category=2).tolist() \
        == [0, 1, 4, 5]


# ---- the knob on the three surfaces --------------------------------------------------------
def _frame() -> pd.DataFrame:
    """Three categories of eight items; users walk within one category, some cross over."""
    rows, t = [], 0
    for u in range(30):
        cat = "abc"[u % 3]
        for j in range(5):
            rows.append((f"u{u}", f"{cat}{(u + j) % 8}", float(t)))
            t += 1
        if u % 5 == 0:
            rows.append((f"u{u}", f"{'abc'[(u + 1) % 3]}{u % 8}", float(t)))
            t += 1
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return build(_frame(), tmp_path_factory.mktemp("diversity"))


def _engine(shop: tuple[str, Path], **diversity: object) -> Engine:
    from shelfwise.services.engine import Engine  # after shelfwise.serving: an import cycle

    cfg = ShelfwiseConfig()
    cfg.storage.url, cfg.storage.bundles = shop
    cfg.serve.diversity = DiversityConfig(**diversity)
    return Engine(cfg)


def _lists(engine: Engine, knob: float | None) -> dict[str, list[str]]:
    return {
        "feed": [i.item_id for i in engine.feed("u0", 10, diversity=knob).items],
        "similar": [i.item_id for i in engine.similar("a1", 10, diversity=knob).items],
        "search": [i.item_id for i in engine.search("Item a", "u0", 10,
                                                    diversity=knob).items]}


@pytest.mark.parametrize("method", ["mmr", "mmr_mean", "dpp", "calibrated"])
def test_knob_zero_equals_todays_order_on_every_surface(shop: tuple[str, Path],
                                                        method: str) -> None:
    cfg = ShelfwiseConfig()
    cfg.storage.url, cfg.storage.bundles = shop
    cfg.serve.stages = StagesConfig(**{s: [x for x in getattr(StagesConfig(), s)
                                           if x != "diversity"]
                                       for s in ("feed", "similar", "search")})
    from shelfwise.services.engine import Engine

    today = _lists(Engine(cfg), None)
    assert all(len(v) == 10 for v in today.values())
    engine = _engine(shop, method=method, default=0.5)
    assert _lists(engine, 0.0) == today
    assert _lists(_engine(shop, method=method, default=0.0), None) == today
    varied = _lists(engine, 1.0)
    cats = {s: len({i[0] for i in v}) for s, v in varied.items()}
    base = {s: len({i[0] for i in v}) for s, v in today.items()}
    assert varied != today
    if method != "calibrated":  # calibration follows the history's mix, not the most categories
        assert all(cats[s] >= base[s] for s in cats)


def test_category_cap_on_the_feed(shop: tuple[str, Path]) -> None:
    engine = _engine(shop, max_per_category=2)
    for knob in (0.0, 0.5):
        items = [i.item_id for i in engine.feed("u0", 10, diversity=knob).items]
        assert max(pd.Series([i[0] for i in items]).value_counts()) <= 2


def test_http_knob_is_validated(shop: tuple[str, Path]) -> None:
    client = TestClient(create_app(*shop))
    for bad in (-0.1, 1.5):
        assert client.get("/v1/users/u0/feed", params={"diversity": bad}).status_code == 422
        assert client.get("/v1/items/a1/similar",
                          params={"diversity": bad}).status_code == 422
        assert client.post("/v1/search", json={"query": "Item", "diversity": bad}
                           ).status_code == 422
    ok = client.get("/v1/users/u0/feed", params={"diversity": 0.7, "n": 5})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 5
    assert client.get("/v1/items/a1/similar", params={"diversity": 1}).status_code == 200
    assert client.post("/v1/search", json={"query": "Item", "diversity": 0.3}
                       ).status_code == 200
