"""The two-stage pipeline as the served feed: trained into the bundle, loaded by the server,
explained per item, and robust to items posted after training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shelfwise.bundle import GeneratorSpec, TrainConfig, load_bundle, train_bundle
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.ranking.config import PipelineConfig
from shelfwise.serving import create_app
from shelfwise.storage import open_store
from tests.test_pipeline import CONFIG, two_segment_log


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[TestClient, Path, dict[str, list[str]]]:
    tmp = tmp_path_factory.mktemp("pipeline_feed")
    log = two_segment_log(300, 300)
    seqs = {str(log.users.external(u)): [str(log.items.external(int(i))) for i in hist]
            for u, hist in enumerate(log.histories())}
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = open_store(url)
    # titles carry no chain: the words would tell the next chain item (lex_* features)
    store.upsert_items([Item(id=str(i), title=f"item {k}") for k, i in enumerate(log.items.ids)])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.add_events([Event(id=f"{u}-{k}", type=EventType.VIEW, user_id=u, item_id=i,
                            timestamp=t0 + timedelta(minutes=k))
                      for u, seq in seqs.items() for k, i in enumerate(seq)])
    cfg = TrainConfig(generators=[GeneratorSpec(name="cooccurrence"),
                                  GeneratorSpec(name="popularity", weight=0.05)],
                      pipeline=PipelineConfig.from_dict(CONFIG), tune_weights=False)
    train_bundle(interactions_from_store(store), tmp / "bundles", cfg)
    store.close()
    return TestClient(create_app(url, tmp / "bundles")), tmp / "bundles", seqs


def feed(client: TestClient, user: str, n: int = 5) -> list[dict[str, object]]:
    r = client.get(f"/v1/users/{user}/feed", params={"n": n})
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


def test_the_served_feed_is_the_pipeline(served: tuple[TestClient, Path, dict[str, list[str]]]
                                         ) -> None:
    client, bundles, _ = served
    bundle = load_bundle(bundles)
    assert bundle.pipeline is not None and bundle.pipeline.mode_ == "ranker"
    assert bundle.manifest.pipeline is not None and bundle.manifest.pipeline["mode"] == "ranker"
    rec = client.app.state.recommender  # type: ignore[attr-defined]
    user = "b3"
    hist = rec.history(user)
    scores = bundle.pipeline.score([hist])[0]
    scores[np.unique(hist)] = -np.inf
    expect = [bundle.items.external(int(i)) for i in np.argsort(-scores, kind="stable")[:5]]
    assert [i["item_id"] for i in feed(client, user)] == expect


def _main(why: dict[str, Any]) -> str:
    """The part (generator or feature group) that added most to the ranker's score."""
    parts: dict[str, float] = why["parts"]
    return max(parts, key=parts.__getitem__)


def test_each_segment_gets_what_its_source_knows_with_that_reason(
        served: tuple[TestClient, Path, dict[str, list[str]]]) -> None:
    client, _, seqs = served
    walked: dict[tuple[str, str], int] = {}  # consecutive pairs other shoppers made
    for s in seqs.values():
        for x, y in pairwise(s):
            walked[x, y] = walked.get((x, y), 0) + 1
    chain_next, popular = [], []
    for u in [f"b{k}" for k in range(60)]:
        last = seqs[u][-1]  # "c<chain>_<pos>": the answer is the next position
        c, p = last[1:].split("_")
        answer = f"c{c}_{int(p) + 1}"
        if walked.get((last, answer), 0) < 2:
            continue  # nobody else went on from here: nothing to learn it from
        top = feed(client, u)[0]
        why = top["explanation"]
        chain_next.append(top["item_id"] == answer and _main(why) == "cooccurrence"
                          and why["reason"] == "similar_to" and why["source"] == "pipeline")
    assert len(chain_next) >= 20
    for u in [f"a{k}" for k in range(30)]:
        top = feed(client, u)[0]
        popular.append(str(top["item_id"]).startswith("h")
                       and _main(top["explanation"]) != "cooccurrence")
    assert np.mean(chain_next) >= 0.9, chain_next
    assert np.mean(popular) >= 0.9, popular


