"""The semantic generator: cross-lingual retrieval, profiles, new items, the ANN index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.retrieval import recommend
from shelfwise.retrieval.ann import VectorIndex
from shelfwise.retrieval.registry import load_generator
from shelfwise.retrieval.semantic import Semantic

CATALOG = {
    "earbuds": "无线蓝牙耳机 主动降噪 长续航",
    "kettle": "Electric kettle, 1.7 L, stainless steel",
    "rice": "东北大米 5公斤 新米",
    "novel": "The Three-Body Problem, paperback novel",
    "runners": "Men's running shoes, lightweight and breathable",
    "yoga": "瑜伽垫 加厚 防滑",
    "lipstick": "Matte lipstick, long-lasting, red",
    "phone": "5G smartphone, 128 GB, dual SIM",
}


@pytest.fixture(scope="module")
def semantic() -> Semantic:
    from shelfwise.data.ids import IdMap

    full = Interactions.from_frame(
        pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["runners", "yoga"]}),
        items=IdMap(CATALOG), item_text=CATALOG, has_time=False,
    )
    return Semantic().fit(full)


@pytest.mark.parametrize(("query", "expected"), [
    ("wireless bluetooth earphones", "earbuds"),  # English query, Chinese title
    ("跑步鞋", "runners"),  # Chinese query, English title
    ("大米", "rice"),
    ("science fiction book", "novel"),
])
def test_query_finds_the_right_item_across_languages(
    semantic: Semantic, query: str, expected: str
) -> None:
    idx, _ = semantic.search_text(query, 1)
    assert list(CATALOG)[int(idx[0])] == expected


def test_profile_recommends_related_items(semantic: Semantic) -> None:
    ids = list(CATALOG)
    history = np.array([ids.index("runners")])
    top, _ = recommend(semantic, [history], 1)
    assert ids[int(top[0, 0])] == "yoga"  # sport, across languages


def test_new_items_are_scored_and_indexed(semantic: Semantic, tmp_path: Path) -> None:
    from shelfwise.data.ids import IdMap

    gen = Semantic().fit(Interactions.from_frame(
        pd.DataFrame({"user_id": ["u"], "item_id": ["kettle"]}), items=IdMap(CATALOG),
        item_text=CATALOG))
    n = gen.n_items_
    kettle = list(CATALOG).index("kettle")
    gen.add_items(["不锈钢电水壶 1.5升"])
    assert gen.n_items_ == n + 1
    scores = gen.score([np.array([kettle])])
    assert scores.shape == (1, n + 1)
    assert int(np.argsort(-scores[0])[1]) == n, "the Chinese kettle is the nearest neighbour"
    gen.save(tmp_path / "sem")
    loaded = load_generator(tmp_path / "sem")
    assert isinstance(loaded, Semantic) and loaded.n_items_ == n + 1
    idx, _ = loaded.search_vectors(loaded.vectors_[[kettle]], 2)
    assert int(idx[0, 1]) == n


def test_semantic_needs_text() -> None:
    from shelfwise.exceptions import ConfigError

    data = Interactions.from_frame(pd.DataFrame({"user_id": ["u"], "item_id": ["x"]}))
    with pytest.raises(ConfigError, match="item text"):
        Semantic().fit(data)


def test_vector_index_exact_and_hnsw_agree() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    exact, hnsw = VectorIndex(16, exact=True), VectorIndex(16, exact=False)
    exact.add(v)
    hnsw.add(v)
    e_idx, _ = exact.search(v[:20], 5)
    h_idx, _ = hnsw.search(v[:20], 5)
    assert (e_idx[:, 0] == np.arange(20)).all()
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(e_idx, h_idx, strict=True)])
    assert overlap >= 0.9


def test_the_shared_lock_lets_holders_share_and_an_exclusive_one_wait_for_them() -> None:
    import threading

    from shelfwise.retrieval.ann import SharedLock

    lock = SharedLock()
    entered = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]
    order: list[str] = []

    def reader(k: int) -> None:
        with lock.shared():
            entered[k].set()
            leave[k].wait(5)
            order.append(f"reader {k} out")

    def writer() -> None:
        with lock.exclusive():
            order.append("writer in")

    readers = [threading.Thread(target=reader, args=(k,), daemon=True) for k in (0, 1)]
    for t in readers:
        t.start()
    assert entered[0].wait(5) and entered[1].wait(5), "two shared holders at once"
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    w.join(0.2)
    assert w.is_alive() and order == [], "the exclusive holder waits for the shared ones"
    leave[0].set()
    w.join(0.2)
    assert w.is_alive() and order == ["reader 0 out"], "... for all of them"
    leave[1].set()
    w.join(5)
    assert order == ["reader 0 out", "reader 1 out", "writer in"]


def test_an_index_searched_by_threads_while_it_grows_answers_rows_it_has() -> None:
    """Server threads search the ANN index side by side while a posted item grows it."""
    import threading

    rng = np.random.default_rng(3)
    v = rng.normal(size=(3000, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = VectorIndex(16, exact=False, quantized=True)
    index.add(v[:1000])
    problems: list[str] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            n = len(index)
            idx, _ = index.search(v[rng.integers(0, 3000, 4)], 50)
            if idx.max() >= max(n, len(index)) or (idx < 0).all():
                problems.append(f"{idx.max()} of {n}")

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(1000, 3000, 100):
        index.add(v[start:start + 100])
    done.set()
    for t in threads:
        t.join(10)
    assert not problems
    assert len(index) == 3000
    assert (index.search(v[2990:], 1)[0][:, 0] == np.arange(2990, 3000)).all()


def test_a_fine_tuned_encoder_travels_in_the_bundle(tmp_path: Path) -> None:
    """`shelfwise finetune` output as the semantic encoder: the bundle copies it and serves
    with its id, so the bundle alone reproduces the vectors."""
    from shelfwise.bundle import GeneratorSpec, TrainConfig, load_bundle, train_bundle
    from shelfwise.data.ids import IdMap
    from shelfwise.text.finetune import FinetuneConfig, finetune
    from shelfwise.text.pairs import TextPair

    pairs = [TextPair(f"{c} {t}", f"{t.title()} in {c}") for c in ("red", "blue", "green")
             for t in ("shoes", "kettle", "phone", "novel")]
    tuned = tmp_path / "tuned"
    finetune(pairs, tuned, FinetuneConfig(method="lora", batch_size=4, num_threads=1))
    data = Interactions.from_frame(
        pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["runners", "yoga", "novel"]}),
        items=IdMap(CATALOG), item_text=CATALOG, has_time=False)
    config = TrainConfig(tune_weights=False, generators=[
        GeneratorSpec(name="semantic", params={"encoder": str(tuned)}),
        GeneratorSpec(name="popularity", weight=0.1)])
    trained = train_bundle(data, tmp_path / "bundles", config)
    sem = trained.generators["semantic"]
    assert isinstance(sem, Semantic) and "+ft-" in sem.encoder_id_
    loaded = load_bundle(tmp_path / "bundles")
    again = loaded.generators["semantic"]
    assert isinstance(again, Semantic)
    assert again.config.encoder.startswith(str(loaded.path))
    assert again.encoder.id == sem.encoder_id_
    np.testing.assert_allclose(again.embed([CATALOG["kettle"]])[0],
                               sem.raw_vectors_[list(CATALOG).index("kettle")], atol=1e-5)

def _large(n: int = 3000, dim: int = 32, **params: object) -> Semantic:
    """A semantic generator over ``n`` random unit vectors (no encoder needed)."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    v[:n // 2] += 1.5 * np.eye(dim, dtype=np.float32)[0]  # a cluster, so profiles have a top
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    gen = Semantic(**params)  # type: ignore[arg-type]
    gen._set_state({"vectors": v, "raw_vectors": v, "script_means": np.zeros((2, dim)),
                    "encoder_id": np.asarray("test")})
    gen._n_items = n
    return gen


