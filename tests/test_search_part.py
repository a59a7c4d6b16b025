"""The search index as a bundle part: built by ``train``, loaded memory-mapped, it answers
exactly as an index built from the catalog at start; it still grows with posted items; old
bundles without it build at start; a damaged one is a ConfigError naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shelfwise.bundle import TrainConfig, load_bundle, train_bundle
from shelfwise.bundle.bundle import LATEST, SEARCH_INDEX_DIR, Bundle
from shelfwise.cli.main import app as cli
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.passages import PassageVectors
from shelfwise.retrieval.semantic import Semantic
from shelfwise.retrieval.spec import GeneratorSpec
from shelfwise.search import FeatureBuilder, SearchConfig, SearchIndex, columns
from shelfwise.search.columns import load_state, save_state
from shelfwise.services.recommender import Recommender
from shelfwise.services.search import SearchFilters, SearchService
from shelfwise.storage import open_store
from tests.helpers import BASE, free_port

SHOP = [
    Item(id="earbuds", title="无线蓝牙耳机 主动降噪 长续航", category=["数码", "耳机"],
         brand="小米", price=199),
    Item(id="speaker", title="便携蓝牙音箱 防水", category=["数码", "音箱"], brand="小米",
         price=129),
    Item(id="rice", title="东北大米 5公斤 新米", category=["食品", "粮油"], price=59),
    Item(id="kettle", title="Electric kettle, 1.7 L, stainless steel",
         category=["Home", "Kitchen"], brand="Bosch", price=30),
    Item(id="pan", title="Cast iron frying pan 28 cm", category=["Home", "Kitchen"],
         brand="Lodge", price=45),
    Item(id="skillet", title="Cast iron skillet 25 cm, pre-seasoned",
         category=["Home", "Kitchen", "Pans"], brand="Lodge"),
    Item(id="runners", title="Men's running shoes, lightweight", category=["Sport", "Shoes"],
         price=80),
    Item(id="trail", title="Trail running shoes, waterproof", category=["Sport", "Shoes"],
         brand="Salomon", price=120),
    Item(id="novel", title="The Three-Body Problem, paperback novel", category=["Books"],
         price=12),
    Item(id="fan", title="Hampton Bay 52 in. ceiling fan in white", category=["Home", "Fans"],
         brand="Hampton Bay", price=89),
    Item(id="drill", title="Cordless drill driver 18V with two batteries",
         category=["Tools", "Power Tools"], brand="Ryobi", price=99),
    Item(id="hammer", title="Claw hammer with fiberglass handle", category=["Tools"],
         price=15),
]
QUERIES = ["cast iron pan", "running shoes", "蓝牙耳机", "大米", "kettel", "hampton bay celing fan",
           "cordless drill 18v", "stainless steel", "防水 音箱", "zzzz qqq"]
FILTERS = [None, SearchFilters(category="Home"), SearchFilters(brand="lodge"),
           SearchFilters(max_price=100), SearchFilters(category="数码", min_price=150)]
LEXICAL = TrainConfig(generators=[
    GeneratorSpec(name="cooccurrence", params={"popularity_tiebreak": False}),
    GeneratorSpec(name="popularity", weight=0.05)])


def _events() -> list[Event]:
    walks = [["pan", "skillet", "kettle"], ["runners", "trail"], ["earbuds", "speaker"],
             ["drill", "hammer", "fan"]]
    out = []
    for u in range(8):
        for k, item in enumerate(walks[u % len(walks)]):
            out.append(Event(id=f"e{u}-{k}", type=EventType.PURCHASE, user_id=f"u{u}",
                             item_id=item, timestamp=BASE + timedelta(minutes=10 * u + k)))
    return out


def _train(tmp: Path, config: TrainConfig) -> tuple[str, Path]:
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = open_store(url)
    store.upsert_items(SHOP)
    store.add_events(_events())
    train_bundle(interactions_from_store(store), tmp / "bundles", config, store=store)
    store.close()
    return url, tmp / "bundles"


@pytest.fixture(scope="module", params=["small arrays in one file", "every array mapped"])
def lexical(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, Path]]:
    """A store and a bundle trained with the part (co-occurrence + popularity)."""
    mp = pytest.MonkeyPatch()
    if request.param == "every array mapped":
        mp.setattr(columns, "MMAP_BYTES", 0)
    try:
        yield _train(tmp_path_factory.mktemp("lexical"), LEXICAL)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The same with the default generators (semantic: dense retrieval and profiles)."""
    return _train(tmp_path_factory.mktemp("dense"), TrainConfig())


