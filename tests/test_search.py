"""Personalized search: hybrid retrieval, fusion, the LambdaMART ranker and the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shelfwise.bundle import train_bundle
from shelfwise.config import ShelfwiseConfig
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.ranking import LambdaMART, SearchRankerConfig
from shelfwise.search import FEATURES, SearchIndex
from shelfwise.serving import create_app
from shelfwise.storage import open_store
from tests.helpers import counted_queries

TITLES = [
    "Claw hammer with fiberglass handle",
    "Cordless drill driver 18V",
    "Stainless steel kitchen sink",
    "Garden hose 50 ft",
    "Paint roller kit",
]


def test_lexical_and_typo_tolerant_retrieval() -> None:
    index = SearchIndex().fit(TITLES)
    cand = index.retrieve("kitchen sink")
    assert int(cand.index[cand.order()[0]]) == 2
    assert index.retrieve("hamer").scores["bm25"].max() == 0, "no word match for the typo"
    typo = index.retrieve("hamer")
    assert int(typo.index[typo.order()[0]]) == 0, "the n-gram index rescues 'hamer'"
    with pytest.raises(ConfigError, match="query"):
        index.retrieve("   ")


def test_reciprocal_rank_fusion_known_answer() -> None:
    """Two retrievers that disagree: RRF adds 1/(k+rank) from each."""
    vectors = np.eye(5, dtype=np.float32)
    index = SearchIndex(char_ngrams=0, rrf_k=1.0, weights={"bm25": 1.0, "dense": 1.0}).fit(
        TITLES, vectors, lambda q: np.array([0, 0, 0, 1.0, 0.5], np.float32))
    cand = index.retrieve("garden hose paint")
    fused = dict(zip(cand.index.tolist(), cand.fused.tolist(), strict=True))
    # bm25 ranks: hose(3) and paint roller(4) match; dense ranks 3 > 4 > rest (ties share)
    bm25 = cand.scores["bm25"]
    first_lex = int(cand.index[np.argmax(bm25)])
    assert set(np.asarray(cand.index)[bm25 > 0].tolist()) == {3, 4}
    second_lex = 4 if first_lex == 3 else 3
    assert fused[3] == pytest.approx(1 / (1 + (1 if first_lex == 3 else 2)) + 1 / 2)
    assert fused[second_lex] > fused[0]
    assert fused[0] == pytest.approx(1 / (1 + 3)), "dense rank 3 of the tied zeros"


def test_lambdamart_learns_the_relevant_feature_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n_q, per = 200, 8
    x = rng.normal(size=(n_q * per, len(FEATURES))).astype(np.float32)
    key = FEATURES.index("title_coverage")
    y = np.clip(np.round(x[:, key] + 1), 0, 3).astype(int)
    ranker = LambdaMART(SearchRankerConfig(n_estimators=50)).fit(x, y, [per] * n_q, FEATURES)
    test = rng.normal(size=(per, len(FEATURES))).astype(np.float32)
    order = np.argsort(-ranker.predict(test))
    assert order[0] == np.argmax(test[:, key])
    imp = ranker.importance()
    assert max(imp, key=lambda f: imp[f]) == "title_coverage"
    ranker.save(tmp_path / "r")
    again = LambdaMART.load(tmp_path / "r")
    np.testing.assert_allclose(again.predict(test), ranker.predict(test))
    assert ranker.contributions(test).shape == (per, len(FEATURES) + 1)
    with pytest.raises(ConfigError, match="columns"):
        LambdaMART().fit(x[:, :3], y, [per] * n_q, FEATURES)
    with pytest.raises(ConfigError, match="groups"):
        LambdaMART().fit(x, y, [per] * (n_q - 1), FEATURES)
    with pytest.raises(NotFittedError):
        LambdaMART().predict(test)
    valid = (x[:400], y[:400], [per] * 50)
    stopped = LambdaMART(SearchRankerConfig(n_estimators=500, learning_rate=0.3)).fit(
        x[400:], y[400:], [per] * 150, FEATURES, valid=valid)
    assert 0 < stopped.best_iteration_ < 500, "noise-free grades stop well before 500 trees"
    clicks_only = np.minimum(y[400:], 1)  # held-out grades above any training grade still work
    LambdaMART(SearchRankerConfig(n_estimators=20)).fit(x[400:], clicks_only, [per] * 150,
                                                        FEATURES, valid=valid)
    assert np.argsort(-stopped.predict(test))[0] == np.argmax(test[:, key])


SHOP = [
    Item(id="earbuds", title="无线蓝牙耳机 主动降噪 长续航", category=["数码", "耳机"], price=199),
    Item(id="rice", title="东北大米 5公斤 新米", category=["食品", "粮油"], price=59),
    Item(id="kettle", title="Electric kettle, 1.7 L, stainless steel",
         category=["Home", "Kitchen"], price=30),
    Item(id="pan", title="Cast iron frying pan 28 cm", category=["Home", "Kitchen"], price=45),
    Item(id="runners", title="Men's running shoes, lightweight", category=["Sport", "Shoes"],
         price=80),
    Item(id="trail", title="Trail running shoes, waterproof", category=["Sport", "Shoes"],
         price=120),
    Item(id="novel", title="The Three-Body Problem, paperback novel", category=["Books"],
         price=12),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    tmp = tmp_path_factory.mktemp("search")
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = open_store(url)
    store.upsert_items(SHOP)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = [Event(id=f"e{k}", type=EventType.PURCHASE, user_id=u, item_id=i,
                    timestamp=t0 + timedelta(hours=k))
              for k, (u, i) in enumerate([("cook", "kettle"), ("cook", "pan"),
                                          ("runner", "runners"), ("runner", "trail"),
                                          ("reader", "novel")])]
    store.add_events(events)
    train_bundle(interactions_from_store(store), tmp / "bundles")
    store.close()
    # the log's writer waits a minute: what a search queues stays queued until a test
    # flushes (else a background flush 0.1 s apart could land before a check of the queue)
    quiet = ShelfwiseConfig.model_validate({"serve": {"impressions": {"flush_seconds": 60}}})
    return TestClient(create_app(url, tmp / "bundles", config=quiet))


@pytest.mark.parametrize(("query", "expected"), [
    ("大米", {"rice"}),  # Chinese query, Chinese title
    ("wireless bluetooth earphones", {"earbuds"}),  # English query, Chinese title
    ("runing shoes", {"runners", "trail"}),  # misspelled
    ("frying pan", {"pan"}),
])
def test_search_finds_across_languages_and_typos(client: TestClient, query: str,
                                                 expected: set[str]) -> None:
    r = client.post("/v1/search", json={"query": query, "n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] and body["personalized"] is False and body["ranker"] == "rrf"
    assert body["items"][0]["item_id"] in expected, body["items"]
    assert set(body["items"][0]["explanation"]["parts"]) >= {"bm25", "dense"}


def test_a_repeated_query_is_embedded_once(client: TestClient) -> None:
    """Popular queries repeat: their vectors are kept (by hash, not text) and reused, with
    the same answer."""
    encoder = client.app.state.recommender.semantic.encoder  # type: ignore[attr-defined]
    with counted_queries(encoder) as calls:
        first = client.post("/v1/search", json={"query": "stainless kettle", "n": 3}).json()
        again = client.post("/v1/search", json={"query": "stainless kettle", "n": 3}).json()
        other = client.post("/v1/search", json={"query": "steel kettle", "n": 3}).json()
    assert calls == ["stainless kettle", "steel kettle"]
    assert [(i["item_id"], i["score"]) for i in first["items"]] == [
        (i["item_id"], i["score"]) for i in again["items"]]
    assert other["items"]
    rec = client.app.state.recommender  # type: ignore[attr-defined]
    assert not any(isinstance(k, str) or "kettle" in str(k)
                   for key in rec._query_vectors for k in key[1:]), "no query text kept"
    rec.forget_users(lambda _user: False)
    assert not rec._query_vectors, "dropped with forgotten users, like the other query caches"


def test_filters_and_personalized_flag(client: TestClient) -> None:
    body = client.post("/v1/search", json={"query": "shoes", "n": 5,
                                           "filters": {"max_price": 100}}).json()
    assert body["items"][0]["item_id"] == "runners"
    assert "trail" not in {i["item_id"] for i in body["items"]}
    body = client.post("/v1/search", json={"query": "steel", "n": 5,
                                           "filters": {"category": "Home > Kitchen"}}).json()
    assert {i["item_id"] for i in body["items"]} <= {"kettle", "pan"}
    body = client.post("/v1/search", json={"query": "shoes", "user_id": "runner"}).json()
    assert body["personalized"] is True
    store = client.app.state.store  # type: ignore[attr-defined]
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert engine.impressions.pending_queries("runner") == ["shoes"], "queued behind the answer"
    assert engine.impressions.flush() >= 1
    assert engine.impressions.pending_queries("runner") == []
    stored = store.user_events("runner", types=[EventType.SEARCH])
    assert [e.request_id for e in stored] == [body["request_id"]], "the search is logged"
    # a NUL (which the store refuses in text) leaves the log, not the queue stuck behind it
    odd = client.post("/v1/search", json={"query": "sho\u0000es", "user_id": "runner"})
    assert odd.status_code == 200, odd.text
    assert engine.impressions.flush() >= 1 and engine.impressions.pending() == 0
    assert [e.query for e in store.user_events("runner", types=[EventType.SEARCH])] == [
        "shoes", "shoes"]
    assert client.post("/v1/search", json={"query": ""}).status_code == 422


def test_rerank_returns_the_given_items_in_a_new_order(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"query": "running shoes",
                                        "items": ["novel", "rice", "runners", "kettle"]})
    assert r.status_code == 200, r.text
    ids = [i["item_id"] for i in r.json()["items"]]
    assert sorted(ids) == ["kettle", "novel", "rice", "runners"] and ids[0] == "runners"
    bad = client.post("/v1/rerank", json={"query": "x", "items": ["nope"]})
    assert bad.status_code == 404 and "nope" in bad.text
    dup = client.post("/v1/rerank", json={"query": "x", "items": ["rice", "rice"]})
    assert dup.status_code == 422


def test_a_posted_item_is_searchable_at_once(client: TestClient) -> None:
    client.post("/v1/search", json={"query": "kettle", "n": 1})  # the index exists
    service = client.app.state.search  # type: ignore[attr-defined]
    index = service._index
    client.post("/v1/items", json={"items": [
        {"id": "wok", "title": "Carbon steel wok 32 cm", "category": ["Home", "Kitchen"],
         "brand": "Kuro", "price": 40}]})
    body = client.post("/v1/search", json={"query": "wok", "n": 1}).json()
    assert body["items"][0]["item_id"] == "wok"
    assert service._index is index, "the index grew in place, no rebuild"
    for filters, found in (({"category": "Kitchen"}, True), ({"brand": "kuro"}, True),
                           ({"max_price": 30}, False), ({"category": "Books"}, False)):
        body = client.post("/v1/search", json={"query": "wok", "n": 3,
                                               "filters": filters}).json()
        assert ("wok" in {i["item_id"] for i in body["items"]}) is found, filters
    # a changed title of an indexed item: the next query rebuilds and finds the new words
    client.post("/v1/items", json={"items": [
        {"id": "wok", "title": "Hand-hammered skillet", "category": ["Home", "Kitchen"]}]})
    body = client.post("/v1/search", json={"query": "skillet", "n": 1}).json()
    assert body["items"][0]["item_id"] == "wok" and service._index is not index


def test_word_match_features_known_answers() -> None:
    from shelfwise.search import FeatureBuilder

    titles = ["Hampton Bay 52 in. Ceiling Fan in White", "Hampton Bay Ceiling Light Kit",
              "Delta Faucet Trim Kit", "立式电风扇 白色"]
    index = SearchIndex().fit(titles)
    feats = FeatureBuilder(index, titles)
    col = {f: FEATURES.index(f) for f in FEATURES}

    def build(query: str) -> np.ndarray:
        return feats.build(query, index.candidates(np.arange(4), query=query))

    x = build("hampton bay celing fan 52")  # "celing" is one edit from "ceiling"
    assert x[0, col["title_coverage"]] == pytest.approx(4 / 5), "exact stems miss the typo"
    assert x[0, col["fuzzy_coverage"]] == 1.0 and x[0, col["missing_idf"]] == 0.0
    assert x[1, col["fuzzy_coverage"]] == pytest.approx(3 / 5)
    assert x[0, col["last_word_match"]] == 1.0 and x[1, col["last_word_match"]] == 0.0
    assert x[0, col["number_mismatch"]] == 0.0 and x[1, col["number_mismatch"]] == 1.0
    assert x[2, col["idf_fuzzy_coverage"]] == 0.0 and x[2, col["missing_idf"]] > 0
    # rare words weigh more: "fan" (1 title) outweighs "bay" (2 titles)
    fan, bay = build("fan"), build("bay")
    assert fan[0, col["missing_idf"]] == 0 and fan[1, col["missing_idf"]] > bay[2, col[
        "missing_idf"]]
    zh = build("电风扇")
    assert zh[:, col["fuzzy_coverage"]].tolist() == [0, 0, 0, 1], "Chinese matches exactly"
    assert 0 < x[1, col["gram_containment"]] < x[0, col["gram_containment"]] <= 1


def test_a_ranker_saved_with_fewer_features_still_predicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    old = [f for f in FEATURES if f not in ("fuzzy_coverage", "partial_ratio")]
    x = rng.normal(size=(80, len(old))).astype(np.float32)
    y = (x[:, old.index("bm25")] > 0).astype(int)
    LambdaMART(SearchRankerConfig(n_estimators=10)).fit(x, y, [8] * 10, old).save(
        tmp_path / "r")
    again = LambdaMART.load(tmp_path / "r")
    full = rng.normal(size=(5, len(FEATURES))).astype(np.float32)
    cols = again.columns(FEATURES)
    assert [FEATURES[c] for c in cols] == old
    assert again.predict(full[:, cols]).shape == (5,)
    with pytest.raises(ConfigError, match="retrain"):
        LambdaMART(n_estimators=2, early_stopping_rounds=None).fit(
            x[:, :2], y, [8] * 10, ["bm25", "gone"]).columns(FEATURES)


def test_candidates_fuse_within_depth_only_when_rebuilding_a_search() -> None:
    index = SearchIndex(depth=1, char_ngrams=0).fit(TITLES)
    docs = np.arange(len(TITLES))
    deep = index.candidates(docs, query="garden hose paint roller")
    cut = index.candidates(docs, query="garden hose paint roller", within_depth=True)
    assert (deep.fused > 0).sum() == 2, "both lexical matches count for a shop's own list"
    assert (cut.fused > 0).sum() == 1, "retrieval at depth 1 would have fused only the top"
    assert cut.fused.max() == pytest.approx(deep.fused.max())


def test_catalog_ranks_match_a_full_sort() -> None:
    from shelfwise.search.index import _rank_within_catalog

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 400))
        scores = (rng.integers(0, 5, size=n) if trial % 2 else rng.random(n)).astype(np.float32)
        index = rng.choice(n, size=int(rng.integers(1, n + 1)))
        by_sort = np.sort(scores)[::-1]
        want = np.searchsorted(-by_sort, -scores[index], side="left") + 1  # ties share a rank
        np.testing.assert_array_equal(_rank_within_catalog(scores, index), want)


def _dense_index(n: int = 3000, **options: object) -> tuple[SearchIndex, np.ndarray]:
    """An index over ``n`` texts with random unit vectors; a query's vector is that of the
    item it names ("item 17") nudged, so its neighbours are known."""
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(n, 24)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def encode(q: str) -> np.ndarray:
        v = vecs[int(q.split()[-1])] + 0.3 * vecs[0]
        return (v / np.linalg.norm(v)).astype(np.float32)

    texts = [f"thing {i % 97} colour{i % 13}" for i in range(n)]
    return SearchIndex(**options).fit(texts, vecs, encode), vecs  # type: ignore[arg-type]


def test_large_catalogs_retrieve_dense_candidates_by_hnsw_with_exact_scores() -> None:
    exact, vecs = _dense_index()
    approx, _ = _dense_index(dense_exact_items=1000, dense_candidates=200)
    assert approx.approximate and not exact.approximate
    for query in ("item 17", "item 2222", "colour3 item 5"):
        want, got = exact.retrieve(query, depth=50), approx.retrieve(query, depth=50)
        dense_top = set(want.index[np.argsort(-want.scores["dense"])[:20]].tolist())
        assert len(dense_top & set(got.index.tolist())) >= 19
        q = approx.encode_query(query)  # type: ignore[misc]
        np.testing.assert_allclose(got.scores["dense"], vecs[got.index] @ q, atol=1e-5)
        full = vecs @ q
        true_rank = 1 + (full[None, :] > full[got.index][:, None]).sum(axis=1)
        near = true_rank <= 100
        np.testing.assert_array_equal(got.ranks["dense"][near], true_rank[near])
        far = ~near
        assert np.all(np.abs(np.log(got.ranks["dense"][far]) - np.log(true_rank[far])) < 0.7)


def test_the_hnsw_index_travels_in_the_state_and_grows_with_items() -> None:
    approx, vecs = _dense_index(dense_exact_items=1000)
    state = approx.state()
    assert "ann" in state and state["ann"].dtype == np.uint8
    again = SearchIndex.from_state(state, approx.config)
    again.set_vectors(vecs, approx.encode_query)
    assert len(again.ann()) == 3000
    rng = np.random.default_rng(4)
    new = rng.normal(size=(5, 24)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    again.add([f"fresh {i}" for i in range(5)], new)
    again.encode_query = lambda q: new[0]
    got = again.retrieve("fresh", depth=20)
    assert 3000 in got.index.tolist() and len(again.ann()) == 3005
