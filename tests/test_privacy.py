"""Forgetting a user (every table, every cache, the bundle, other workers), retention, and
pseudonymized user ids, over real stores (SQLite files, PostgreSQL) and trained bundles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import shelfwise
from shelfwise.bundle import load_bundle, train_bundle
from shelfwise.cli.main import app as cli
from shelfwise.config import ShelfwiseConfig, load_config
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event
from shelfwise.exceptions import ConfigError, InvalidRequestError
from shelfwise.privacy.pseudonym import Pseudonymizer
from shelfwise.services.decisions import DecisionLog
from shelfwise.serving import create_app
from shelfwise.storage import open_store
from tests.conftest import two_group_frame
from tests.helpers import store_from_frame
from tests.pg import PgCluster
from tests.store_contract import rows_naming

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine

GONE = "cust-u0-x"
"""The shopper who asks to be forgotten (no other id contains this text)."""
SECRET = "s3cret-key-for-tests-only"


def shop_frame() -> pd.DataFrame:
    frame = two_group_frame()
    frame["user_id"] = "cust-" + frame["user_id"] + "-x"
    return frame


def make_shop(tmp: Path, url: str) -> Path:
    """A store at ``url`` with the shop's purchases, and a bundle trained on it."""
    store = store_from_frame(shop_frame(), url)
    train_bundle(interactions_from_store(store), tmp / "bundles")
    store.close()
    return tmp / "bundles"


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").new_database()
    return url, make_shop(tmp_path, url)


