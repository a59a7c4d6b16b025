"""Feed exploration slots over HTTP: placement, logged propensities, learning, restart."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shelfwise.data.schemas import EventType
from shelfwise.exceptions import ConfigError
from shelfwise.services.exploration import ExplorationConfig, FeedExplorer, slot_positions
from shelfwise.serving import create_app
from tests.conftest import two_group_frame
from tests.helpers import build

FAST = ExplorationConfig(refit_seconds=0.0)


@pytest.fixture
def shop(tmp_path: Path) -> tuple[str, Path]:
    return build(two_group_frame(), tmp_path)


@pytest.mark.parametrize(("n", "slots", "want"), [
    (10, 0, []), (10, 1, [5]), (10, 2, [3, 7]), (10, 3, [2, 5, 8]), (3, 3, [0, 1, 2]),
    (2, 5, [0, 1]), (4, 3, [1, 2, 3]),
])
def test_slot_positions(n: int, slots: int, want: list[int]) -> None:
    got = slot_positions(n, slots)
    assert got == want
    assert len(set(got)) == len(got) == min(n, slots)


def test_exploration_slots_are_logged_with_their_propensities(shop: tuple[str, Path]) -> None:
    client = TestClient(create_app(*shop, FAST))
    body = client.get("/v1/users/mix/feed", params={"n": 4, "explore": 2}).json()
    items = body["items"]
    ids = [it["item_id"] for it in items]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert not {"a1", "b1"} & set(ids)  # seen items stay out of exploration slots too
    explored = [(pos, it) for pos, it in enumerate(items)
                if it["explanation"]["source"].startswith("explore:")]
    assert [pos for pos, _ in explored] == slot_positions(4, 2)
    assert all(0 < it["propensity"] <= 1 for _, it in explored)
    assert all(it["propensity"] is None for it in items
               if not it["explanation"]["source"].startswith("exp"))
    assert all(it["explanation"]["reason"] == "explore" for _, it in explored)
    store = client.app.state.store  # type: ignore[attr-defined]
    logged = [e for e in store.events_of_type(EventType.IMPRESSION) if e.context.get("explore")]
    assert {(e.position, e.item_id, e.propensity) for e in logged} == {
        (pos, it["item_id"], it["propensity"]) for pos, it in explored}
    assert {e.request_id for e in logged} == {body["request_id"]}
    assert all(len(e.context["x"]) == 19 and e.context["source"] in
               {"cooccurrence", "semantic", "popularity"} for e in logged)


def test_an_explored_feed_scores_each_generator_once(shop: tuple[str, Path]) -> None:
    client = TestClient(create_app(*shop, FAST))
    engine = client.app.state.engine  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60  # the warm-up thread reads popularity for search
    while not all(engine.ready.values()):
        assert time.monotonic() < deadline, engine.ready
        time.sleep(0.05)
    rec = client.app.state.recommender  # type: ignore[attr-defined]
    calls: dict[str, int] = {}
    for name, gen in rec.bundle.generators.items():
        def counted(histories: object, _score: object = gen.score, _name: str = name
                    ) -> object:
            calls[_name] = calls.get(_name, 0) + 1
            return _score(histories)  # type: ignore[operator]
        gen.score = counted
    plain = client.get("/v1/users/mix/feed", params={"n": 4}).json()["items"]
    calls.clear()
    body = client.get("/v1/users/mix/feed", params={"n": 4, "explore": 2}).json()
    assert len(body["items"]) == 4
    assert calls == {}, "the plain request's scores are reused for the same history"
    client.post("/v1/events", json={"events": [{"type": "view", "user_id": "mix",
                                                "item_id": plain[0]["item_id"]}]})
    client.get("/v1/users/mix/feed", params={"n": 4, "explore": 2})
    assert calls and set(calls.values()) == {1}, calls  # a new history: each scored once


def test_no_exploration_unless_asked(shop: tuple[str, Path]) -> None:
    client = TestClient(create_app(*shop))
    items = client.get("/v1/users/u0/feed", params={"n": 3}).json()["items"]
    assert items and not any(it["explanation"]["source"].startswith("explore:") for it in items)
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.events_of_type(EventType.IMPRESSION) == []


def test_bad_sources_are_refused(shop: tuple[str, Path]) -> None:
    with pytest.raises(ConfigError, match="ease"):
        create_app(*shop, ExplorationConfig(sources=["ease"]))


def popularity_probability(explorer: FeedExplorer, user: str) -> float:
    explorer.refit(force=True)
    x, _ = explorer._context(user)
    probs = explorer.policy.action_probabilities([x])[0]
    return float(probs[explorer.sources.index("popularity")])


def test_bandit_learns_the_source_that_pays_and_survives_a_restart(
        shop: tuple[str, Path]) -> None:
    """Shoppers only ever click what the popularity source brought: the bandit must learn to
    give that source the slot, and a new server on the same store must know it too."""
    client = TestClient(create_app(*shop, FAST))
    users = [f"u{k}" for k in range(12)] + ["mix"]
    shown = 0
    for round_ in range(8):
        for user in users:
            body = client.get(f"/v1/users/{user}/feed", params={"n": 2, "explore": 1}).json()
            for it in body["items"]:
                if it["explanation"]["source"] == "explore:popularity":
                    r = client.post("/v1/events", json={"events": [{
                        "id": f"c{round_}-{user}", "type": "click", "user_id": user,
                        "item_id": it["item_id"], "request_id": body["request_id"]}]})
                    assert r.status_code == 200, r.text
                shown += it["explanation"]["source"].startswith("explore:")
    explorer = client.app.state.explorer  # type: ignore[attr-defined]
    assert explorer.n_logged_ == shown > 0
    assert explorer.log.arrays()[2].sum() > 0
    eps, arms = 0.2, len(explorer.sources)
    learned = popularity_probability(explorer, "u3")
    assert learned == pytest.approx(1 - eps + eps / arms)

    restarted = TestClient(create_app(*shop, FAST)).app.state.explorer  # type: ignore[attr-defined]
    assert popularity_probability(restarted, "u3") == pytest.approx(learned)
    assert restarted.n_logged_ == shown
    assert np.array_equal(restarted.log.arrays()[2], explorer.log.arrays()[2])
