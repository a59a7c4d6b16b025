"""Growing the search index and the feature builder in place: after fit(A) + add(B) every
score and every feature equals that of a fresh build on A + B."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.exceptions import ConfigError
from shelfwise.search import FEATURES, FeatureBuilder, SearchIndex, UserContext

TITLES = [
    "Hampton Bay 52 in. Ceiling Fan in White",
    "Claw hammer with fiberglass handle",
    "Cordless drill driver 18V",
    "Stainless steel kitchen sink",
    "立式电风扇 白色",
]
MORE = [
    "Hampton Bay Ceiling Light Kit",
    "Ceramic coffee mug 12 oz",
    "Celling medallion, white plastic",  # a near spelling of "ceiling" that is new
    "",
    "Drillmaster cordless impact driver",  # a word that extends the prefix "drill"
    "无线蓝牙耳机 白色",
]
CATS = [("Home", "Lighting", "Fans"), ("Tools", "Hand Tools"), ("Tools", "Power Tools"),
        ("Home", "Kitchen"), ("Home", "Fans")]
MORE_CATS = [("Home", "Lighting"), ("Home", "Kitchen", "Mugs"), ("Home", "Decor"), (),
             ("Tools", "Power Tools"), ("Electronics",)]
BRANDS = ["Hampton Bay", None, "Ryobi", "Kohler", "美的"]
MORE_BRANDS = ["Hampton Bay", None, "Acme", None, "Ryobi", "小米"]
QUERIES = ["hampton bay celing fan 52", "cordless drill", "hamer", "drill", "电风扇 白色",
           "white", "zzzz qqq", "ceiling", "celling mug"]


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _encode(q: str) -> np.ndarray:
    return _vectors(1, len(q))[0]


def _dense_pair() -> tuple[SearchIndex, SearchIndex]:
    vecs = _vectors(len(TITLES) + len(MORE), 0)
    grown = SearchIndex().fit(TITLES, vecs[:len(TITLES)], _encode)
    fresh = SearchIndex().fit(TITLES + MORE, vecs, _encode)
    for q in QUERIES:  # warm every query-time cache before the add
        grown.retrieve(q)
    grown.add(MORE[:2], vecs[len(TITLES):len(TITLES) + 2]).add(MORE[2:], vecs[len(TITLES) + 2:])
    return grown, fresh


def test_added_items_score_as_in_a_fresh_index() -> None:
    grown, fresh = _dense_pair()
    assert grown.n_docs == fresh.n_docs == len(TITLES) + len(MORE)
    assert grown.texts == fresh.texts
    for q in QUERIES:
        a, b = grown.all_scores(q), fresh.all_scores(q)
        assert a.keys() == b.keys() == {"bm25", "ngram", "dense"}
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=f"{name} {q!r}")
        ra, rb = grown.retrieve(q), fresh.retrieve(q)
        np.testing.assert_array_equal(ra.index, rb.index)
        np.testing.assert_allclose(ra.fused, rb.fused, rtol=1e-5)
    cand = grown.retrieve("ceramic mug")
    assert int(cand.index[cand.order()[0]]) == len(TITLES) + 1, "an added item is found"


def test_add_checks_vectors_against_the_kind_of_index() -> None:
    lexical = SearchIndex().fit(TITLES)
    with pytest.raises(ConfigError, match="lexical"):
        lexical.add(MORE, _vectors(len(MORE), 1))
    dense = SearchIndex().fit(TITLES, _vectors(len(TITLES), 0), _encode)
    with pytest.raises(ConfigError, match="dense"):
        dense.add(MORE)
    with pytest.raises(ConfigError, match="shape"):
        dense.add(MORE, _vectors(len(MORE) - 1, 1))
    with pytest.raises(TypeError):
        lexical.add("a single title")
    assert lexical.add([]).n_docs == len(TITLES)
    with pytest.raises(ConfigError, match="not fitted"):
        SearchIndex().add(MORE)


def test_dense_rows_grow_without_touching_the_callers_array() -> None:
    vecs = _vectors(len(TITLES), 0)
    kept = vecs.copy()
    index = SearchIndex().fit(TITLES, vecs, _encode)
    for i in range(20):
        index.add([f"item {i}"], _vectors(1, 100 + i))
    np.testing.assert_array_equal(vecs, kept)
    assert index.vectors is not None and index.vectors.shape == (len(TITLES) + 20, 8)
    np.testing.assert_array_equal(index.vectors[-1], _vectors(1, 119)[0])


def _builders() -> tuple[SearchIndex, FeatureBuilder, SearchIndex, FeatureBuilder]:
    n = len(TITLES)
    vecs, prof = _vectors(n + len(MORE), 0), _vectors(n + len(MORE), 7)
    pop, more_pop = np.arange(n, dtype=float), np.full(len(MORE), 2.0)
    grown = SearchIndex().fit(TITLES, vecs[:n], _encode)
    gb = FeatureBuilder(grown, TITLES, CATS, BRANDS, pop, prof[:n])
    for q in QUERIES:  # fills the word-expansion cache with the old vocabulary
        gb.build(q, grown.retrieve(q))
    gb.add(MORE[:3], MORE_CATS[:3], MORE_BRANDS[:3], more_pop[:3], prof[n:n + 3])
    grown.add(MORE[:3], vecs[n:n + 3])
    grown.add(MORE[3:], vecs[n + 3:])  # index first this time, then the builder
    gb.add(MORE[3:], MORE_CATS[3:], MORE_BRANDS[3:], more_pop[3:], prof[n + 3:])
    fresh = SearchIndex().fit(TITLES + MORE, vecs, _encode)
    fb = FeatureBuilder(fresh, TITLES + MORE, CATS + MORE_CATS, BRANDS + MORE_BRANDS,
                        np.r_[pop, more_pop], prof)
    return grown, gb, fresh, fb


def test_features_after_add_equal_a_fresh_build() -> None:
    grown, gb, fresh, fb = _builders()
    everything = np.arange(fresh.n_docs)
    user = UserContext(profile=_vectors(1, 3)[0], history=np.array([0, 5, 7, 5]))
    for q in QUERIES:
        for u in (None, user):
            a = gb.build(q, grown.candidates(everything, query=q), u)
            b = fb.build(q, fresh.candidates(everything, query=q), u)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=q)
    col = FEATURES.index("fuzzy_coverage")
    x = gb.build("celing", grown.candidates(everything, query="celing"))
    assert x[len(TITLES) + 2, col] == 1.0, "the cached expansion of 'celing' learnt 'celling'"
    x = gb.build("drill", grown.candidates(everything, query="drill"))
    assert x[len(TITLES) + 4, col] == 1.0, "and that of 'drill' the prefix 'drillmaster'"


def test_feature_builder_add_checks_its_inputs() -> None:
    index = SearchIndex().fit(TITLES)
    plain = FeatureBuilder(index, TITLES)
    with pytest.raises(ConfigError, match="profile_vectors"):
        plain.add(MORE, profile_vectors=_vectors(len(MORE), 0))
    with pytest.raises(ConfigError, match="brands"):
        plain.add(MORE, brands=["x"])
    personal = FeatureBuilder(index, TITLES, profile_vectors=_vectors(len(TITLES), 0))
    with pytest.raises(ConfigError, match="profile_vectors"):
        personal.add(MORE)
    assert plain.add([]).n_items == len(TITLES)
    assert plain.popularity.shape == (len(TITLES),) and plain.profile_vectors is None


def test_growing_real_titles_in_batches_equals_one_fit() -> None:
    """Home Depot titles added 50 at a time score as one fit over them all."""
    import pandas as pd

    from tests.conftest import require_shared

    frame = pd.read_csv(require_shared("home_depot", "judgements.csv"))
    titles = frame["product_title"].drop_duplicates().head(500).tolist()
    queries = frame["search_term"].drop_duplicates().head(100).tolist()
    grown = SearchIndex().fit(titles[:200])
    for start in range(200, len(titles), 50):
        grown.add(titles[start:start + 50])
    fresh = SearchIndex().fit(titles)
    gb = FeatureBuilder(grown, titles[:200])
    for start in range(200, len(titles), 50):
        gb.add(titles[start:start + 50])
    fb = FeatureBuilder(fresh, titles)
    for q in queries:
        a, b = grown.all_scores(q), fresh.all_scores(q)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=f"{name} {q!r}")
        ca, cb = grown.retrieve(q, depth=20), fresh.retrieve(q, depth=20)
        np.testing.assert_array_equal(ca.index, cb.index)
        np.testing.assert_allclose(gb.build(q, ca), fb.build(q, cb), rtol=1e-5, atol=1e-7)
