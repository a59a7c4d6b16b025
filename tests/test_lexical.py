"""Lexical likeness of item texts (``lex_*`` feed features): known answers, persistence, posted
items, and a catalog where only the shared words tell the next item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import HitRate, LeaveLastOut
from shelfwise.pipeline import Pipeline
from shelfwise.ranking import lexical
from shelfwise.ranking.lexical import TitleTerms
from shelfwise.retrieval import recommend

TITLES = [
    "Call of Duty: Black Ops III - PlayStation 4",
    "Call of Duty: Infinite Warfare - PlayStation 4",
    "Mario Kart 8 Deluxe - Nintendo Switch",
    "Super Mario Odyssey - Nintendo Switch",
    "Zelda Breath of the Wild - Nintendo Switch",
    "Forza Horizon 4 - Xbox One",
    "蓝牙耳机 无线 降噪",
    "无线 蓝牙耳机 运动款",
]


def test_shared_words_and_pairs_make_items_alike() -> None:
    terms = TitleTerms.fit(TITLES)
    assert terms is not None
    m = terms.matrix
    sims = (m @ m.T).toarray()
    np.testing.assert_allclose(np.diag(sims), 1.0, rtol=1e-5)
    assert sims[0, 1] > 0.5 > sims[0, 5]  # the sequel shares "call of duty" and the pair
    assert sims[2, 3] > sims[2, 5]  # "mario", "nintendo switch"
    assert sims[6, 7] > 0.3  # Chinese words segmented
    # a word of one item only cannot link two items: it weighs nothing
    assert terms._counts(["Forza"]).nnz == 1 and terms._weigh(terms._counts(["Forza"])).nnz == 0


def test_no_text_no_terms() -> None:
    assert TitleTerms.fit(None) is None
    assert TitleTerms.fit(["", "  "]) is None


def test_similarities_equal_the_sparse_product() -> None:
    terms = TitleTerms.fit(TITLES)
    assert terms is not None
    m = terms.matrix
    histories = [np.array([2, 0, 3]), np.array([6]), np.array([], np.int64), np.array([1])]
    items = np.array([1, 4, 5, 7, 0, 1, 3, 99])  # 99: beyond the rows (posted, not added)
    offsets = np.array([0, 3, 4, 6, 8])
    last, best = terms.similarities(histories, items, offsets, recent=2)
    full = (m @ m.T).toarray()
    assert last[:3] == pytest.approx(full[[1, 4, 5], 3])
    assert best[:3] == pytest.approx(full[[1, 4, 5]][:, [0, 3]].max(axis=1))  # last 2 only
    assert last[3] == pytest.approx(full[7, 6])
    assert np.isnan(last[4:6]).all()  # empty history
    assert last[6] == pytest.approx(full[3, 1]) and np.isnan(last[7]) and np.isnan(best[7])


def test_posted_items_and_persistence() -> None:
    terms = TitleTerms.fit(TITLES)
    assert terms is not None
    terms.add(["Call of Duty: WWII - PlayStation 4"])
    assert terms.n_items == len(TITLES) + 1
    last, _ = terms.similarities([np.array([0])], np.array([len(TITLES), 5]), np.array([0, 2]),
                                 recent=10)
    assert last[0] > 0.5 and last[0] > 1.5 * last[1]
    again = TitleTerms.from_arrays(terms.arrays())
    assert (again.matrix != terms.matrix).nnz == 0
    np.testing.assert_array_equal(again.idf, terms.idf)
    # items posted one by one get the rows of one batch, and old rows stay as they were
    more = ["Mario Party - Nintendo Switch", "", "蓝牙耳机 降噪"]
    for text in more:
        again.add([text])
    terms.add(more)
    assert again.n_items == terms.n_items == len(TITLES) + 4
    assert (again.matrix != terms.matrix).nnz == 0
    assert again.matrix[len(TITLES) + 2].nnz == 0  # an empty text has no words


LINES, PER_LINE = 20, 20
WORDS = ["zorb", "quil", "fendra", "maxo", "trelli", "vantu", "gorp", "lumin", "brisk", "okta",
         "pelor", "sundi", "yarro", "wemble", "caddo", "nistra", "holm", "ruvo", "tesk", "amblo"]


def product_line_log(n_users: int = 500, seed: int = 0) -> Interactions:
    """Each shopper buys four items of one product line (lines share two made-up words in
    their titles); popularity is flat: the words are the signal."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        line = int(rng.integers(LINES))
        for k in rng.choice(PER_LINE, size=4, replace=False):
            rows.append((f"u{u}", f"i{line}_{k}"))
    text = {f"i{line}_{k}": f"{WORDS[line]} {WORDS[(line + 7) % LINES]}x edition {k} deluxe"
            for line in range(LINES) for k in range(PER_LINE)}
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]),
                                   item_text=text)


