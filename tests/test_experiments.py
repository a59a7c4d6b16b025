"""Experiments as data: sticky, uniform, independent assignment; the HTTP life cycle; every
response names its variant and the impressions carry it; overrides change what is served."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from scipy import stats

from shelfwise.data.schemas import EventType
from shelfwise.experiments.model import Experiment, ExperimentIn, bucket, unit_hash
from shelfwise.serving import create_app
from tests.conftest import two_group_frame
from tests.helpers import build


def _spec(exp_id: str = "exp1", **variant_b: Any) -> dict[str, Any]:
    return {"id": exp_id, "variants": [
        {"name": "A", "share": 0.5},
        {"name": "B", "share": 0.5, "overrides": variant_b}]}


def test_assignment_is_sticky_uniform_and_independent_across_experiments() -> None:
    units = [f"user-{k}" for k in range(20_000)]
    exp = Experiment(**ExperimentIn(id="e", variants=[
        {"name": "A", "share": 0.2}, {"name": "B", "share": 0.3},
        {"name": "C", "share": 0.5}]).model_dump())
    first = [exp.assign(u).name for u in units]
    assert first == [exp.assign(u).name for u in units], "sticky"
    counts = [first.count(v) for v in "ABC"]
    assert stats.chisquare(counts, [0.2 * 20_000, 0.3 * 20_000, 0.5 * 20_000]).pvalue > 1e-3
    # another salt: the two assignments are independent (chi-square on the 2x2 table)
    a = np.array([bucket("s1", u, [0.5, 0.5]) for u in units])
    b = np.array([bucket("s2", u, [0.5, 0.5]) for u in units])
    table = np.array([[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    h = np.array([unit_hash("s", u) for u in units[:5000]])
    assert stats.kstest(h, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("bad, field", [
    ({"variants": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.4}]}, "sum to 1"),
    ({"variants": [{"name": "A", "share": 0.5}, {"name": "A", "share": 0.5}]}, "same name"),
    ({"control": "Z"}, "control"),
    ({"variants": [{"name": "A", "share": 1.0}]}, "variants"),
    ({"variants": [{"name": "A", "share": 0.5},
                   {"name": "B", "share": 0.5, "overrides": {"cart": {"nope": 1}}}]},
     "unknown cart weight"),
    ({"variants": [{"name": "A", "share": 0.5},
                   {"name": "B", "share": 0.5, "overrides": {"diversity": 2}}]}, "diversity"),
])
def test_bad_definitions_name_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ExperimentIn(**{**_spec(), **bad})


def test_life_cycle_over_http_variants_in_responses_and_impressions(tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    engine = client.app.state.engine  # type: ignore[attr-defined]
    r = client.post("/v1/experiments", json=_spec("div", diversity=1.0))
    assert r.status_code == 201 and r.json()["status"] == "draft"
    assert r.json()["control"] == "A"
    assert client.post("/v1/experiments", json=_spec("div")).status_code == 409
    assert client.get("/v1/experiments/nope").status_code == 404
    assert client.post("/v1/experiments/div/stop").status_code == 422  # never started
    feed = client.get("/v1/users/u1/feed", params={"n": 3}).json()
    assert feed["experiments"] == {}, "a draft assigns nothing"

    assert client.post("/v1/experiments/div/start").json()["status"] == "running"
    # a second experiment changing the same setting on a shared surface is refused
    client.post("/v1/experiments", json=_spec("div2", diversity=0.5))
    r = client.post("/v1/experiments/div2/start")
    assert r.status_code == 409 and "div" in r.json()["detail"]
    # an A/A test overlaps anything
    client.post("/v1/experiments", json=_spec("aa"))
    assert client.post("/v1/experiments/aa/start").status_code == 200

    seen: dict[str, str] = {}
    for k in range(40):
        user = f"u{k}"
        body = client.get(f"/v1/users/{user}/feed", params={"n": 3}).json()
        assert set(body["experiments"]) == {"div", "aa"}
        seen[user] = body["experiments"]["div"]
        again = client.get(f"/v1/users/{user}/feed", params={"n": 3}).json()
        assert again["experiments"] == body["experiments"], "sticky"
    assert set(seen.values()) == {"A", "B"}
    s = client.post("/v1/search", json={"query": "keyboard", "n": 2, "session_id": "s9"}).json()
    assert set(s["experiments"]) == {"div", "aa"}
    anon = client.post("/v1/search", json={"query": "keyboard", "n": 2}).json()
    assert anon["experiments"] == {}, "no user, no session: nothing makes it sticky"
    cart = client.post("/v1/cart/recommend", json={"items": ["b1"], "n": 2,
                                                   "user_id": "u1"}).json()
    assert cart["experiments"]["div"] == seen["u1"]

    engine.impressions.flush()
    shown = engine.store.events_for_requests([body["request_id"]],
                                             types=[EventType.IMPRESSION])
    assert shown and all(e.context["experiments"] == body["experiments"] for e in shown)

    stopped = client.post("/v1/experiments/div/stop").json()
    assert stopped["status"] == "stopped" and stopped["stopped_at"]
    assert client.post("/v1/experiments/div/start").status_code == 409
    assert set(client.get("/v1/users/u1/feed").json()["experiments"]) == {"aa"}
    listed = {e["id"]: e["status"] for e in client.get("/v1/experiments").json()}
    assert listed == {"div": "stopped", "div2": "draft", "aa": "running"}


def test_a_variant_override_changes_what_is_served_and_a_request_value_wins(
        tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    client.post("/v1/experiments", json={"id": "x", "variants": [
        {"name": "plain", "share": 0.5, "overrides": {"explore": 0}},
        {"name": "explore", "share": 0.5, "overrides": {"explore": 2}}]})
    client.post("/v1/experiments/x/start")
    by_variant: dict[str, list[int]] = {"plain": [], "explore": []}
    for k in range(30):
        body = client.get(f"/v1/users/u{k}/feed", params={"n": 4}).json()
        slots = sum(i["explanation"]["reason"] == "explore" for i in body["items"])
        by_variant[body["experiments"]["x"]].append(slots)
        explicit = client.get(f"/v1/users/u{k}/feed", params={"n": 4, "explore": 0}).json()
        assert all(i["explanation"]["reason"] != "explore" for i in explicit["items"])
    assert by_variant["plain"] and set(by_variant["plain"]) == {0}
    assert by_variant["explore"] and min(by_variant["explore"]) >= 1


def test_unknown_bundle_version_is_refused(tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    r = client.post("/v1/experiments", json=_spec("b", bundle="20990101T000000-nope"))
    assert r.status_code == 404 and "not published" in r.json()["detail"]


def test_report_matches_a_hand_computation(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from scipy import stats as sps

    from shelfwise.data.schemas import Event
    from shelfwise.experiments.data import collect
    from shelfwise.experiments.report import analyse
    from shelfwise.storage import open_store

    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    t0 = datetime(2026, 1, 10, tzinfo=UTC)
    exp = Experiment(**ExperimentIn(id="r", variants=[{"name": "A", "share": 0.5},
                                                       {"name": "B", "share": 0.5}],
                                    surfaces=["feed"], cuped_days=7).model_dump(),
                     status="stopped", started_at=t0, stopped_at=t0 + timedelta(days=2))
    store.put_experiment(exp.id, exp.to_doc())
    events: list[Event] = []

    def at(hours: float) -> datetime:
        return t0 + timedelta(hours=hours)

    exposures: dict[str, tuple[str, datetime]] = {}

    def show(user: str, req: str, items: list[str], variant: str | None, h: float,
             surface: str = "feed") -> None:
        ctx: dict[str, Any] = {"surface": surface}
        if variant is not None:
            ctx["experiments"] = {"r": variant}
            exposures.setdefault(user, (variant, at(h)))
        events.extend(Event(id=f"{req}:{p}", type="impression", user_id=user, item_id=i,
                            request_id=req, position=p, timestamp=at(h), context=ctx)
                      for p, i in enumerate(items))

    def act(kind: str, user: str, item: str, h: float, req: str | None = None,
            value: float | None = None) -> None:
        events.append(Event(id=f"{kind}-{len(events)}", type=kind, user_id=user, item_id=item,
                            request_id=req, timestamp=at(h), value=value))

    # A: a1 (2 lists of 3, clicks 2 distinct shown items, one twice), a2 (3 shown, 0 clicks,
    # purchase 10 after exposure), a3 (3 shown, 1 click, cart before exposure: not counted)
    show("a1", "q1", ["x", "y", "z"], "A", 1)
    show("a1", "q2", ["x", "w", "v"], "A", 30)
    act("click", "a1", "x", 2, "q1")
    act("click", "a1", "x", 3, "q1")          # same shown item: counts once
    act("click", "a1", "w", 31, "q2")
    act("click", "a1", "q", 31, "q2")         # not shown in q2: not a clicked impression
    show("a2", "q3", ["x", "y", "z"], "A", 5)
    act("purchase", "a2", "y", 6, value=10.0)
    act("purchase", "a2", "y", -24, value=4.0)  # 1 day before the start: CUPED covariate
    show("a3", "q4", ["x", "y", "z"], "A", 10)
    act("cart", "a3", "x", 9)                 # before a3's first exposure
    act("click", "a3", "z", 11, "q4")
    # B: b1 (3 shown, 2 clicks, cart + purchase 30), b2 (3 shown, 1 click), b3 (3 shown)
    show("b1", "q5", ["x", "y", "z"], "B", 2)
    act("click", "b1", "x", 3, "q5")
    act("click", "b1", "y", 3, "q5")
    act("cart", "b1", "y", 4)
    act("purchase", "b1", "y", 5, value=30.0)
    act("purchase", "b1", "z", -48, value=8.0)  # pre-period
    show("b2", "q6", ["x", "y", "z"], "B", 20)
    act("click", "b2", "z", 21, "q6")
    show("b3", "q7", ["x", "y", "z"], "B", 40)
    act("click", "b3", "x", 41, "q5")         # cites someone else's list: not counted
    # noise: a list on a surface the experiment does not target, a user never exposed,
    # late events
    show("a3", "q8", ["x", "y"], None, 12, surface="similar")
    show("o1", "q10", ["x", "y"], None, 3)
    act("click", "o1", "x", 4, "q10")
    act("purchase", "a2", "x", 60, value=99.0)  # after the stop
    store.add_events(events)
    assert store.add_exposures([(exp.id, u, v, t) for u, (v, t) in exposures.items()]) == 6
    assert store.add_exposures([(exp.id, "a1", "B", at(50))]) == 0, "the first one stays"

    data = collect(store, exp)
    report = analyse(data).to_record()
    v = report["variants"]
    assert (v["A"]["users"], v["A"]["impressions"], v["A"]["clicks"]) == (3, 12, 3)
    assert (v["B"]["users"], v["B"]["impressions"], v["B"]["clicks"]) == (3, 9, 3)
    assert v["A"]["ctr"]["value"] == pytest.approx(3 / 12)
    assert v["B"]["ctr"]["value"] == pytest.approx(3 / 9)
    assert v["A"]["cart_rate"]["value"] == 0 and v["B"]["cart_rate"]["value"] == pytest.approx(
        1 / 3)
    assert v["A"]["conversion"]["value"] == pytest.approx(1 / 3)
    assert v["A"]["revenue_per_user"]["value"] == pytest.approx(10 / 3)
    assert v["B"]["revenue_per_user"]["value"] == pytest.approx(10.0)

    # CTR by the delta method over users, by hand
    def ratio_var(c: np.ndarray, i: np.ndarray) -> float:
        r = c.sum() / i.sum()
        return float(np.var(c - r * i, ddof=1) / len(c) / i.mean() ** 2)

    ca, ia = np.array([2.0, 0, 1]), np.array([6.0, 3, 3])
    cb, ib = np.array([2.0, 1, 0]), np.array([3.0, 3, 3])
    diff = cb.sum() / ib.sum() - ca.sum() / ia.sum()
    se = np.sqrt(ratio_var(ca, ia) + ratio_var(cb, ib))
    ctr = report["comparisons"]["B"]["ctr"]
    assert ctr["difference"] == pytest.approx(diff)
    assert ctr["p_value"] == pytest.approx(2 * sps.norm.sf(abs(diff / se)))
    # revenue with CUPED on the pre-period sums, Welch on the adjusted values
    ya, yb = np.array([0.0, 10, 0]), np.array([30.0, 0, 0])
    xa, xb = np.array([0.0, 4, 0]), np.array([8.0, 0, 0])
    pooled_cov = (np.cov(ya, xa)[0, 1] + np.cov(yb, xb)[0, 1]) / 2
    theta = pooled_cov / ((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2)
    mx = np.concatenate([xa, xb]).mean()
    welch = sps.ttest_ind(yb - theta * (xb - mx), ya - theta * (xa - mx), equal_var=False)
    rev = report["comparisons"]["B"]["revenue_per_user"]
    assert rev["theta"] == pytest.approx(theta)
    assert rev["p_value"] == pytest.approx(welch.pvalue)
    conv = report["comparisons"]["B"]["conversion"]
    assert conv["difference"] == pytest.approx(0.0)
    assert report["srm"]["observed"] == [3, 3] and not report["srm"]["flagged"]
    seq = report["comparisons"]["B"]["ctr_sequential"]
    assert seq["looks"] >= 1 and 0 <= seq["p_value"] <= 1
    assert report["verdict"].startswith(("Not enough evidence", "No clear difference"))
    store.close()


def test_simulated_shoppers_over_http_report_the_better_variant_and_a_broken_split(
        tmp_path: Path) -> None:
    """Shoppers click each shown item with a probability that depends on their variant; the
    report, over HTTP and from the CLI, names B better. A second experiment whose B users
    mostly never come back (a broken split) is flagged by the SRM check."""
    from typer.testing import CliRunner

    from shelfwise.cli.main import app as cli

    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    for exp_id in ("ab", "srm"):  # planned for a large effect: mSPRT's prior scale is mde
        client.post("/v1/experiments", json={**_spec(exp_id), "mde": 1.0})
        client.post(f"/v1/experiments/{exp_id}/start")
    rng = np.random.default_rng(0)
    p_click = {"A": 0.1, "B": 0.4}
    for k in range(240):
        user = f"shopper-{k}"
        if bucket("srm", user, [0.5, 0.5]) == 1 and rng.random() < 0.6:
            continue  # a broken split: most of srm's B shoppers never reach the server
        body = client.get(f"/v1/users/{user}/feed", params={"n": 4}).json()
        clicks = [{"type": "click", "user_id": user, "item_id": i["item_id"],
                   "request_id": body["request_id"]}
                  for i in body["items"] if rng.random() < p_click[body["experiments"]["ab"]]]
        if clicks:
            assert client.post("/v1/events", json={"events": clicks}).status_code == 200
    report = client.get("/v1/experiments/ab/report").json()
    assert report["verdict"].startswith("B is better than A"), report["verdict"]
    assert report["comparisons"]["B"]["ctr"]["p_value"] < 0.001
    assert not report["srm"]["flagged"]
    runner = CliRunner()
    out = runner.invoke(cli, ["experiment", "report", "ab", "--store", url])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("B is better than A")
    as_json = json.loads(runner.invoke(cli, ["experiment", "report", "ab", "--store", url,
                                             "--json"]).output)
    assert as_json["variants"]["B"]["users"] == report["variants"]["B"]["users"]
    broken = client.get("/v1/experiments/srm/report").json()
    assert broken["srm"]["flagged"] and broken["verdict"].startswith("Sample ratio mismatch")


def test_disjoint_parts_of_a_layer_share_no_unit_and_may_change_the_same_setting(
        tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    for k, part in enumerate(([0.0, 0.3], [0.3, 1.0], [0.2, 0.5])):
        r = client.post("/v1/experiments", json={**_spec(f"l{k}", diversity=0.5 + k / 10),
                                                  "layer": "div", "layer_range": part})
        assert r.status_code == 201
    assert client.post("/v1/experiments/l0/start").status_code == 200
    assert client.post("/v1/experiments/l1/start").status_code == 200
    assert client.post("/v1/experiments/l2/start").status_code == 409  # overlaps both
    seen = {"l0": 0, "l1": 0}
    for k in range(60):
        got = client.get(f"/v1/users/u{k}/feed", params={"n": 2}).json()["experiments"]
        assert len(got) == 1, "exactly one of two disjoint parts covering the layer"
        seen[next(iter(got))] += 1
    assert 5 <= seen["l0"] <= 35 and seen["l0"] + seen["l1"] == 60
    bad = client.post("/v1/experiments", json={**_spec("bad"), "layer_range": [0.5, 0.5]})
    assert bad.status_code == 422 and "layer_range" in bad.text


def test_a_variant_can_serve_another_bundle_version(tmp_path: Path) -> None:
    from shelfwise.bundle import GeneratorSpec, TrainConfig, train_bundle
    from shelfwise.data.loading import interactions_from_store
    from shelfwise.storage import open_store

    url, bundles = build(two_group_frame(), tmp_path)
    first = (bundles / "LATEST").read_text().strip()
    store = open_store(url)
    train_bundle(interactions_from_store(store), bundles,
                 TrainConfig(generators=[GeneratorSpec(name="popularity")]))
    store.close()
    latest = (bundles / "LATEST").read_text().strip()
    assert latest != first
    client = TestClient(create_app(url, bundles))
    r = client.post("/v1/experiments", json=_spec("bv", bundle=first))
    assert r.status_code == 201, r.text
    client.post("/v1/experiments/bv/start")
    versions: dict[str, set[str]] = {"A": set(), "B": set()}
    for k in range(30):
        body = client.get(f"/v1/users/u{k}/feed", params={"n": 3}).json()
        versions[body["experiments"]["bv"]].add(body["model_version"])
    assert versions == {"A": {latest}, "B": {first}}
    engine = client.app.state.engine  # type: ignore[attr-defined]
    child = engine._variants[first]
    child.impressions.flush()
    engine.impressions.flush()
    shown = child.store.events_window([EventType.IMPRESSION],
                                      datetime.now(UTC) - timedelta(hours=1),
                                      context_path=("bundle",))
    assert set(shown["context"]) == {first, latest}
    # events stored through the serving engine reach the variant's live state too
    assert child.recommender.observe in engine._subscribers
    assert child.explorer.notify in engine._subscribers


def test_replay_estimates_a_candidate_on_logged_exploration_slots(tmp_path: Path) -> None:
    """Slots chosen uniformly over sources; shoppers click only what popularity brought. The
    logging policy replayed on its own log gives its mean reward exactly; a greedy candidate
    trained on the older half is estimated well above it, with an interval."""
    from typer.testing import CliRunner

    from shelfwise.cli.main import app as cli
    from shelfwise.services.exploration import ExplorationConfig

    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles, ExplorationConfig(policy="uniform")))
    explored = 0
    for round_ in range(6):
        for k in range(20):
            user = f"u{k}"
            body = client.get(f"/v1/users/{user}/feed", params={"n": 2, "explore": 1}).json()
            explored += sum(it["explanation"]["reason"] == "explore" for it in body["items"])
            clicks = [{"id": f"c{round_}-{user}", "type": "click", "user_id": user,
                       "item_id": it["item_id"], "request_id": body["request_id"]}
                      for it in body["items"]
                      if it["explanation"]["source"] == "explore:popularity"]
            if clicks:
                client.post("/v1/events", json={"events": clicks})
    runner = CliRunner()
    same = runner.invoke(cli, ["experiment", "replay", "--surface", "exploration", "--policy",
                               "uniform", "--store", url, "--json", "--estimators", "snips"])
    assert same.exit_code == 0, same.output
    rec = json.loads(same.output)
    assert rec["evaluated_rows"] + rec["trained_rows"] == explored > 60
    snips = rec["estimates"][0]
    assert snips["value"] == pytest.approx(rec["logged_value"])
    assert snips["lower"] <= snips["value"] <= snips["upper"]
    greedy = runner.invoke(cli, ["experiment", "replay", "--surface", "exploration",
                                 "--policy", "egreedy", "--param", "epsilon=0.05",
                                 "--store", url])
    assert greedy.exit_code == 0, greedy.output
    assert "logged policy's mean reward" in greedy.output
    value = float(greedy.output.split("snips")[1].split()[0])
    assert value > 2 * rec["logged_value"]
    none = runner.invoke(cli, ["experiment", "replay", "--surface", "promotions",
                               "--policy", "uniform", "--store", url])
    assert none.exit_code == 2 and "no logged promotions decisions" in none.output


def test_cart_weights_of_a_variant_change_the_cart_answer(tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    client.post("/v1/experiments", json={**_spec("cart", cart={
        "cooccurrence": 0.0, "sequential": 0.0, "user_cooccurrence": 0.0, "popularity": 1.0}),
        "surfaces": ["cart"]})
    client.post("/v1/experiments/cart/start")
    sources: dict[str, set[str]] = {"A": set(), "B": set()}
    for k in range(30):
        body = client.post("/v1/cart/recommend", json={"items": ["a1"], "n": 3,
                                                       "user_id": f"u{k}"}).json()
        sources[body["experiments"]["cart"]] |= set(body["sources"])
    assert "cooccurrence" in sources["A"]
    assert sources["B"] == {"popularity"}


def test_cli_defines_starts_lists_and_stops_experiments(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shelfwise.cli.main import app as cli

    url = f"sqlite:///{tmp_path / 'x.db'}"
    spec = tmp_path / "exp.toml"
    spec.write_text('id = "div"\nsurfaces = ["feed"]\n'
                    '[[variants]]\nname = "A"\nshare = 0.5\n'
                    '[[variants]]\nname = "B"\nshare = 0.5\n'
                    '[variants.overrides]\ndiversity = 0.7\n')
    run = CliRunner().invoke
    out = run(cli, ["experiment", "create", str(spec), "--start", "--store", url])
    assert out.exit_code == 0 and "div running" in out.output, out.output
    listed = run(cli, ["experiment", "list", "--store", url]).output
    assert listed.startswith("div\trunning") and "feed" in listed
    assert run(cli, ["experiment", "stop", "div", "--store", url]).exit_code == 0
    again = run(cli, ["experiment", "start", "div", "--store", url])
    assert again.exit_code == 2 and "was stopped" in again.output
    spec.write_text('id = "bad"\n[[variants]]\nname = "A"\nshare = 0.7\n'
                    '[[variants]]\nname = "B"\nshare = 0.7\n')
    bad = run(cli, ["experiment", "create", str(spec), "--store", url])
    assert bad.exit_code == 2 and "sum to 1.4" in bad.output
    missing = run(cli, ["experiment", "report", "nope", "--store", url])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_flush_waits_for_the_exposures_the_writer_thread_is_storing(tmp_path: Path) -> None:
    """A report flushes and then reads the store: exposures the background writer had taken
    but not yet stored must be in the store when flush returns, and a batch the store
    refuses stays queued for the next flush."""
    import threading

    from shelfwise.experiments.service import ExperimentService
    from shelfwise.storage import open_store

    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    entered, release = threading.Event(), threading.Event()
    real = store.add_exposures
    calls: list[int] = []

    def slow(rows: Any) -> int:
        calls.append(len(rows))
        if len(calls) == 1:  # the writer thread's write: held until the main thread flushed
            entered.set()
            assert release.wait(10)
        if len(calls) == 2:
            raise RuntimeError("store unavailable")
        return real(rows)

    store.add_exposures = slow  # type: ignore[method-assign]
    service = ExperimentService(store)
    exp = Experiment.model_validate({**_spec("wf"), "status": "running",
                                     "started_at": datetime.now(UTC)})
    service.expose("u1", [(exp, exp.variants[0])])
    assert entered.wait(10)  # the writer thread holds u1's batch inside the store call
    done = threading.Event()
    flusher = threading.Thread(target=lambda: (service.flush(), done.set()))
    flusher.start()
    assert not done.wait(0.3)  # the flush waits for the write in flight...
    release.set()
    assert done.wait(10)  # ...and returns once it is stored
    flusher.join()
    assert list(store.exposures("wf")["unit"]) == ["u1"]
    service._stop.set()  # no writer thread from here on: the test flushes by hand
    service._wake.set()
    assert service._writer is not None
    service._writer.join(10)
    service.expose("u2", [(exp, exp.variants[0])])
    with pytest.raises(RuntimeError):
        service.flush()  # the second store call fails: u2 stays queued
    assert service.flush() == 1  # and is stored by the next one