def test_items_posted_after_training_do_not_break_the_feed(
        served: tuple[TestClient, Path, dict[str, list[str]]]) -> None:
    client, _, _ = served
    r = client.post("/v1/items", json={"items": [{"id": "new-1", "title": "item new"}]})
    assert r.status_code == 200, r.text
    items = feed(client, "b5", n=10)
    assert len(items) == 10 and "new-1" not in [i["item_id"] for i in items[:5]]
    cold = client.get("/v1/users/nobody/feed").json()
    assert cold["cold_start"] is True


def test_train_config_toml_turns_the_pipeline_on(tmp_path: Path) -> None:
    from shelfwise.config import load_config
    from shelfwise.exceptions import ConfigError

    def load_train_config(path: Path) -> TrainConfig:
        return load_config(path, env={}).config.train

    path = tmp_path / "train.toml"
    path.write_text('[[generators]]\nname = "cooccurrence"\n\n[[generators]]\n'
                    'name = "popularity"\n\n[pipeline]\ncandidates_per_generator = 30\n'
                    '[[pipeline.generators]]\nname = "cooccurrence"\n'
                    '[[pipeline.generators]]\nname = "ease"\ncandidates = 0\n')
    cfg = load_train_config(path)
    assert cfg.pipeline is not None
    assert [g.key for g in cfg.pipeline.generators] == ["cooccurrence", "ease"]
    assert TrainConfig().pipeline is None, "the blend stays the default feed"
    path.write_text('[[generators]]\nname = "popularity"\n\n[pipeline]\n'
                    '[[pipeline.generators]]\nname = "no-such-model"\n')
    with pytest.raises(ConfigError,
                       match=r"train\.pipeline\.generators\[0\]\.name.*no-such-model"):
        load_train_config(path)


def test_shelfwise_train_gives_the_pipeline_the_catalog_categories(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shelfwise.cli.main import app
    from shelfwise.data.loading import item_category_codes

    log = two_segment_log(200, 200)
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    store.upsert_items([Item(id=str(i), title=f"item {i}",
                             category=["Shop", "Hits" if str(i).startswith("h") else "Chains"])
                        for i in log.items.ids])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.add_events([Event(id=f"{u}-{k}", type=EventType.VIEW, user_id=str(log.users.external(u)),
                            item_id=str(log.items.external(int(i))),
                            timestamp=t0 + timedelta(minutes=k))
                      for u, hist in enumerate(log.histories()) for k, i in enumerate(hist)])
    codes = item_category_codes(store, interactions_from_store(store).items)
    assert codes is not None and set(codes.tolist()) == {0, 1}
    config = tmp_path / "train.toml"
    config.write_text(
        '[[generators]]\nname = "cooccurrence"\n\n[[generators]]\nname = "popularity"\n\n'
        '[pipeline]\ncandidates_per_generator = 20\nmin_groups = 50\ntune_blend = false\n'
        '[[pipeline.generators]]\nname = "cooccurrence"\n'
        'params = {window = 1, directed = true, popularity_tiebreak = false}\n'
        '[[pipeline.generators]]\nname = "popularity"\n')
    store.close()
    res = CliRunner().invoke(app, ["train", "--store", url, "--bundles", str(tmp_path / "b"),
                                   "--config", str(config)])
    assert res.exit_code == 0, res.output
    pipe = load_bundle(tmp_path / "b").pipeline
    assert pipe is not None and pipe.stats_ is not None and pipe.stats_.categories is not None
    assert "cat_affinity" in pipe.report_["feature_gain_share"]


def test_an_experiment_variant_turns_the_pipeline_off(
        served: tuple[TestClient, Path, dict[str, list[str]]]) -> None:
    client, _, seqs = served
    r = client.post("/v1/experiments", json={"id": "pipe", "surfaces": ["feed"], "variants": [
        {"name": "pipeline", "share": 0.5},
        {"name": "blend", "share": 0.5, "overrides": {"pipeline": False}}]})
    assert r.status_code == 201
    client.post("/v1/experiments/pipe/start")
    sources: dict[str, set[str]] = {"pipeline": set(), "blend": set()}
    for user in list(seqs)[:30]:
        body = client.get(f"/v1/users/{user}/feed", params={"n": 5}).json()
        sources[body["experiments"]["pipe"]] |= {i["explanation"]["source"]
                                                 for i in body["items"]}
    client.post("/v1/experiments/pipe/stop")
    assert sources["pipeline"] == {"pipeline"}
    assert sources["blend"] and "pipeline" not in sources["blend"]
