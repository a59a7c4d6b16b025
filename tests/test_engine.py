"""The engine (services container) behind HTTP and Python: the README example, impressions for
every list, one explanation shape, training as one transaction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import shelfwise
from shelfwise.bundle import GeneratorSpec, TrainConfig, load_bundle, train_bundle
from shelfwise.cli.evaluate_cmd import build_models
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import EventType
from shelfwise.ranking.config import PipelineConfig
from shelfwise.retrieval.blend import Blend
from shelfwise.serving import create_app
from shelfwise.storage import open_store
from tests.conftest import two_group_frame
from tests.helpers import build, store_from_frame

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    text = README.read_text()
    block = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "README keeps its Python API example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 14
    code = code.replace("sqlite:///var/demo/shelfwise.db", url).replace(
        "var/demo/bundles", str(bundles))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5
    store = open_store(url)
    clicks = store.user_events("visitor-1", types=[EventType.CLICK])
    assert len(clicks) == 1
    shown = store.events_for_requests([clicks[0].request_id or ""],
                                      types=[EventType.IMPRESSION])
    assert [e.position for e in shown] == list(range(5)), "the click joins the shown list"
    assert clicks[0].item_id == shown[0].item_id
    store.close()


def test_anonymous_feed_search_and_similar_leave_impressions_a_click_joins(
        tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    feed = client.get("/v1/users/sess-42/feed", params={"n": 3}).json()
    search = client.post("/v1/search", json={"query": "gaming keyboard", "n": 3,
                                             "session_id": "sess-42"}).json()
    similar = client.get("/v1/items/a1/similar", params={"n": 3, "session_id": "sess-42"}
                         ).json()
    cart = client.post("/v1/cart/recommend", json={"items": ["b1"], "n": 2}).json()
    engine = client.app.state.engine  # type: ignore[attr-defined]
    engine.impressions.flush()  # written behind the answers (maybe some already)
    assert engine.impressions.written_ == 11  # 3 + 3 + 3 + 2
    store = engine.store
    for body, surface, who in ((feed, "feed", "sess-42"), (search, "search", "anon:sess-42"),
                               (similar, "similar", "anon:sess-42")):
        first = body["items"][0]["item_id"]
        r = client.post("/v1/events", json={"events": [{
            "type": "click", "user_id": who, "item_id": first,
            "request_id": body["request_id"]}]})
        assert r.status_code == 200
        joined = store.events_for_requests([body["request_id"]])
        shown = [e for e in joined if e.type == EventType.IMPRESSION]
        click = [e for e in joined if e.type == EventType.CLICK]
        assert [e.item_id for e in shown] == [i["item_id"] for i in body["items"]]
        assert [e.position for e in shown] == [0, 1, 2]
        assert {e.context["surface"] for e in shown} == {surface}
        assert {e.context["bundle"] for e in shown} == {body["model_version"]}
        assert {e.user_id for e in shown} == {who}
        assert len(click) == 1 and click[0].item_id == shown[0].item_id
    cart_shown = store.events_for_requests([cart["request_id"]], types=[EventType.IMPRESSION])
    assert len(cart_shown) == 2 and cart_shown[0].user_id == f"anon:{cart['request_id']}"


def test_impressions_reach_the_store_within_the_flush_delay(tmp_path: Path) -> None:
    import time

    url, bundles = build(two_group_frame(), tmp_path)
    cfg = shelfwise.config.load_config(env={"SHELFWISE_SERVE__IMPRESSIONS__FLUSH_SECONDS":
                                            "0.2"}).config
    with shelfwise.open(url, bundles, config=cfg) as engine:
        feed = engine.feed("u0", n=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not engine.store.events_for_requests(
                [feed.request_id]):
            time.sleep(0.05)
        assert len(engine.store.events_for_requests([feed.request_id])) == 2
        last = engine.feed("u1", n=2)
    # closing the engine stores what is still queued
    store = open_store(url)
    assert len(store.events_for_requests([last.request_id])) == 2
    store.close()


def test_every_surface_explains_every_item_in_one_shape(tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    keys = {"reason", "source", "parts", "related_item", "label", "text"}
    feed = client.get("/v1/users/u0/feed", params={"n": 3}).json()["items"]
    cold = client.get("/v1/users/nobody/feed", params={"n": 3}).json()["items"]
    similar = client.get("/v1/items/a1/similar", params={"n": 3}).json()["items"]
    search = client.post("/v1/search", json={"query": "knife", "n": 3}).json()["items"]
    cart = client.post("/v1/cart/recommend", json={"items": ["b1"], "n": 2}).json()["items"]
    for items in (feed, cold, similar, search, cart):
        assert items and all(set(i["explanation"]) == keys for i in items)
    assert all(i["explanation"]["source"] == "blend" for i in feed)
    blend_keys = set(feed[0]["explanation"]["parts"])
    assert blend_keys and blend_keys <= {"cooccurrence", "semantic", "popularity"}
    for i in feed:  # the parts add up to the item's blend score
        assert sum(i["explanation"]["parts"].values()) == pytest.approx(i["score"], abs=1e-4)
    assert {i["explanation"]["source"] for i in cold} == {"cold_start"}
    assert {i["explanation"]["related_item"] for i in similar} == {"a1"}
    assert search[0]["explanation"]["reason"] == "matches_query"
    assert "bm25" in search[0]["explanation"]["parts"]
    assert cart[0]["explanation"]["related_item"] == "b1"
    assert cart[0]["explanation"]["text"].startswith("Often bought with")


def test_n_above_the_configured_limit_is_a_clear_422(tmp_path: Path) -> None:
    url, bundles = build(two_group_frame(), tmp_path)
    cfg = shelfwise.config.load_config(env={"SHELFWISE_SERVE__LIMITS__MAX_RESULTS": "5"}).config
    client = TestClient(create_app(url, bundles, config=cfg))
    r = client.post("/v1/search", json={"query": "knife", "n": 6})
    assert r.status_code == 422 and "serve.limits.max_results" in r.json()["detail"]


def test_the_served_blend_is_the_evaluated_blend(tmp_path: Path) -> None:
    """`evaluate --models feed` builds the blend that `train` serves: same weights, tuned in
    its own fit, same scores."""
    store = store_from_frame(_grid_frame(), f"sqlite:///{tmp_path / 'shop.db'}")
    data = interactions_from_store(store)
    cfg = TrainConfig(generators=[GeneratorSpec(name="cooccurrence"),
                                  GeneratorSpec(name="popularity", weight=0.05)])
    bundle = train_bundle(data, tmp_path / "bundles", cfg)
    assert bundle.manifest.tuning is not None, "enough users to tune"
    evaluated = build_models(["feed"], cfg)["feed"]
    assert isinstance(evaluated, Blend)
    evaluated.fit(data)
    assert evaluated.weights_ == bundle.manifest.blend_weights
    served = load_bundle(tmp_path / "bundles")
    from shelfwise.bundle.bundle import feed_blend

    h = [np.array([0, 1], np.int64), np.array([5], np.int64)]
    np.testing.assert_allclose(evaluated.score(h), feed_blend(served).score(h), rtol=1e-6)
    store.close()


def test_the_pipeline_reuses_the_bundles_fitted_generators(tmp_path: Path) -> None:
    store = store_from_frame(_grid_frame(), f"sqlite:///{tmp_path / 'shop.db'}")
    data = interactions_from_store(store)
    pipe = PipelineConfig.from_dict({"generators": [{"name": "cooccurrence"},
                                                    {"name": "itemknn"}], "min_groups": 5})
    cfg = TrainConfig(generators=[GeneratorSpec(name="cooccurrence"),
                                  GeneratorSpec(name="popularity", weight=0.05)],
                      pipeline=pipe, tune_weights=False)
    bundle = train_bundle(data, tmp_path / "bundles", cfg)
    assert bundle.pipeline is not None
    assert bundle.pipeline.generators_["cooccurrence"] is bundle.generators["cooccurrence"]
    assert bundle.pipeline.shared_ == {"cooccurrence": "cooccurrence"}
    assert bundle.path is not None
    assert not (bundle.path / "pipeline" / "generators" / "cooccurrence").exists()
    assert (bundle.path / "pipeline" / "generators" / "itemknn").is_dir()
    assert "pipeline" in bundle.manifest.parts
    loaded = load_bundle(tmp_path / "bundles")
    assert loaded.pipeline is not None
    assert loaded.pipeline.generators_["cooccurrence"] is loaded.generators["cooccurrence"]
    h = [np.array([0, 1], np.int64)]
    np.testing.assert_allclose(loaded.pipeline.score(h), bundle.pipeline.score(h), rtol=1e-6)
    store.close()


def _grid_frame() -> object:
    """60 users walking one of three 5-item chains: enough users to tune and train."""
    import pandas as pd

    rows, t = [], 0
    for u in range(60):
        chain = [f"{'abc'[u % 3]}{k}" for k in range(5)]
        for it in chain[: 3 + u % 3]:
            rows.append((f"u{u}", it, float(t)))
            t += 1
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_stage_lists_are_checked_when_the_config_is_read() -> None:
    from shelfwise.config import load_config
    from shelfwise.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"serve\.stages\.feed.*unknown stage 'sparkle'"):
        load_config(env={"SHELFWISE_SERVE__STAGES__FEED":
                         '["candidates", "rules", "sparkle", "explain"]'})
    with pytest.raises(ConfigError, match=r"serve\.stages\.search.*'explain' is required"):
        load_config(env={"SHELFWISE_SERVE__STAGES__SEARCH": '["candidates", "rules"]'})
    with pytest.raises(ConfigError, match=r"serve\.stages\.cart.*feed only"):
        load_config(env={"SHELFWISE_SERVE__STAGES__CART":
                         '["candidates", "explore", "explain"]'})
    with pytest.raises(ConfigError, match=r"stages run in the order"):
        load_config(env={"SHELFWISE_SERVE__STAGES__FEED":
                         '["candidates", "explain", "rules"]'})
    with pytest.raises(ConfigError, match=r"first stage is 'candidates'"):
        load_config(env={"SHELFWISE_SERVE__STAGES__FEED": '["rules", "explain"]'})


def test_a_new_stage_runs_wherever_the_config_lists_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage is one class registered by name; each surface's list in the config decides
    where it runs (here: a stage that reverses the list, on similar items only)."""
    from typing import ClassVar

    from shelfwise.config import load_config
    from shelfwise.services import stages

    class Reverse:
        name: ClassVar[str] = "reverse"

        def __init__(self, engine: object) -> None:
            pass

        def __call__(self, slate: stages.Slate) -> None:
            slate.items = slate.items[::-1]

    monkeypatch.setitem(stages.STAGES, "reverse", Reverse)
    monkeypatch.setattr(stages, "ORDER", ["candidates", "rules", "rerank", "reverse",
                                          "explore", "explain", "impressions"])
    url, bundles = build(two_group_frame(), tmp_path)
    plain = TestClient(create_app(url, bundles))
    cfg = load_config(env={"SHELFWISE_SERVE__STAGES__SIMILAR":
                           '["candidates", "rules", "rerank", "reverse", "explain"]'}).config
    client = TestClient(create_app(url, bundles, config=cfg))
    want = [i["item_id"] for i in plain.get("/v1/items/a1/similar",  # the model's order
                                             params={"n": 3, "diversity": 0}).json()["items"]]
    got = client.get("/v1/items/a1/similar", params={"n": 3}).json()
    assert [i["item_id"] for i in got["items"]] == want[::-1]
    feed = [i["item_id"] for i in client.get("/v1/users/u0/feed").json()["items"]]
    assert feed == [i["item_id"] for i in plain.get("/v1/users/u0/feed").json()["items"]]
    engine = client.app.state.engine  # type: ignore[attr-defined]
    engine.impressions.flush()
    assert not engine.store.events_for_requests([got["request_id"]]), (
        "similar's list leaves out 'impressions', so nothing is logged for it")