CONFIG = {
    "generators": [{"name": "popularity", "params": {"half_life_days": None},
                    "candidates": LINES * PER_LINE}],
    "min_groups": 50, "tune_blend": False,
    "ranker": {"n_estimators": 60, "min_child_samples": 20, "early_stopping_rounds": None}}


@pytest.fixture(scope="module")
def lines() -> Interactions:
    return product_line_log()


def hit_rate(pipe: Pipeline, data: Interactions) -> float:
    split = LeaveLastOut().split(data)
    reco, _ = recommend(pipe, split.test.histories, 10)
    return HitRate(10).calc(reco, split.test.targets)


def test_shared_words_find_the_next_item_of_a_product_line(lines: Interactions,
                                                           tmp_path: Path) -> None:
    train = LeaveLastOut().split(lines).train
    with_words = Pipeline(CONFIG).fit(train)
    without = Pipeline({**CONFIG, "drop_features": ["lex_last_item", "lex_max_history"]}
                       ).fit(train)
    assert without.lexical_ is None and with_words.lexical_ is not None
    hr, hr_without = hit_rate(with_words, lines), hit_rate(without, lines)
    # 17 unseen items of the user's line: ~10/17 by the words, ~10/400 without
    assert hr > 0.4 and hr > hr_without + 0.25
    with_words.save(tmp_path / "pipe")
    loaded = Pipeline.load(tmp_path / "pipe")
    hist = LeaveLastOut().split(lines).test.histories[:50]
    np.testing.assert_array_equal(loaded.score(hist), with_words.score(hist))


def test_a_posted_item_gets_word_features_at_once(lines: Interactions) -> None:
    pipe = Pipeline(CONFIG).fit(lines)
    n = pipe.n_items_
    pipe.add_items([f"{WORDS[3]} {WORDS[10]}x edition 99 deluxe"])  # line 3's words
    assert pipe.lexical_ is not None and pipe.lexical_.n_items == n + 1
    history = np.array([lines.items.get(f"i3_{k}") for k in range(3)])
    lexical = pipe._spec(pipe.generators_, pipe._stats()).lexical
    assert lexical is pipe.lexical_
    last, best = lexical.similarities([history], np.array([n, int(history[0])]),
                                      np.array([0, 2]), recent=10)
    assert best[0] > 0.5 and last[0] > 0.5


def test_refit_ranker_adds_the_words_a_first_fit_dropped(lines: Interactions) -> None:
    train = LeaveLastOut().split(lines).train
    pipe = Pipeline({**CONFIG, "drop_features": ["lex_last_item", "lex_max_history"]},
                    keep_inner=True).fit(train)
    assert pipe.lexical_ is None
    pipe.refit_ranker(CONFIG)
    assert pipe.lexical_ is not None and pipe.ranker_ is not None
    assert {"lex_last_item", "lex_max_history"} <= set(pipe.ranker_.feature_names_)
    assert hit_rate(pipe, lines) > 0.4


def brute_top_cold(terms: TitleTerms, history: np.ndarray, cold: np.ndarray,
                   recent: int) -> dict[int, float]:
    """Every cold item outside the history with a shared word, and its best cosine."""
    full = (terms.matrix @ terms.matrix.T).toarray()
    recent_items = history[-recent:]
    if not len(recent_items):
        return {}
    sims = {int(c): float(full[recent_items, c].max()) for c in cold
            if c not in set(history.tolist())}
    return {c: v for c, v in sims.items() if v > 0}