def test_large_catalogs_score_ann_candidates_exactly_and_the_rest_below_them() -> None:
    exact = _large()
    approx = _large(exact_items=1000, ann_candidates=100)
    assert not approx.index.exact and exact.index.exact
    histories = [np.array([0, 5, 9]), np.array([2000, 2500]), np.array([7])]
    want, got = exact.score(histories), approx.score(histories)
    assert got.shape == want.shape == (3, 3000)
    for w, g in zip(want, got, strict=True):
        top = np.argsort(-w)[:10]
        assert set(np.argsort(-g)[:10]) == set(top), "the top of the list is the exact top"
        np.testing.assert_allclose(g[top], w[top], atol=1e-5)
        cand = np.flatnonzero(np.isclose(g, w, atol=1e-6) & (g > np.median(g)))
        assert len(cand) >= 90
        rest = np.setdiff1d(np.arange(3000), cand)
        assert g[rest].max() <= g[cand].min() + 1e-6, "nothing outside the list outranks it"
        assert w.min() <= g.min() <= np.sort(w)[30], "the row's range is nearly the exact one"
    assert not approx.score([np.empty(0, np.int64)]).any(), "an empty history has no opinion"


def test_small_catalogs_stay_exact() -> None:
    gen = _large(n=500)
    h = [np.array([1, 2])]
    np.testing.assert_allclose(gen.score(h), gen.profile(h[0])[None, :] @ gen.vectors_.T,
                               atol=1e-6)


class _Sparse:
    """A co-occurrence-like part: a few hundred items with positive scores, the rest 0."""

    name = "sparse"

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(2)
        self.row = np.zeros(n, np.float32)
        self.row[rng.choice(n, 300, replace=False)] = rng.random(300).astype(np.float32)
        self.n_items_ = n

    def score(self, histories: object) -> np.ndarray:
        return np.tile(self.row, (len(histories), 1))  # type: ignore[arg-type]


