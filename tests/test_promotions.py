"""Promotions over HTTP: eligibility, logged propensities, and learning from redemptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shelfwise.data.schemas import EventType
from shelfwise.serving import create_app
from tests.conftest import two_group_frame
from tests.helpers import build

NOW = datetime.now(UTC)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    url, bundles = build(two_group_frame(), tmp_path)
    app = create_app(url, bundles)
    app.state.promotions.refit_seconds = 0.0
    return TestClient(app)


def post_promotions(client: TestClient, promos: list[dict[str, object]]) -> None:
    r = client.post("/v1/promotions", json={"promotions": promos})
    assert r.status_code == 200, r.text


def test_eligibility_rules_and_logged_propensities(client: TestClient) -> None:
    post_promotions(client, [
        {"id": "welcome", "text": "10% off your first order", "rules": {"new_users_only": True}},
        {"id": "loyal", "text": "Free shipping for regulars", "rules": {"min_history": 2}},
        {"id": "old", "text": "Summer sale", "end": (NOW - timedelta(days=1)).isoformat()},
        {"id": "later", "text": "Winter sale", "start": (NOW + timedelta(days=1)).isoformat()},
    ])
    new = client.post("/v1/users/stranger/promotions", json={}).json()
    assert [p["promotion_id"] for p in new["promotions"]] == ["welcome"]
    assert new["promotions"][0]["propensity"] == 1.0
    regular = client.post("/v1/users/u0/promotions", json={"n": 3}).json()
    assert [p["promotion_id"] for p in regular["promotions"]] == ["loyal"]
    store = client.app.state.store  # type: ignore[attr-defined]
    shown = store.events_of_type(EventType.PROMOTION_SHOWN)
    assert {e.request_id for e in shown} == {new["request_id"], regular["request_id"]}
    assert all(0 < e.propensity <= 1 for e in shown)
    assert all(len(e.context["x"]) == 19 for e in shown)


def test_policy_learns_who_redeems_what(client: TestClient) -> None:
    post_promotions(client, [{"id": "A", "text": "Points on your next game"},
                             {"id": "B", "text": "Starter bundle discount"}])
    users = [f"u{k}" for k in range(12)] + [f"new{k}" for k in range(12)]
    for _round in range(12):
        for user in users:
            body = client.post(f"/v1/users/{user}/promotions", json={}).json()
            (choice,) = body["promotions"]
            wanted = "B" if user.startswith("new") else "A"
            assert 0 < choice["propensity"] <= 1
            if choice["promotion_id"] == wanted:
                r = client.post("/v1/events", json={"events": [{
                    "id": f"r-{body['request_id']}", "type": "promotion_redeemed",
                    "user_id": user, "request_id": body["request_id"],
                    "context": {"promotion_id": wanted}}]})
                assert r.status_code == 200
    service = client.app.state.promotions  # type: ignore[attr-defined]
    service.refit(force=True)
    assert service.n_logged_ == 12 * len(users)
    picks = {}
    for user in ("u3", "new3"):
        x, _ = service.context(user)
        scores = service.policy.action_probabilities([x], [[service.arms.index("A"),
                                                            service.arms.index("B")]])[0]
        picks[user] = "A" if scores[service.arms.index("A")] > scores[service.arms.index(
            "B")] else "B"
    assert picks == {"u3": "A", "new3": "B"}