@pytest.mark.parametrize("slots", [2, 6])
def test_a_process_scores_at_most_scoring_threads_requests_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slots: int) -> None:
    """Six concurrent feeds and similar lists: at most ``serve.scoring_threads`` run their
    stages at once, the others wait their turn and are all answered."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from typing import ClassVar

    from shelfwise.config import load_config
    from shelfwise.services import stages

    lock, seen = threading.Lock(), {"now": 0, "peak": 0}

    class Hold:
        name: ClassVar[str] = "hold"

        def __init__(self, engine: object) -> None:
            pass

        def __call__(self, slate: stages.Slate) -> None:
            with lock:
                seen["now"] += 1
                seen["peak"] = max(seen["peak"], seen["now"])
            time.sleep(0.2)
            with lock:
                seen["now"] -= 1

    monkeypatch.setitem(stages.STAGES, "hold", Hold)
    monkeypatch.setattr(stages, "ORDER", ["candidates", "rules", "rerank", "hold",
                                          "explore", "explain", "impressions"])
    url, bundles = build(two_group_frame(), tmp_path)
    cfg = load_config(env={"SHELFWISE_SERVE__SCORING_THREADS": str(slots),
                           "SHELFWISE_SERVE__STAGES__FEED": '["candidates", "hold", "explain"]',
                           "SHELFWISE_SERVE__STAGES__SIMILAR":
                           '["candidates", "hold", "explain"]'}).config
    engine = create_app(url, bundles, config=cfg).state.engine
    calls = [lambda: engine.feed("u0", 3), lambda: engine.similar("a1", 3)] * 3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda call: call(), calls))
    assert all(len(a.items) == 3 for a in answers)
    if slots == 2:
        assert seen["peak"] == 2, "two scored at once, never more"
    else:
        assert seen["peak"] > 2, "the setting, not a fixed limit, holds them back"


def test_the_rules_stage_drops_items_made_unavailable_after_scoring(tmp_path: Path) -> None:
    from shelfwise.data.schemas import Item
    from shelfwise.services.stages import Candidate, Rules, Slate

    url, bundles = build(two_group_frame(), tmp_path)
    with shelfwise.open(url, bundles) as engine:
        engine.add_items([Item(id="b2", title="Bamboo cutting board", available=False)])
        slate = Slate("feed", "r1", 3, [Candidate(i, 1.0, "x", "blend")
                                        for i in ("b1", "b2", "b1", "a1", "a2")],
                      exclude={"a1"})
        Rules(engine)(slate)
        assert [c.item_id for c in slate.items] == ["b1", "a2"]


def test_the_search_index_is_built_at_start_and_health_says_when(tmp_path: Path) -> None:
    import time

    url, bundles = build(two_group_frame(), tmp_path)
    client = TestClient(create_app(url, bundles))
    deadline = time.monotonic() + 60
    while not client.get("/health").json()["ready"].get("search_index"):
        assert time.monotonic() < deadline, "the index was not built in the background"
        time.sleep(0.05)
    service = client.app.state.search  # type: ignore[attr-defined]
    index = service._index
    body = client.post("/v1/search", json={"query": "knife", "n": 1}).json()
    assert body["items"][0]["item_id"] == "b1"
    assert service._index is index, "the first search used the index built at start"


def test_an_http_event_is_stored_exactly_as_the_event_model_would_validate_it(
        tmp_path: Path) -> None:
    """What ``track`` stores from HTTP bodies, and what it refuses (naming the row), is what
    :class:`Event` makes of the same fields: stripped ids, times in UTC, the time range, a
    type's required target, a finite value."""
    from datetime import UTC, datetime, timedelta, timezone

    from shelfwise.data.schemas import Event
    from shelfwise.exceptions import InvalidRequestError
    from shelfwise.serving.schemas import EventIn

    url, bundles = build(two_group_frame(), tmp_path)
    engine = create_app(url, bundles).state.engine
    plus2 = timezone(timedelta(hours=2))
    good = [
        {"id": "  h-1 ", "type": "click", "user_id": " u0", "item_id": "a1 ",
         "timestamp": datetime(2026, 1, 2, 3, 4, 5)},
        {"id": "h-2", "type": "purchase", "user_id": "u0", "item_id": "a2", "value": 19.5,
         "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=plus2), "context": {"page": 2}},
        {"id": "h-3", "type": "search", "user_id": "u0", "query": "  red shoes ",
         "timestamp": datetime(2026, 1, 2, tzinfo=UTC)},
    ]
    engine.track([EventIn(**e) for e in good])
    for e in good:
        want = Event(**e)
        got = engine.store.existing_event_ids([want.id])
        assert got == {want.id}
        stored = [x for x in engine.store.user_events(want.user_id) if x.id == want.id]
        assert stored == [want]
    bad = [({"type": "view", "user_id": "u0"}, "needs item_id"),
           ({"type": "search", "user_id": "u0"}, "needs query"),
           ({"type": "click", "user_id": "u0", "item_id": "a1",
             "timestamp": datetime(1800, 1, 1, tzinfo=UTC)}, "outside the supported range"),
           ({"type": "purchase", "user_id": "u0", "item_id": "a1", "value": float("nan")},
            "value")]
    for body, message in bad:
        with pytest.raises(ValueError, match=message):
            Event(**{"id": "x", "timestamp": datetime(2026, 1, 1, tzinfo=UTC), **body})
        fine = EventIn(type="click", user_id="u0", item_id="a1")
        with pytest.raises(InvalidRequestError, match=rf"(?s)events\[1\].*{message}"):
            engine.track([fine, EventIn(**body)])


def test_a_lone_request_lends_the_idle_cores_to_its_query_embedding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request scored alone in its process may embed its query with
    ``serve.idle_query_threads`` threads; while another request is being scored, with one."""
    import os
    import threading
    from typing import ClassVar

    from shelfwise.config import load_config
    from shelfwise.services import stages
    from shelfwise.text import native

    seen: list[int] = []
    release, holding = threading.Event(), threading.Event()

    class Probe:
        name: ClassVar[str] = "probe"

        def __init__(self, engine: object) -> None:
            pass

        def __call__(self, slate: stages.Slate) -> None:
            seen.append(native._THREADS.get())
            if slate.surface == "similar":  # holds its slot until told
                holding.set()
                release.wait(10)

    monkeypatch.setitem(stages.STAGES, "probe", Probe)
    monkeypatch.setattr(stages, "ORDER", ["candidates", "rules", "rerank", "probe",
                                          "explore", "explain", "impressions"])
    url, bundles = build(two_group_frame(), tmp_path)
    cfg = load_config(env={"SHELFWISE_SERVE__IDLE_QUERY_THREADS": "2",
                           "SHELFWISE_SERVE__STAGES__FEED": '["candidates", "probe", "explain"]',
                           "SHELFWISE_SERVE__STAGES__SIMILAR": '["candidates", "probe", "explain"]'}
                      ).config
    engine = create_app(url, bundles, config=cfg).state.engine
    engine.feed("u0", 3)  # alone
    held = threading.Thread(target=engine.similar, args=("a1", 3))
    held.start()
    assert holding.wait(10)
    engine.feed("u0", 3)  # beside the held one
    release.set()
    held.join(10)
    assert seen == [min(2, os.cpu_count() or 1), min(2, os.cpu_count() or 1), 1]
    assert native._THREADS.get() == 1, "lent only for the request"
