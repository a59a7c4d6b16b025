"""BM25Index: known answers for English stemming, Chinese segmentation, n-grams, edge cases;
incremental adds equal a refit, and scores equal bm25s's on real titles."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.exceptions import NotFittedError
from shelfwise.text.bm25 import BM25Config, BM25Index, put_growing

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


METHODS = ["lucene", "robertson", "atire", "bm25l", "bm25+"]


@pytest.mark.parametrize("method", METHODS)
def test_add_scores_as_a_refit_on_everything(method: str) -> None:
    more = ["Running shoe, trail edition", "Stainless coffee mug", "蓝牙音箱 便携", "", "mug mug"]
    queries = ["running shoes", "coffee mug", "蓝牙", "hamer", "mug mug tea", "zzz"]
    grown = BM25Index(method=method, char_ngrams=3).fit(DOCS[:3])
    for q in queries:  # queried before the add: cached weights must not survive it
        grown.score(q)
    grown.add(DOCS[3:]).add(more[:2]).add([]).add(more[2:])
    fresh = BM25Index(method=method, char_ngrams=3).fit(DOCS + more)
    assert grown.n_docs == fresh.n_docs == len(DOCS) + len(more)
    for q in queries:
        np.testing.assert_allclose(grown.word_score(q), fresh.word_score(q), rtol=1e-5)
        np.testing.assert_allclose(grown.ngram_score(q), fresh.ngram_score(q), rtol=1e-5)
        assert grown.unknown_words(q) == fresh.unknown_words(q)


def test_add_touches_only_the_new_documents_terms() -> None:
    ix = BM25Index().fit(["red mug", "blue lamp", "green lamp"])
    lamp, mug = ix.words_.vocab["lamp"], ix.words_.vocab["mug"]
    lamp_docs = ix.words_._docs[lamp]
    ix.add(["red mug"])
    assert ix.words_._docs[lamp] is lamp_docs, "a term the new document lacks is not rebuilt"
    assert ix.words_.postings(lamp)[0].tolist() == [1, 2]
    assert ix.words_.postings(mug)[0].tolist() == [0, 3]
    assert ix.search("mug")[0].tolist() == [0, 3]
    with pytest.raises(NotFittedError):
        BM25Index().add(["x"])
    with pytest.raises(TypeError):
        ix.add("a single string")


def test_put_growing_amortises_appends() -> None:
    buf = np.zeros(0, np.int64)
    sizes = set()
    for i in range(100):
        buf = put_growing(buf, i, np.array([i]))
        sizes.add(len(buf))
    assert buf[:100].tolist() == list(range(100))
    assert len(sizes) < 15, "capacity grows geometrically, not by one"
    rows = put_growing(np.ones((2, 3)), 2, np.zeros((1, 3)))
    assert rows.shape[1] == 3 and rows[:3].sum() == 6


def test_scores_equal_bm25s_on_real_titles() -> None:
    """The hand-written index gives the eager ``bm25s`` scores on Home Depot titles."""
    import bm25s
    import pandas as pd

    from tests.conftest import require_shared

    frame = pd.read_csv(require_shared("home_depot", "judgements.csv"))
    titles = frame["product_title"].drop_duplicates().head(400).tolist()
    queries = frame["search_term"].drop_duplicates().head(300).tolist()
    for method in METHODS:
        ix = BM25Index(method=method, char_ngrams=3).fit(titles)
        for tokens, score in ((ix.tokenize, ix.word_score), (ix.ngrams, ix.ngram_score)):
            ref = bm25s.BM25(k1=1.5, b=0.75, method=method)
            ref.index([tokens(t) for t in titles], show_progress=False)
            for q in queries:
                ids = ref.get_tokens_ids(tokens(q))
                want = (ref.get_scores_from_ids(ids) if ids
                        else np.zeros(len(titles), np.float32))
                np.testing.assert_allclose(score(q), want, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{method}: {q!r}")


def test_gram_counts_equal_counting_each_documents_own_ngrams() -> None:
    texts = ["stainless steel kettle", "steel toe boots", "porcelain floor tile 12x12",
             "无线蓝牙耳机", "kettlebell 12 kg", "tile spacers", ""]
    index = BM25Index(char_ngrams=3).fit(texts)
    docs = np.array([6, 0, 2, 4, 1, 3, 5])
    for word in ("porcelian", "kettel", "steal", "蓝牙", "zzz"):
        grams = set(index.ngrams(word))
        want = [len(grams & set(index.ngrams(texts[d]))) for d in docs]
        np.testing.assert_array_equal(index.gram_counts(docs, grams), want)
