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