def _service(url: str, bundles: Path | Bundle, *, part: bool = True,
             config: SearchConfig | None = None) -> SearchService:
    bundle = bundles if isinstance(bundles, Bundle) else load_bundle(bundles)
    if not part:
        bundle.search_index = None
    store = open_store(url)
    return SearchService(Recommender(bundle, store), config)


def _same_answers(a: SearchService, b: SearchService, queries: list[str] = QUERIES) -> None:
    for q in queries:
        for user in (None, "u0", "u2"):
            for f in FILTERS:
                ra, rb = a.search(q, user, 10, f), b.search(q, user, 10, f)
                assert [h.item_id for h in ra.hits] == [h.item_id for h in rb.hits], (q, f)
                assert [(h.score, h.scores) for h in ra.hits] == [
                    (h.score, h.scores) for h in rb.hits], (q, user, f)
        given = ["pan", "earbuds", "novel", "trail"]
        ra, rb = a.rerank(q, given), b.rerank(q, given)
        assert [(h.item_id, h.score, h.scores) for h in ra.hits] == [
            (h.item_id, h.score, h.scores) for h in rb.hits]


def test_train_writes_the_part_and_the_loaded_index_answers_as_a_fresh_build(
        lexical: tuple[str, Path]) -> None:
    url, bundles = lexical
    bundle = load_bundle(bundles)
    assert SEARCH_INDEX_DIR in bundle.manifest.parts and bundle.search_index is not None
    assert bundle.manifest.search_index is not None
    assert bundle.manifest.search_index["items"] == len(SHOP)
    loaded, built = _service(url, bundle), _service(url, bundles, part=False)
    _same_answers(loaded, built)
    assert (loaded.source, built.source) == ("bundle", "built")
    assert loaded.ready and built.ready


def _one_copy(rows: object, semantic: Semantic) -> None:
    """The index's passage vectors are the generator's one matrix of centred vectors (with
    a norm per item), not a copy and not a second matrix."""
    assert isinstance(rows, PassageVectors) and rows.norms is not None
    assert np.shares_memory(rows.centred, semantic.vectors_)


def test_with_dense_vectors_and_profiles_too(dense: tuple[str, Path]) -> None:
    url, bundles = dense
    loaded, built = _service(url, bundles), _service(url, bundles, part=False)
    assert loaded.rec.semantic is not None
    _same_answers(loaded, built, ["cast iron pan", "蓝牙耳机", "kettel", "zzzz qqq"])
    assert loaded.source == "bundle"
    _one_copy(loaded._index.vectors, loaded.rec.semantic)


def test_posted_items_grow_the_loaded_index(dense: tuple[str, Path]) -> None:
    url, bundles = dense
    loaded, built = _service(url, bundles), _service(url, bundles, part=False)
    loaded.search("pan")
    new = [Item(id="wok", title="Carbon steel wok 32 cm", category=["Home", "Kitchen"],
                brand="Lodge", price=35),
           Item(id="tea", title="绿茶 龙井 250克", category=["食品", "茶叶"], price=88)]
    for service in (loaded, built):
        service.rec.catalog_updated(new)
    assert loaded.search("carbon steel wok").hits[0].item_id == "wok"
    assert loaded.search("龙井 绿茶").hits[0].item_id == "tea"
    assert loaded.source == "bundle", "grown in place, not rebuilt"
    _same_answers(loaded, built, ["wok", "cast iron pan", "龙井", "kettel"])
    semantic = loaded.rec.semantic
    assert semantic is not None
    _one_copy(loaded._index.vectors, semantic)


def test_the_part_on_disk_is_never_written(lexical: tuple[str, Path]) -> None:
    url, bundles = lexical
    root = bundles / (bundles / LATEST).read_text().strip() / SEARCH_INDEX_DIR

    def digest() -> str:
        return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(root.iterdir()))
                            ).hexdigest()

    before = digest()
    service = _service(url, bundles)
    service.search("pan")
    service.rec.catalog_updated([Item(id="pot", title="Cast iron pot 5 L, stainless lid",
                                      category=["Home", "Kitchen"], price=70)])
    assert service.search("cast iron pot").hits[0].item_id == "pot"
    assert digest() == before


