"""The dashboard over a real store and bundle (in-process app): access, every page in both
languages, the numbers behind its plots, and that looking at a shopper logs nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shelfwise.apikeys import Scope, create_key
from shelfwise.config import ShelfwiseConfig
from shelfwise.dashboard.views import _quantile, _read_results
from shelfwise.serving.app import create_app
from tests.conftest import two_group_frame
from tests.helpers import build

PAGES = ["/dashboard", "/dashboard/shopper?user=u0", "/dashboard/item?item=a1",
         "/dashboard/search?q=laptop&user=u0", "/dashboard/experiments",
         "/dashboard/promotions?candidate=egreedy", "/dashboard/evaluation"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("dash")
    url, bundles = build(two_group_frame(), tmp)
    (tmp / "evaluation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"model": "popularity", "dataset": "demo", "split": "leave-last-out",
         "metric": "HR@10", "k": 10, "value": 0.0107},
        {"model": "feed", "dataset": "demo", "split": "leave-last-out", "metric": "HR@10",
         "k": 10, "value": 0.0713}]))
    return url, bundles


def _client(shop: tuple[str, Path], **serve: object) -> TestClient:
    url, bundles = shop
    cfg = ShelfwiseConfig.model_validate({"storage": {"url": url, "bundles": str(bundles)},
                                          "serve": serve})
    return TestClient(create_app(config=cfg))


@pytest.fixture
def client(shop: tuple[str, Path]) -> Iterator[TestClient]:
    with _client(shop) as c:
        yield c


def test_every_page_answers_in_both_languages(client: TestClient) -> None:
    client.get("/v1/users/u0/feed")  # a request for the latency table
    for lang, word in (("en", "Overview"), ("zh", "总览")):
        for page in PAGES:
            r = client.get(page, params={"lang": lang})
            assert r.status_code == 200, (page, r.text[:500])
            assert word in r.text and "Traceback" not in r.text
            assert f'lang="{"zh-CN" if lang == "zh" else "en"}"' in r.text
    assert client.cookies.get("shelfwise_lang") == "zh"  # the choice is kept


def test_overview_counts_and_plots_what_the_store_holds(client: TestClient) -> None:
    now = datetime.now(UTC)
    client.post("/v1/events", json={"events": [
        {"type": "click", "user_id": "u0", "item_id": "a1", "timestamp": now.isoformat()},
        {"type": "view", "user_id": "u0", "item_id": "a2",
         "timestamp": (now - timedelta(days=2)).isoformat()},
        {"type": "view", "user_id": "u1", "item_id": "a2",
         "timestamp": (now - timedelta(days=2)).isoformat()}]})
    state = client.app.state.dashboard  # type: ignore[attr-defined]
    state.activity.update(full=True)
    html = client.get("/dashboard", params={"lang": "en"}).text
    counts = client.app.state.engine.store.counts()  # type: ignore[attr-defined]
    assert f"<b>{counts['events']:,}</b>" in html
    figures = [json.loads(f) for f in re.findall(r"data-figure='([^']*)'", html)]
    events = next(f for f in figures if any(s.get("name") == "click" for s in f["data"]))
    series = {s["name"]: s for s in events["data"]}
    # the last year of days, every day on the axis; the 2024 purchases fall outside it
    assert "purchase" not in series and len(series["view"]["x"]) == 3
    assert series["view"]["y"] == [2, 0, 0] and series["click"]["y"] == [0, 0, 1]
    users = next(f for f in figures if f["data"][0].get("name") == "Users")
    assert users["data"][0]["y"][-1] == len(set(two_group_frame()["user_id"]))


def test_looking_at_a_shopper_logs_nothing_and_shows_reasons(client: TestClient) -> None:
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    before = store.counts()["events"]
    html = client.get("/dashboard/shopper", params={"user": "u0", "lang": "en"}).text
    items = re.findall(r'<li data-item="([^"]+)">', html)
    reasons = re.findall(r'<div class="why" data-reason="[^"]+">([^<]+)</div>', html)
    assert items and len(reasons) == len(items) and all(r.strip() for r in reasons)
    client.app.state.engine.impressions.flush()  # type: ignore[attr-defined]
    assert store.counts()["events"] == before  # no impressions, no exposure
    varied = client.get("/dashboard/shopper/feed", params={"user": "u0", "diversity": 1})
    assert varied.status_code == 200 and 'data-diversity="1.0"' in varied.text


def test_what_changed_after_the_last_event(client: TestClient) -> None:
    client.post("/v1/events", json={"events": [
        {"type": "purchase", "user_id": "newbie", "item_id": "b1"},
        {"type": "purchase", "user_id": "newbie", "item_id": "a2"},
        {"type": "purchase", "user_id": "newbie", "item_id": "a1"}]})
    html = client.get("/dashboard/shopper", params={"user": "newbie", "lang": "en"}).text
    assert "What changed after the last event" in html
    left = html[html.index('class="changed-out"'):]
    left = left[:left.index("</ul>")]
    assert 'item=a1"' in left  # bought now, so no longer recommended
    feed = html[html.index('id="feed"'):]
    assert 'data-item="a1"' not in feed


def test_unknown_item_and_bad_input_get_a_page_not_a_500(client: TestClient) -> None:
    r = client.get("/dashboard/item", params={"item": "no-such-item", "lang": "en"})
    assert r.status_code == 404 and "Not found: no-such-item" in r.text
    assert client.get("/dashboard/shopper", params={"diversity": 3}).status_code == 422
    bad = client.post("/dashboard/experiments", content="spec=%7Bnot+json",
                      headers={"content-type": "application/x-www-form-urlencoded"},
                      follow_redirects=True)
    assert bad.status_code == 200 and 'class="error"' in bad.text


def test_an_experiment_started_on_the_page_runs_in_the_api(client: TestClient) -> None:
    spec = {"id": "page-exp", "surfaces": ["feed"], "variants": [
        {"name": "control", "share": 0.5},
        {"name": "varied", "share": 0.5, "overrides": {"diversity": 0.6}}]}
    r = client.post("/dashboard/experiments", data={"spec": json.dumps(spec)},
                    follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/v1/experiments/page-exp").json()["status"] == "draft"
    client.post("/dashboard/experiments/page-exp/start")
    assert client.get("/v1/experiments/page-exp").json()["status"] == "running"
    for k in range(8):  # every user clicks one of ten: no spread in CTR between users
        feed = client.get(f"/v1/users/u{k}/feed", params={"n": 10}).json()
        client.post("/v1/events", json={"events": [{
            "type": "click", "user_id": f"u{k}", "item_id": feed["items"][0]["item_id"],
            "request_id": feed["request_id"]}]})
    assert client.get("/v1/experiments/page-exp/report").status_code == 200
    html = client.get("/dashboard/experiments", params={"lang": "en"}).text
    assert "Verdict:" in html and 'id="exp-page-exp"' in html
    client.post("/dashboard/experiments/page-exp/stop")
    assert client.get("/v1/experiments/page-exp").json()["status"] == "stopped"


def test_without_the_admin_key_the_dashboard_is_refused(tmp_path: Path) -> None:
    with _client(build(two_group_frame(), tmp_path), auth={"cache_seconds": 0}) as c:
        # its own shop: the keys made here would lock the other tests out of the shared one
        store = c.app.state.engine.store  # type: ignore[attr-defined]
        _, admin = create_key(store, Scope.ADMIN, "dashboard")
        _, read = create_key(store, Scope.READ, "storefront")
        for page in PAGES:
            r = c.get(page)
            assert r.status_code == 401 and 'name="key"' in r.text, page
        assert c.get("/dashboard", headers={"Authorization": f"Bearer {read}"}
                     ).status_code == 403  # a read key is not enough
        wrong = c.post("/dashboard/login", data={"key": read})
        assert wrong.status_code == 403 and "shelfwise_dashboard" not in c.cookies
        ok = c.post("/dashboard/login", data={"key": admin, "next": "//evil.example"},
                    follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
        assert "httponly" in ok.headers["set-cookie"].lower()
        assert "samesite=strict" in ok.headers["set-cookie"].lower()
        assert c.get("/dashboard").status_code == 200  # the cookie now
        assert c.get("/dashboard/static/plotly.min.js").status_code == 200  # public asset
        c.post("/dashboard/logout")
        assert c.get("/dashboard").status_code == 401


def test_evaluation_page_reads_records_curves_and_cold_slices(tmp_path: Path) -> None:
    (tmp_path / "div.json").write_text(json.dumps({"dataset": "games", "rows": [
        {"method": "mmr", "knob": 0.0, "NDCG@10": 0.06, "ILD@10": 0.6},
        {"method": "mmr", "knob": 0.5, "NDCG@10": 0.059, "ILD@10": 0.7}]}))
    (tmp_path / "cold.json").write_text(json.dumps({
        "dataset": {"name": "games"}, "slices": {"all": 10, "cold_items": 2},
        "before": {"pop": {"all": {"HR@10": 0.01}, "cold_items": {"HR@10": 0.0}}},
        "after": {"pipeline": {"all": {"HR@10": 0.13}, "cold_items": {"HR@10": 0.05}}}}))
    records, curves, slices = _read_results(tmp_path / "div.json")
    assert not records and curves["games"]["mmr"][0] == [0.6, 0.7]
    _, _, slices = _read_results(tmp_path / "cold.json")
    assert {(s["model"], s["slice"], s["HR@10"]) for s in slices} == {
        ("pop", "all", 0.01), ("pop", "cold_items", 0.0), ("pipeline (after)", "all", 0.13),
        ("pipeline (after)", "cold_items", 0.05)}


def test_latency_quantiles_interpolate_the_histogram() -> None:
    buckets = [(0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == 10.0
    assert _quantile(buckets, 0.75) == 55.0
    assert _quantile([], 0.5) is None


def test_item_page_plots_its_daily_counts_and_rates(client: TestClient) -> None:
    now = datetime.now(UTC).isoformat()
    assert client.post("/v1/items", json={"items": [
        {"id": "fresh", "title": "Fresh cast iron skillet"}]}).status_code == 200
    client.post("/v1/events", json={"events": [
        {"type": "impression", "user_id": "u0", "item_id": "fresh", "request_id": "r1",
         "timestamp": now},
        {"type": "impression", "user_id": "u1", "item_id": "fresh", "request_id": "r2",
         "timestamp": now},
        {"type": "click", "user_id": "u0", "item_id": "fresh", "request_id": "r1",
         "timestamp": now},
        {"type": "purchase", "user_id": "u0", "item_id": "fresh", "timestamp": now}]})
    html = client.get("/dashboard/item", params={"item": "fresh", "lang": "en"}).text
    figures = {f["data"][-1]["name"]: f for f in
               (json.loads(x) for x in re.findall(r"data-figure='([^']*)'", html))}
    rates = next(f for f in figures.values() if f["layout"]["yaxis"].get("tickformat"))
    ctr = next(s for s in rates["data"] if s["name"] == "CTR")
    conversion = next(s for s in rates["data"] if s["name"] == "Conversion")
    assert ctr["y"][-1] == 0.5 and conversion["y"][-1] == 0.5  # 1 of 2 shown
    assert "50.00%" in html  # the CTR tile


def test_the_overview_counts_only_once_someone_looks(shop: tuple[str, Path]) -> None:
    """A server counts the shop's activity from the first look at the overview on, not at
    start, where the full count competed with the first shoppers' requests."""
    with _client(shop) as c:
        activity = c.app.state.dashboard.activity  # type: ignore[attr-defined]
        assert c.get("/v1/users/u0/feed").status_code == 200
        assert activity._thread is None and activity._updated_at == -float("inf")
        assert c.get("/dashboard", params={"lang": "en"}).status_code == 200
        assert activity._thread is not None and activity._thread.is_alive()
    assert activity._thread is None, "stopped with the server"
    activity.snapshot()
    assert activity._thread is None, "and not restarted by a late look"
    outside = _client(shop)  # an app used without its lifespan (no server around it)
    assert outside.get("/dashboard", params={"lang": "en"}).status_code == 200
    assert outside.app.state.dashboard.activity._thread is None, (  # type: ignore[attr-defined]
        "counted on the request, no thread left behind")