def test_top_cold_equals_brute_force_and_follows_posted_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    more = ["Call of Duty: Modern Warfare - Xbox One", "Mario Tennis Aces - Nintendo Switch",
            "Halo 5 Guardians - Xbox One", "降噪 蓝牙耳机 头戴式"]
    terms = TitleTerms.fit(TITLES + more)
    assert terms is not None
    cold = np.array([1, 3, 4, 5, 7, 8, 9, 10, 11])
    histories = [np.array([0]), np.array([2, 6]), np.array([], np.int64), np.array([5, 3, 1]),
                 np.array([99])]
    for k, recent in ((3, 10), (10, 1)):
        got = terms.top_cold(histories, cold, k, recent)
        assert got.shape == (len(histories), k)
        for r, h in enumerate(histories):
            want = brute_top_cold(terms, h[h < terms.n_items], cold, recent)
            found = [int(i) for i in got[r] if i >= 0]
            assert len(found) == min(k, len(want)) and set(found) <= set(want)
            # best first, and nothing left out scores above what was taken
            sims = [want[i] for i in found]
            assert sims == sorted(sims, reverse=True)
            assert not found or max((v for i, v in want.items() if i not in found),
                                    default=0.0) <= sims[-1] + 1e-6
    assert set(terms.top_cold(histories, cold, 3, 10)[0, :2].tolist()) == {1, 8}  # Call of Duty
    whole = terms.top_cold(histories, cold, 3, 10)
    monkeypatch.setattr(lexical, "CHUNK_CELLS", 1)  # one history per chunk: same answer
    np.testing.assert_array_equal(terms.top_cold(histories, cold, 3, 10), whole)
    assert 3 in terms.top_cold([np.array([3])], cold, 5, 10, exclude=False)[0]
    # posted items are cold: they join as a tail block, the fitted block stays
    base = terms._cold_blocks[0][1]
    terms.add(["Call of Duty: Vanguard - PlayStation 4"])
    posted = terms.n_items - 1
    got = terms.top_cold([np.array([0])], np.r_[cold, posted], 2, 10)
    assert posted in got[0] and terms._cold_blocks[0][1] is base
    fresh = TitleTerms.from_arrays(terms.arrays())
    np.testing.assert_array_equal(got, fresh.top_cold([np.array([0])], np.r_[cold, posted], 2,
                                                      10))
    # a changed cold set (retraining) is rebuilt from scratch
    assert terms.top_cold([np.array([0])], np.array([1]), 2, 10)[0].tolist() == [1, -1]


def test_cold_words_bring_cold_items_of_the_line_into_the_candidates(
        lines: Interactions) -> None:
    narrow = {**CONFIG, "generators": [{"name": "popularity",
                                        "params": {"half_life_days": None}, "candidates": 10}]}
    train = LeaveLastOut().split(lines).train
    with_words = Pipeline({**narrow, "cold_words": 40}).fit(train)
    without = Pipeline(narrow).fit(train)
    assert with_words.ranker_ is not None
    assert "lex_cold_rank" in with_words.ranker_.feature_names_
    assert with_words.report_["candidate_recall"] > without.report_["candidate_recall"] + 0.2
    assert hit_rate(with_words, lines) > hit_rate(without, lines) + 0.1
    # an item posted after training is cold: the words make it a candidate of its line
    with_words.add_items([f"{WORDS[3]} {WORDS[10]}x edition 99 deluxe"])
    history = np.array([lines.items.get(f"i3_{k}") for k in range(3)])
    scores = with_words.score([history])[0]
    assert scores[with_words.n_items_ - 1] >= 0  # candidates score >= 0, the rest < 0


def test_served_pipeline_lists_a_posted_item_by_its_words(tmp_path: Path,
                                                         lines: Interactions) -> None:
    """End to end: `train` with ``cold_words``, serve, post an item of a product line; a
    shopper of that line gets it in the feed (no generator embeds text here), explained."""
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from shelfwise.bundle import GeneratorSpec, TrainConfig, train_bundle
    from shelfwise.data.loading import interactions_from_store
    from shelfwise.data.schemas import Event, EventType, Item
    from shelfwise.ranking.config import PipelineConfig
    from shelfwise.serving import create_app
    from shelfwise.storage import open_store

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    text = lines.item_text
    assert text is not None
    store.upsert_items([Item(id=str(i), title=text[k]) for k, i in enumerate(lines.items.ids)])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.add_events([Event(id=f"{u}-{k}", type=EventType.VIEW,
                            user_id=str(lines.users.external(u)),
                            item_id=str(lines.items.external(int(i))),
                            timestamp=t0 + timedelta(minutes=k))
                      for u, hist in enumerate(lines.histories()) for k, i in enumerate(hist)])
    pipeline = PipelineConfig.from_dict({
        **CONFIG, "cold_words": 40,
        "generators": [{"name": "popularity", "params": {"half_life_days": None},
                        "candidates": 10}]})
    cfg = TrainConfig(generators=[GeneratorSpec(name="popularity")], pipeline=pipeline,
                      tune_weights=False)
    train_bundle(interactions_from_store(store), tmp_path / "bundles", cfg)
    store.close()
    client = TestClient(create_app(url, tmp_path / "bundles"))
    r = client.post("/v1/items", json={"items": [
        {"id": "new-3", "title": f"{WORDS[3]} {WORDS[10]}x edition 99 deluxe"}]})
    assert r.status_code == 200, r.text
    shoppers = [str(lines.users.external(u)) for u, hist in enumerate(lines.histories())
                if str(lines.items.external(int(hist[0]))).startswith("i3_")]
    assert shoppers
    shown = 0
    for user in shoppers:
        r = client.get(f"/v1/users/{user}/feed", params={"n": 20})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert all(i["explanation"]["text"] for i in items)
        shown += "new-3" in [i["item_id"] for i in items]
    assert shown >= 0.8 * len(shoppers)