def test_a_bundle_without_the_part_builds_the_index_at_start(lexical: tuple[str, Path],
                                                             tmp_path: Path) -> None:
    url, bundles = lexical
    old = tmp_path / "bundles"
    shutil.copytree(bundles, old)
    path = old / (old / LATEST).read_text().strip()
    shutil.rmtree(path / SEARCH_INDEX_DIR)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["parts"].remove(SEARCH_INDEX_DIR)
    del manifest["search_index"], manifest["fit_seconds"]["search_index"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(old)
    assert bundle.search_index is None
    service = _service(url, bundle)
    _same_answers(service, _service(url, bundles), ["cast iron pan", "蓝牙耳机", "kettel"])
    assert service.source == "built"


def test_a_changed_catalog_rebuilds_but_a_changed_price_is_patched(
        lexical: tuple[str, Path], tmp_path: Path) -> None:
    url, bundles = lexical
    db = tmp_path / "shop.db"
    shutil.copy(url.removeprefix("sqlite:///"), db)
    store = open_store(f"sqlite:///{db}")
    store.upsert_items([SHOP[4].model_copy(update={"price": 500.0})])  # pan: 45 -> 500
    repriced = _service(f"sqlite:///{db}", bundles)
    hits = [h.item_id for h in repriced.search("cast iron", n=5,
                                               filters=SearchFilters(max_price=100)).hits]
    assert "pan" not in hits and repriced.source == "bundle"
    store.upsert_items([SHOP[3].model_copy(update={"title": "Glass teapot with infuser"})])
    store.close()
    retitled = _service(f"sqlite:///{db}", bundles)
    assert retitled.search("teapot").hits[0].item_id == "kettle"
    assert retitled.source == "built"
    other_grams = _service(url, bundles, config=SearchConfig(char_ngrams=4))
    other_grams.search("pan")
    assert other_grams.source == "built"


def _damage_state(path: Path) -> None:
    (path / "state.json").write_text("{not json")


def _truncate_biggest(path: Path) -> None:
    big = max(path.iterdir(), key=lambda p: p.stat().st_size)
    big.write_bytes(big.read_bytes()[:100])


@pytest.mark.parametrize("damage", [_damage_state, _truncate_biggest,
                                    lambda p: shutil.rmtree(p)])
def test_a_damaged_part_is_a_config_error_naming_it(lexical: tuple[str, Path], tmp_path: Path,
                                                    damage: object) -> None:
    url, bundles = lexical
    root = tmp_path / "bundles"
    shutil.copytree(bundles, root)
    assert callable(damage)
    damage(root / (root / LATEST).read_text().strip() / SEARCH_INDEX_DIR)
    with pytest.raises(ConfigError, match=f"{SEARCH_INDEX_DIR} cannot be read"):
        load_bundle(root)
    result = CliRunner().invoke(cli, ["serve", "--store", url, "--bundles", str(root),
                                      "--port", str(free_port())])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert SEARCH_INDEX_DIR in result.output and len(result.output.strip().splitlines()) == 1


def test_saved_state_grows_like_a_fresh_index_on_real_titles(tmp_path: Path) -> None:
    """Home Depot titles: an index and feature builder saved, loaded memory-mapped and grown
    score and build features as one fit over every title."""
    import pandas as pd

    from tests.conftest import require_shared

    frame = pd.read_csv(require_shared("home_depot", "judgements.csv"))
    titles = frame["product_title"].drop_duplicates().head(1500).tolist()
    queries = frame["search_term"].drop_duplicates().head(60).tolist()
    head = SearchIndex().fit(titles[:1200])
    save_state(tmp_path / "index", head.state())
    save_state(tmp_path / "features", FeatureBuilder(head, titles[:1200]).state())
    index = SearchIndex.from_state(load_state(tmp_path / "index"))
    features = FeatureBuilder.from_state(index, load_state(tmp_path / "features"))
    assert isinstance(index.texts._blob.base, np.memmap), "the texts are memory-mapped"
    for start in range(1200, len(titles), 100):
        index.add(titles[start:start + 100])
        features.add(titles[start:start + 100])
    fresh = SearchIndex().fit(titles)
    fresh_features = FeatureBuilder(fresh, titles)
    assert index.texts == fresh.texts
    for q in queries:
        a, b = index.all_scores(q), fresh.all_scores(q)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name} {q!r}")
        ca, cb = index.retrieve(q, depth=30), fresh.retrieve(q, depth=30)
        np.testing.assert_array_equal(ca.index, cb.index)
        np.testing.assert_array_equal(features.build(q, ca), fresh_features.build(q, cb))