def test_a_blend_scores_the_other_parts_best_items_exactly() -> None:
    from shelfwise.retrieval.blend import Blend

    exact, approx = _large(), _large(exact_items=1000, ann_candidates=50)
    sparse = _Sparse(3000)
    histories = [np.array([0, 5, 9]), np.array([2000, 2500])]
    want = Blend.fitted({"sparse": sparse, "semantic": exact}, {"sparse": 1.0, "semantic": 1.0})
    got = Blend.fitted({"sparse": sparse, "semantic": approx}, {"sparse": 1.0, "semantic": 1.0})
    w, g = want.score(histories), got.score(histories)
    for row in range(2):
        top = np.argsort(-w[row])[:10]
        assert len(set(np.argsort(-g[row])[:10]) & set(top)) >= 9
    # without the focus the sparse part's items would sit at the semantic fill value
    raw = approx.score(histories)
    focused = approx.score_focused(histories, [np.flatnonzero(sparse.row)] * 2)
    on = np.flatnonzero(sparse.row)
    np.testing.assert_allclose(focused[:, on], exact.score(histories)[:, on], atol=1e-5)
    assert not np.allclose(raw[:, on], focused[:, on])


@pytest.mark.parametrize("tiebreak", [False, True])
def test_one_history_blended_from_sparse_rows_has_the_dense_blends_bits(tiebreak: bool) -> None:
    """The serving path (``Blend.score_row`` over co-occurrence and semantic rows given as
    a fill value plus scored entries) must give every item the very score and contributing
    part of the dense ``score_parts``, so serving can skip the catalog-wide passes."""
    from shelfwise.retrieval.base import SparseRow
    from shelfwise.retrieval.blend import Blend, focused
    from shelfwise.retrieval.cooccurrence import Cooccurrence
    from shelfwise.retrieval.popular import Popularity

    n = 3000
    rng = np.random.default_rng(4)
    users = rng.integers(0, 400, 6000)
    frame = pd.DataFrame({"user_id": users.astype(str),
                          "item_id": rng.zipf(1.3, 6000).clip(1, n).astype(str),
                          "timestamp": pd.Timestamp("2026-01-01")
                          + pd.to_timedelta(rng.integers(0, 10**6, 6000), unit="s")})
    data = Interactions.from_frame(frame)
    # every item id known to the interactions, in the semantic generator's order
    vectors = _large(n=data.n_items, exact_items=100, ann_candidates=40)
    cooc = Cooccurrence(popularity_tiebreak=tiebreak).fit(data)  # with it: a dense row
    pop = Popularity().fit(data)
    blend = Blend.fitted({"cooccurrence": cooc, "semantic": vectors, "popularity": pop},
                         {"cooccurrence": 0.5, "semantic": 0.25, "popularity": 1.0})

    def part_row(h: np.ndarray) -> object:
        def score(name: str, gen: object, focus: np.ndarray | None) -> object:
            wants = focus is not None and focused(gen)  # type: ignore[arg-type]
            row = gen.sparse_row(h, focus if wants else None)  # type: ignore[attr-defined]
            if row is not None:
                assert isinstance(row, SparseRow)
                return row
            scored = (gen.score_focused([h], [focus]) if wants  # type: ignore[attr-defined]
                      else gen.score([h]))  # type: ignore[attr-defined]
            return scored[0]
        return score

    histories = [np.array([3]), np.array([data.n_items + 5, 7]), np.array([0, 5, 9, 3, 5]),
                 np.empty(0, np.int64), rng.integers(0, data.n_items, 30)]
    kinds = set()
    for h in histories:
        dense, label = blend.score_parts([h])
        row, labels = blend.score_row(part_row(h))  # type: ignore[arg-type]
        np.testing.assert_array_equal(row, dense[0])
        np.testing.assert_array_equal(labels(np.arange(data.n_items)), label[0])
        kinds |= set(label[0].tolist())
    assert kinds == {0, 1, 2}, "every part leads somewhere, so the labels were tested"
    assert (cooc.sparse_row(histories[1]) is None) == tiebreak
    if not tiebreak:
        np.testing.assert_array_equal(
            cooc.sparse_row(histories[1]).dense(),  # type: ignore[union-attr]
            cooc.score([histories[1]])[0])


def test_a_sparse_row_keeps_the_last_value_written_and_reads_like_its_dense_row() -> None:
    from shelfwise.retrieval.base import SparseRow

    row = SparseRow.of(8, 0.5, np.array([6, 2, 6, 0]), np.array([1.0, 2.0, 3.0, np.inf]))
    np.testing.assert_array_equal(row.idx, [0, 2, 6])
    dense = np.array([np.inf, 0.5, 2.0, 0.5, 0.5, 0.5, 3.0, 0.5], np.float32)
    np.testing.assert_array_equal(row.dense(), dense)
    np.testing.assert_array_equal(row.at(np.array([7, 6, 0, 1])), dense[[7, 6, 0, 1]])
    assert row.finite_range() == (0.5, 3.0, False)
    full = SparseRow.of(2, -9.0, np.array([1, 0]), np.array([1.0, 2.0]))
    assert full.covered and full.finite_range() == (1.0, 2.0, True), "the fill is nowhere"