def config(url: str, **sections: dict[str, Any]) -> ShelfwiseConfig:
    """Impressions stay queued (a long flush delay), histories are cached, and tombstones are
    read on every request."""
    raw: dict[str, Any] = {"storage": {"url": url},
                           "serve": {"impressions": {"flush_seconds": 60},
                                     "limits": {"user_cache": 1000}},
                           "privacy": {"sync_seconds": 0}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return ShelfwiseConfig.model_validate(raw)


def held(engine: Engine, user: str) -> dict[str, int]:
    """What the engine holds in memory about the stored id ``user``, per cache."""
    return {"histories": int(user in engine.recommender._cache),
            "queued_impressions": sum(row[2] == user for row in engine.impressions._queue),
            "exploration_decisions": engine.explorer.log._user.count(user),
            "promotion_decisions": engine.promotion_service.log._user.count(user),
            "queued_exposures": sum(u == user for _, u in engine.experiments._seen)}


def leave_traces(client: TestClient, engine: Engine, user: str, *, session: str = "s1") -> None:
    """Everything a shopper leaves: a user row, events of each type, searches, impressions
    (stored and queued), exploration and promotion decisions, cached histories."""
    c = client
    assert c.post("/v1/users", json={"users": [{"id": user, "attributes": {"tier": "gold"}}]}
                  ).status_code == 200
    c.post("/v1/promotions", json={"promotions": [{"id": "p1", "text": "10% off"}]})
    if not c.get("/v1/experiments").json():  # an A/A test: the user's exposure is stored
        c.post("/v1/experiments", json={"id": "aa", "variants": [
            {"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}]})
        c.post("/v1/experiments/aa/start")
    feed = c.get(f"/v1/users/{user}/feed", params={"n": 3, "explore": 2}).json()
    assert feed["experiments"]["aa"] in ("A", "B")
    assert c.post("/v1/search", json={"query": "gaming", "user_id": user}).status_code == 200
    engine.impressions.flush()  # these lists and the search are stored, later ones queued
    engine.experiments.flush()
    promo = c.post(f"/v1/users/{user}/promotions", json={"n": 1}).json()
    assert promo["promotions"], promo
    c.get("/v1/items/a1/similar", params={"user_id": user, "session_id": session})
    c.post("/v1/cart/recommend", json={"items": ["a1"], "user_id": user})
    item, rid = feed["items"][0]["item_id"], feed["request_id"]
    r = c.post("/v1/events", json={"events": [
        {"type": t, "user_id": user, "item_id": item, "request_id": rid}
        for t in ("view", "click", "cart", "purchase")] + [
        {"type": "promotion_redeemed", "user_id": user, "request_id": promo["request_id"],
         "context": {"promotion_id": "p1"}}]})
    assert r.json()["accepted"] == 5
    assert c.get(f"/v1/users/{user}/profile").json()["history_length"] > 0


def database_bytes(url: str) -> bytes:
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"))
                    if p.exists())


# ---- forgetting a user ---------------------------------------------------------------------
def test_forget_user_leaves_no_row_no_cache_and_a_cold_start(shop: tuple[str, Path]) -> None:
    url, bundles = shop
    app = create_app(config=config(url), bundle_path=bundles)
    engine: Engine = app.state.engine
    with TestClient(app) as client:
        leave_traces(client, engine, "cust-u1-x")
        leave_traces(client, engine, GONE)
        stored = rows_naming(engine.store, GONE)
        assert stored["users"] == 1 and stored["events"] >= 12
        assert all(held(engine, GONE).values()), held(engine, GONE)
        other_before = rows_naming(engine.store, "cust-u1-x")

        r = client.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == GONE
        assert body["rows"] == {"events": stored["events"], "users": 1, "exposures": 1}
        assert set(body["events"]) == {"view", "click", "cart", "purchase", "search",
                                       "impression", "promotion_shown", "promotion_redeemed"}
        assert sum(body["events"].values()) == stored["events"]
        assert all(n > 0 for n in body["memory"].values()), body["memory"]
        assert set(body["memory"]) == set(held(engine, GONE))

        assert held(engine, GONE) == dict.fromkeys(held(engine, GONE), 0)
        assert len(engine.recommender._scored) == 0, "no score memo of their history survives"
        engine.impressions.flush()
        assert rows_naming(engine.store, GONE) == {}, "every table of the store"
        if url.startswith("sqlite"):
            assert GONE.encode() not in database_bytes(url), "nor freed pages or the WAL"
        assert rows_naming(engine.store, "cust-u1-x") == other_before, "others untouched"

        late = client.post("/v1/events", json={"events": [  # a redelivery from before
            {"id": "late-1", "type": "click", "user_id": GONE, "item_id": "a2",
             "timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}]}).json()
        assert late["accepted"] == 0 and rows_naming(engine.store, GONE) == {}

        cold = client.get(f"/v1/users/{GONE}/feed", params={"n": 4}).json()
        stranger = client.get("/v1/users/never-seen/feed", params={"n": 4}).json()
        assert cold["cold_start"]
        assert [i["item_id"] for i in cold["items"]] == [i["item_id"] for i in stranger["items"]]
        assert client.get(f"/v1/users/{GONE}/profile").json()["history_length"] == 0
        engine.experiments.flush()  # the writer thread would store it within a second
        again = client.delete(f"/v1/users/{GONE}").json()
        # the cold feed above was a new visit after the erasure: its exposure is new too
        assert again["rows"] == {"events": 0, "users": 0, "exposures": 1}

    # the bundle trained before the deletion holds nothing keyed by the user
    bundle = load_bundle(bundles)
    assert bundle.path is not None
    for f in bundle.path.rglob("*"):
        if f.is_file():
            assert GONE.encode() not in f.read_bytes(), f
    with shelfwise.open(bundle=bundles, config=config(url)) as fresh:  # a worker started after it
        assert fresh.feed(GONE, 4).cold_start


def test_forget_user_needs_the_admin_scope(tmp_path: Path) -> None:
    from shelfwise.apikeys import Scope, create_key

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    bundles = make_shop(tmp_path, url)
    app = create_app(config=config(url), bundle_path=bundles)
    _, read = create_key(app.state.store, Scope.READ)
    _, admin = create_key(app.state.store, Scope.ADMIN)
    with TestClient(app) as client:
        path = f"/v1/users/{GONE}"
        assert client.delete(path).status_code == 401
        assert client.delete(path, headers={"Authorization": f"Bearer {read}"}
                             ).status_code == 403
        ok = client.delete(path, headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and ok.json()["rows"]["events"] == 4


def test_other_workers_and_the_cli_forget_through_the_store(tmp_path: Path) -> None:
    """The CLI deletes on the store; a running worker drops its cache and queued impressions
    (which the store would refuse anyway) and serves a cold start."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    bundles = make_shop(tmp_path, url)
    with shelfwise.open(bundle=bundles, config=config(url)) as worker, \
            shelfwise.open(bundle=bundles, config=config(url)) as other:
        assert not worker.feed(GONE, 3).cold_start and worker.impressions.pending() == 3
        assert other.promotions(GONE).user_id == GONE
        res = CliRunner().invoke(cli, ["forget-user", GONE, "--store", url])
        assert res.exit_code == 0, res.output
        assert "events 4, exposures 0, users 0" in res.output and "click" not in res.output
        assert held(worker, GONE)["histories"] == 1, "not yet looked at the store"
        worker.impressions.flush()  # queued before the erasure: refused by the tombstone
        assert rows_naming(worker.store, GONE) == {}
        assert worker.feed(GONE, 3).cold_start
        assert held(worker, GONE)["histories"] == 1, "cached again: as a cold start"
        assert list(worker.recommender.history(GONE)) == []
        other.erasures.sync()
        assert held(other, GONE) == dict.fromkeys(held(other, GONE), 0)


def test_forget_user_cli_refuses_a_broken_config(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["forget-user", GONE, "--store",
                                   f"sqlite:///{tmp_path / 'x.db'}", "--set",
                                   "privacy.pseudonymize=true"])
    assert res.exit_code == 2 and "secret" in res.output


# ---- retention -----------------------------------------------------------------------------
def test_retention_at_start_on_schedule_and_by_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    bundles = make_shop(tmp_path, url)  # its purchases are from 2024: past 30 days
    store = open_store(url)
    now = datetime.now(UTC)
    store.add_events([Event(id="recent", type="click", user_id="cust-new-x", item_id="a1",
                            timestamp=now - timedelta(days=1))])
    store.close()
    cfg = config(url, storage={"retention_days": 30, "retention_every_minutes": 0.005})
    with shelfwise.open(bundle=bundles, config=cfg) as engine:
        assert engine.store.counts()["events"] == 1, "applied before the first request"
        assert engine.feed(GONE, 3).cold_start
        engine.track([Event(id="old", type="click", user_id=GONE, item_id="a1",
                            timestamp=now - timedelta(days=40))])  # a late, old delivery
        engine.recommender.history(GONE)  # cached, with or without it
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while (engine.store.counts()["events"] > 1 or held(engine, GONE)["histories"]) \
                and datetime.now(UTC) < deadline:
            engine.erasures._stop.wait(0.1)
        assert [e.id for b in engine.store.iter_events() for e in b] == ["recent"]
        assert held(engine, GONE)["histories"] == 0, "cached histories follow retention"
        assert engine.apply_retention() == 0

    other = f"sqlite:///{tmp_path / 'other.db'}"
    store_from_frame(shop_frame(), other).close()
    runner = CliRunner()
    res = runner.invoke(cli, ["retention", "apply", "--store", other])
    assert res.exit_code == 2 and "retention_days" in res.output
    res = runner.invoke(cli, ["retention", "apply", "--store", other, "--days", "30"])
    assert res.exit_code == 0 and f"deleted {len(shop_frame())} events" in res.output, \
        res.output
    check = open_store(other)
    assert check.counts()["events"] == 0
    check.close()


def test_decision_log_drops_rows_and_keeps_the_rest_addressable() -> None:
    log = DecisionLog(max_log=3)
    for k, user in enumerate(["a", "b", "a", "c"]):  # row 0 falls out (max_log)
        log.append([float(k)], k, f"r{k}", "item", user=user, at=float(k))
    assert log.drop(lambda user, _at: user == "a") == 1
    assert log.credit("r3", "item") and not log.credit("r2", "item")
    _, arms, rewards = log.arrays()
    assert arms.tolist() == [1, 3] and rewards.tolist() == [0.0, 1.0]
    assert log.drop(lambda _user, at: at < 3) == 1 and log.drop(lambda *_: False) == 0
    assert log.arrays()[1].tolist() == [3] and log.credit("r3")


# ---- pseudonyms ----------------------------------------------------------------------------
def test_pseudonyms_are_keyed_stable_and_recognisable() -> None:
    p, q = Pseudonymizer(SECRET), Pseudonymizer(SECRET + "x")
    a = p("alice@example.com")
    assert a == p("alice@example.com") and a != q("alice@example.com")
    assert a.startswith("pu_") and len(a) == 35 and a != p("alice@example.co")
    assert p("anon:sess-1") == "anon:" + p.session("sess-1")
    with pytest.raises(InvalidRequestError, match="user_id"):
        p("x" * 257)
    with pytest.raises(ConfigError, match="16"):
        Pseudonymizer("short")


def test_pseudonymize_without_a_secret_refuses_to_start(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFWISE_PRIVACY__PSEUDONYMIZE", "true")
    with pytest.raises(ConfigError, match="SHELFWISE_PRIVACY__SECRET"):
        load_config(None)
    res = CliRunner().invoke(cli, ["serve", "--store", f"sqlite:///{tmp_path / 'x.db'}"])
    assert res.exit_code == 2 and "secret" in res.output
    monkeypatch.setenv("SHELFWISE_PRIVACY__SECRET", SECRET)
    assert load_config(None).config.privacy.pseudonymizer() is not None


@pytest.fixture
def pseudonymized(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SHELFWISE_PRIVACY__PSEUDONYMIZE", "true")
    monkeypatch.setenv("SHELFWISE_PRIVACY__SECRET", SECRET)
    yield


RAW = ["alice@example.com", "13800138000", "bob-raw-77"]


def test_pseudonymized_store_never_holds_raw_ids(tmp_path: Path, pseudonymized: None) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    frame = two_group_frame()
    frame["user_id"] = frame["user_id"].map({"u0": RAW[0], "u1": RAW[1]}).fillna(
        frame["user_id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"] + 1.7e9, unit="s", utc=True)
    frame.assign(type="purchase").to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame({"item_id": sorted(set(frame["item_id"])), "title": "game"}).to_csv(
        tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": RAW[:2], "attributes": '{"tier": "gold"}'}).to_csv(
        tmp_path / "users.csv", index=False)
    runner = CliRunner()
    for kind in ("items", "events", "users"):
        res = runner.invoke(cli, ["import", str(tmp_path / f"{kind}.csv"), "--store", url,
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
    store = open_store(url)
    train_bundle(interactions_from_store(store), tmp_path / "bundles")
    store.close()

    cfg = load_config(None, overrides={"storage.url": (url, "test")}).config
    app = create_app(config=cfg.model_copy(update={"serve": cfg.serve.model_copy(update={
        "impressions": cfg.serve.impressions.model_copy(update={"flush_seconds": 60})})}),
        bundle_path=tmp_path / "bundles")
    with TestClient(app) as client:
        client.post("/v1/users", json={"users": [{"id": RAW[2]}]})
        client.post("/v1/events", json={"events": [
            {"type": "click", "user_id": RAW[2], "item_id": "b1"},
            {"type": "click", "user_id": "anon:raw-session-9", "item_id": "b2"}]})
        feed = client.get(f"/v1/users/{RAW[0]}/feed", params={"n": 3, "explore": 1}).json()
        assert feed["user_id"] == RAW[0] and not feed["cold_start"]
        profile = client.get(f"/v1/users/{RAW[2]}/profile").json()
        assert profile["user_id"] == RAW[2] and profile["recent_items"] == ["b1"]
        search = client.post("/v1/search", json={"query": "game", "user_id": RAW[1],
                                                 "session_id": "raw-session-9"}).json()
        assert search["user_id"] == RAW[1] and search["personalized"]
        client.get("/v1/items/a1/similar", params={"session_id": "raw-session-9"})
        assert client.post(f"/v1/users/{RAW[1]}/promotions", json={"n": 1}).status_code == 200
        app.state.engine.impressions.flush()
        data = database_bytes(url)
        for raw in [*RAW, "raw-session-9"]:
            assert raw.encode() not in data, raw
        assert b"pu_" in data
        stored = app.state.engine.user_key(RAW[0])
        user = app.state.store.get_user(stored)
        assert user is not None and user.attributes == {"tier": "gold"}

        gone = client.delete(f"/v1/users/{RAW[0]}").json()
        assert gone["user_id"] == RAW[0] and gone["rows"]["users"] == 1
        assert gone["events"]["purchase"] == 4
        assert rows_naming(app.state.store, stored) == {}
        assert client.get(f"/v1/users/{RAW[0]}/feed").json()["cold_start"]


def test_forget_user_cli_with_pseudonyms(tmp_path: Path, pseudonymized: None,
                                         pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    engine_cfg = load_config(None, overrides={"storage.url": (url, "test")}).config
    bundles = make_shop(tmp_path, url)
    with shelfwise.open(bundle=bundles, config=engine_cfg) as engine:
        engine.track([{"type": "click", "user_id": "raw-carol", "item_id": "a1"}])
        stored = engine.user_key("raw-carol")
        assert rows_naming(engine.store, "raw-carol") == {}
        assert rows_naming(engine.store, stored) == {"events": 1}
        res = CliRunner().invoke(cli, ["forget-user", "raw-carol", "--store", url])
        assert res.exit_code == 0 and "events 1" in res.output, res.output
        assert rows_naming(engine.store, stored) == {}
        assert engine.feed("raw-carol").cold_start
