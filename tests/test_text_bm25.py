"""BM25Index: known answers for English stemming, Chinese segmentation, n-grams, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.exceptions import NotFittedError
from shelfwise.text.bm25 import BM25Config, BM25Index

DOCS = [
    "Shoe for runners, lightweight mesh",
    "Ceramic coffee mug 12 oz",
    "无线蓝牙耳机 主动降噪",
    "儿童运动鞋 透气防滑",
    "Claw hammer with fiberglass handle",
    "",
]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index().fit(DOCS)


def test_english_stemming_matches_inflections(index: BM25Index) -> None:
    assert index.tokenize("Running Shoes") == ["run", "shoe"]
    ids, scores = index.search("running shoes", k=3)
    assert ids.tolist() == [0]
    assert scores[0] > 0
    # without stemming "shoes" never meets "shoe"
    plain = BM25Index(stem=False).fit(DOCS)
    assert plain.search("running shoes")[0].size == 0


def test_chinese_segmentation_finds_chinese_titles(index: BM25Index) -> None:
    assert "蓝牙" in index.tokenize("蓝牙耳机")
    assert index.search("蓝牙耳机")[0].tolist() == [2]
    assert index.search("运动鞋")[0].tolist() == [3]
    assert index.search("hammer 降噪", k=5)[0].tolist() in ([2, 4], [4, 2])


def test_score_all_or_selected_documents(index: BM25Index) -> None:
    full = index.score("coffee mug")
    assert full.shape == (len(DOCS),) and full.dtype == np.float32
    assert int(np.argmax(full)) == 1
    np.testing.assert_array_equal(index.score("coffee mug", [4, 1]), full[[4, 1]])


def test_stop_words_and_unknown_words_score_zero(index: BM25Index) -> None:
    assert index.tokenize("the and of") == []
    assert not index.score("the").any()
    assert not index.score("zzzqqq").any()
    assert index.search("", k=3)[0].size == 0


def test_char_ngrams_rescue_a_misspelling() -> None:
    assert BM25Index().fit(DOCS).search("hamer")[0].size == 0
    fuzzy = BM25Index(char_ngrams=3).fit(DOCS)
    assert fuzzy.search("hamer", k=1)[0].tolist() == [4]
    assert fuzzy.search("running shoes", k=1)[0].tolist() == [0]


def test_search_orders_by_score_and_caps_k() -> None:
    ix = BM25Index().fit(["red mug", "red red mug", "blue mug", "green lamp"])
    ids, scores = ix.search("red mug", k=2)
    assert ids.tolist() == [1, 0]
    assert scores[0] >= scores[1]


def test_config_round_trip_and_errors() -> None:
    cfg = BM25Config(k1=1.2, char_ngrams=2)
    assert BM25Config.from_config(cfg.to_config()) == cfg
    assert BM25Index(cfg).config.k1 == 1.2
    with pytest.raises(NotFittedError):
        BM25Index().score("x")
    with pytest.raises(ValueError):
        BM25Index().fit([])
    with pytest.raises(TypeError):
        BM25Index().fit("a single string")
    with pytest.raises(ValueError):
        BM25Config(bogus=1)  # type: ignore[call-arg]
