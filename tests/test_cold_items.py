"""Cold items in the two-stage pipeline: cold candidates from text, features that read item
popularity and text neighbours, items posted after training, and older pipelines loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.pipeline import GAP, Pipeline
from shelfwise.ranking.features import ItemStats
from shelfwise.retrieval import text_items
from shelfwise.retrieval.spec import GeneratorSpec
from tests.test_sasrec import WordHashEncoder

TOPICS = {"g": "gaming console controller joystick", "k": "kitchen knife pan skillet"}
ENCODER = "test-word-hash"
NEW_FEATURES = ["item_position", "history_cold_share", "history_pop", "sem_max_history"]


@pytest.fixture(autouse=True)
def word_hash_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The semantic generator's encoder, by name, without loading a transformer."""
    monkeypatch.setitem(text_items._ENCODERS, ENCODER, WordHashEncoder())


def topic_log(n_users: int = 400, seed: int = 0) -> Interactions:
    """Two topics of 12 items; each user stays in one and takes 6 of its items. ``g_new``
    (gaming words in its title) and ``k_new`` have text but no interactions at all."""
    rng = np.random.default_rng(seed)
    texts = {f"{t}{k}": f"{TOPICS[t]} model {t}{k}" for t in TOPICS for k in range(12)}
    texts["g_new"] = "gaming console controller joystick deluxe"
    texts["k_new"] = "kitchen knife pan skillet deluxe"
    rows = []
    for u in range(n_users):
        topic = "gk"[u % 2]
        for step, k in enumerate(rng.choice(12, size=6, replace=False)):
            rows.append((f"u{u}", f"{topic}{k}", float(step)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    ids = sorted(texts)
    return Interactions.from_frame(frame, items=IdMap(ids), item_text=texts,
                                   has_time=False)


def config(cold: int | None, **extra: Any) -> dict[str, Any]:
    return {"generators": [
        {"name": "cooccurrence", "params": {"popularity_tiebreak": False}, "candidates": 3},
        {"name": "popularity", "params": {"half_life_days": None}, "candidates": 3},
        {"name": "semantic", "params": {"encoder": ENCODER, "center": False}, "candidates": 0,
         "cold_candidates": cold}],
        "min_groups": 20, "tune_blend": False,
        "ranker": {"n_estimators": 30, "min_child_samples": 5, "early_stopping_rounds": None},
        **extra}


@pytest.fixture(scope="module")
def log() -> Interactions:
    return topic_log()


def gaming_history(log: Interactions) -> np.ndarray:
    return np.asarray([log.items.index(f"g{k}") for k in (0, 1, 2)], np.int64)


def candidate_rows(pipe: Pipeline, history: np.ndarray) -> dict[int, dict[str, float]]:
    cands, x, names = pipe.candidate_features([history])
    return {int(i): dict(zip(names, x[k], strict=True)) for k, i in enumerate(cands.items)}


def test_zero_interaction_item_enters_the_candidates_by_its_text(log: Interactions) -> None:
    new = log.items.index("g_new")
    assert np.bincount(log.item_idx, minlength=log.n_items)[new] == 0
    hist = gaming_history(log)
    with_cold = Pipeline(config(1)).fit(log)
    rows = candidate_rows(with_cold, hist)
    assert new in rows  # the best cold item for a gaming history: the untouched gaming title
    assert rows[new]["semantic_cold_rank"] == 1.0
    assert rows[new]["pop"] == 0.0 and np.isnan(rows[new]["item_position"])
    assert rows[new]["sem_max_history"] > 0.5 and rows[new]["history_cold_share"] == 0.0
    assert log.items.index("k_new") not in rows
    # without the cold quota no source proposes it: semantic adds features only
    without = Pipeline(config(None)).fit(log)
    assert new not in candidate_rows(without, hist)
    assert "semantic_cold_rank" not in without.feature_names(
        without._spec(without.generators_, without._stats()))
    # a candidate ranks above every other item, so it is in the top-k of the full ranking
    scores = with_cold.score([hist])[0]
    assert scores[new] >= 0.0 and np.sort(scores)[::-1][len(rows)] <= -GAP
    # the cold boost moves cold candidates up the ranker's order, and only them
    boosted = Pipeline(config(1, cold_boost=100.0))
    boosted.generators_, boosted.ranker_ = with_cold.generators_, with_cold.ranker_
    boosted.stats_, boosted.mode_ = with_cold.stats_, with_cold.mode_
    boosted.lexical_ = with_cold.lexical_
    top = np.argsort(-boosted.score([hist])[0])
    seen = set(hist.tolist())
    assert next(i for i in np.argsort(-scores) if i not in seen) != new
    assert next(i for i in top if i not in seen) == new
    order = [i for i in np.argsort(-scores) if i in rows and i != new]
    assert [i for i in top if i in rows and i != new] == order


def test_item_posted_after_training_is_scored(log: Interactions) -> None:
    pipe = Pipeline(config(2)).fit(log)
    n = pipe.n_items_
    pipe.add_items(["gaming console controller joystick turbo"])
    assert pipe.n_items_ == n + 1
    hist = gaming_history(log)
    rows = candidate_rows(pipe, hist)
    assert n in rows  # beyond every trained index, proposed by its text alone
    assert rows[n]["pop"] == 0.0 and np.isnan(rows[n]["cooccurrence_score"])
    assert rows[n]["semantic_cold_rank"] in (1.0, 2.0)
    scores = pipe.score([hist, np.asarray([log.items.index("k0")])])
    assert scores.shape == (2, n + 1) and np.isfinite(scores).all()
    assert scores[0, n] >= 0.0  # a candidate of the gaming user


def test_shared_generators_are_not_grown_twice(log: Interactions) -> None:
    pipe = Pipeline(config(1)).fit(log)
    pipe.shared_ = {"semantic": "semantic"}  # as when the bundle's generator is reused
    n = pipe.n_items_
    pipe.add_items(["gaming deluxe"])
    assert pipe.n_items_ == n


def test_item_statistics_know_positions_and_pad_posted_items() -> None:
    frame = pd.DataFrame({"user_id": ["u", "u", "u", "v", "v"],
                          "item_id": ["a", "b", "c", "c", "a"]})
    data = Interactions.from_frame(frame, items=IdMap(["a", "b", "c", "d"]), has_time=False)
    stats = ItemStats.fit(data)
    # a: first of u (0), last of v (1); b: middle (0.5); c: last of u, first of v; d: none
    np.testing.assert_allclose(stats.position[:3], [0.5, 0.5, 0.5])  # type: ignore[index]
    assert stats.position is not None and np.isnan(stats.position[3])
    assert stats.counts(6).tolist() == [2, 1, 2, 0, 0, 0]
    taken = ItemStats.take(stats.popularity, np.array([0, 5]), -1.0)
    assert taken.tolist() == [pytest.approx(np.log1p(2)), -1.0]
    back = ItemStats.from_arrays(stats.arrays())
    np.testing.assert_array_equal(back.position, stats.position)


def test_pipeline_saved_before_the_new_features_still_serves(tmp_path: Path,
                                                              log: Interactions) -> None:
    """A ranker reads the columns it was trained on: a pipeline from before these features
    (no ``position`` statistics, no new columns) loads and scores as it did."""
    old = Pipeline(config(None, drop_features=NEW_FEATURES)).fit(log)
    hist = [gaming_history(log), np.asarray([log.items.index("k3")])]
    expected = old.score(hist)
    old.save(tmp_path / "pipe")
    meta = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())
    meta["config"]["drop_features"] = []  # the old version had nothing to drop
    for g in meta["config"]["generators"]:
        g.pop("cold_candidates")
    (tmp_path / "pipe" / "pipeline.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "pipe" / "items.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "position"}
    np.savez(tmp_path / "pipe" / "items.npz", **arrays)
    loaded = Pipeline.load(tmp_path / "pipe")
    np.testing.assert_array_equal(loaded.score(hist), expected)
    # a ranker that needs a feature this data cannot give says so
    assert loaded.ranker_ is not None
    loaded.ranker_.feature_names_ = [*loaded.ranker_.feature_names_[:-1], "cat_affinity"]
    with pytest.raises(ConfigError, match=r"cat_affinity.*retrain"):
        loaded.score(hist)


def test_cold_candidates_are_validated_and_refit_keeps_generators(log: Interactions) -> None:
    with pytest.raises(ValueError, match="cold_candidates"):
        GeneratorSpec(name="semantic", cold_candidates=-1)
    pipe = Pipeline(config(None), keep_inner=True).fit(log)
    gens = dict(pipe.generators_)
    pipe.refit_ranker(config(2))  # a second-stage setting: same generators, more candidates
    assert pipe.generators_ == gens
    assert log.items.index("g_new") in candidate_rows(pipe, gaming_history(log))


def test_cold_settings_survive_save_and_load(tmp_path: Path, log: Interactions) -> None:
    pipe = Pipeline(config(2, cold_boost=0.3)).fit(log)
    pipe.save(tmp_path / "pipe")
    loaded = Pipeline.load(tmp_path / "pipe")
    assert loaded.config == pipe.config and loaded.config.cold_boost == 0.3
    hist = [gaming_history(log), np.asarray([log.items.index("k1"), log.items.index("k2")])]
    np.testing.assert_array_equal(loaded.score(hist), pipe.score(hist))
