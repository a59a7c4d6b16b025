"""Item vectors in pgvector (``[serve] vector_index = "pgvector"``), on a real PostgreSQL
server with the vector extension (tests/pg.py): the index itself, a server using it, and two
servers sharing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shelfwise.cli.main import app
from shelfwise.config import ShelfwiseConfig
from shelfwise.data.schemas import Item
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.pgvector import PgVectorIndex, table_name
from shelfwise.serving import create_app
from shelfwise.storage import open_store

# a semantic generator that takes the ANN path even on a handful of items
SEMANTIC_ANN = ('[[train.generators]]\nname = "semantic"\n'
                'params = { exact_items = 0, ann_candidates = 10 }\n\n'
                '[[train.generators]]\nname = "popularity"\nweight = 0.05\n')
CATALOG = [
    Item(id="shoe-red", title="Red running shoes, lightweight mesh", category=["Sport"]),
    Item(id="shoe-trail", title="Trail running shoes with grippy sole", category=["Sport"]),
    Item(id="pan", title="Cast iron frying pan 28 cm", category=["Kitchen"]),
    Item(id="kettle", title="Stainless steel kettle 1.7 l", category=["Kitchen"]),
    Item(id="novel", title="Paperback novel, science fiction", category=["Books"]),
    Item(id="poems", title="Collected poems, hardcover", category=["Books"]),
]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_index_finds_the_nearest_rows_with_exact_scores_and_is_shared(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, 3000, 32)
    ids = [f"item-{k}" for k in range(len(vectors))]
    table = table_name("v1", "semantic")
    one = PgVectorIndex.attach(engine, table, vectors, ids)
    other = PgVectorIndex.attach(engine, table, vectors, ids)  # a second process: no refill
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 3000
        indexes = {r[0] for r in conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))}
    assert any("USING hnsw" in d and "vector_ip_ops" in d for d in indexes)
    queries = vectors[:40] + 0.3 * unit_rows(rng, 40, 32)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    idx, val = one.search(queries, 10, ef=64)
    recall = np.mean([len(set(idx[r]) & set(exact[r])) / 10 for r in range(40)])
    assert recall >= 0.95
    assert np.allclose(val, np.take_along_axis(queries @ vectors.T, idx, 1), atol=1e-5)
    assert (np.diff(val, axis=1) <= 1e-6).all(), "best first"
    # a row added by one process: the other finds it once it knows the id, never before
    new = unit_rows(rng, 1, 32)
    one.add(new, ["posted"])
    assert one.search(new, 1)[0][0, 0] == 3000
    before, _ = other.search(new, 3)
    assert 3000 not in before and len(other) == 3000
    other.add(new, ["posted"])  # the same item indexed there too: stored once
    assert other.search(new, 1)[0][0, 0] == 3000
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 3001
    # a process starting with an item the table lacks (posted while none was serving) adds it
    late = unit_rows(rng, 1, 32)
    third = PgVectorIndex.attach(engine, table, np.vstack([vectors, new, late]),
                                 [*ids, "posted", "late"])
    assert third.search(late, 1)[0][0, 0] == 3001
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 3002
    few = PgVectorIndex.attach(engine, table_name("v1", "other"), vectors[:3], ids[:3])
    idx, val = few.search(vectors[:1], 5)
    assert idx[0, :3].tolist() == [0, *sorted(idx[0, 1:3].tolist(), key=lambda r: -float(
        vectors[r] @ vectors[0]))] and (idx[0, 3:] == -1).all() and np.isinf(val[0, 3:]).all()
    with pytest.raises(ValueError, match="item id"):
        few.add(new)


def test_a_search_after_the_server_dropped_its_connection_reconnects(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    vectors = unit_rows(np.random.default_rng(1), 50, 8)
    index = PgVectorIndex.attach(engine, table_name("v1", "semantic"), vectors,
                                 [f"i{k}" for k in range(50)])
    assert index.search(vectors[:1], 1)[0][0, 0] == 0
    with engine.connect() as conn:  # as a server restart would
        killed = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
            "datname = current_database() AND pid <> pg_backend_pid()").scalar()
    assert killed and killed >= 1
    assert index.search(vectors[3:4], 1)[0][0, 0] == 3


def trained_shop(url: str, tmp_path: Path) -> Path:
    """The catalog stored at ``url`` and trained by the CLI with a semantic generator on its
    ANN path; the bundles folder."""
    store = open_store(url)
    store.upsert_items(CATALOG)
    store.close()
    config = tmp_path / "shelfwise.toml"
    config.write_text(SEMANTIC_ANN)
    res = CliRunner().invoke(app, ["train", "--config", str(config), "--store", url,
                                   "--bundles", str(tmp_path / "bundles")], env={})
    assert res.exit_code == 0, res.output
    return tmp_path / "bundles"


@pytest.fixture
def pg_shop(pg_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The trained catalog in PostgreSQL."""
    return pg_url, trained_shop(pg_url, tmp_path)


def served(url: str, bundles: Path, index: str) -> TestClient:
    cfg = ShelfwiseConfig.model_validate({
        "storage": {"url": url, "bundles": str(bundles)},
        "serve": {"vector_index": index, "catalog_sync_seconds": 300}})
    return TestClient(create_app(config=cfg))


def similar(client: TestClient, item: str) -> list[str]:
    body = client.get(f"/v1/items/{item}/similar", params={"n": 3, "diversity": 0}).json()
    return [i["item_id"] for i in body["items"]]


def test_servers_on_pgvector_answer_as_with_faiss_and_share_posted_items(
        pg_shop: tuple[str, Path]) -> None:
    url, bundles = pg_shop
    faiss_client = served(url, bundles, "faiss")
    one, other = served(url, bundles, "pgvector"), served(url, bundles, "pgvector")
    engine = one.app.state.engine  # type: ignore[attr-defined]
    sem = engine.recommender.semantic
    assert sem is not None and sem.approximate
    assert isinstance(sem.index, PgVectorIndex), "the bundle's faiss index is let go"
    for item in ("pan", "shoe-red", "novel"):
        assert similar(one, item) == similar(faiss_client, item)
    assert similar(one, "pan")[0] == "kettle"
    feed = other.get("/v1/users/new-visitor/feed", params={"n": 4}).json()
    assert len(feed["items"]) == 4
    assert one.post("/v1/items", json={"items": [
        {"id": "skillet", "title": "Cast iron skillet, pre-seasoned",
         "category": ["Kitchen"]}]}).status_code == 200
    assert similar(one, "skillet")[0] == "pan"
    table = table_name(engine.recommender.bundle.version, "semantic")
    store = sa.create_engine(url)
    with store.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 7
    assert other.app.state.engine.sync_catalog() == 1  # type: ignore[attr-defined]
    assert similar(other, "skillet")[0] == "pan"
    with store.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 7


def test_pgvector_on_sqlite_is_refused_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    bundles = trained_shop(url, tmp_path)
    with pytest.raises(ConfigError, match=r"needs a PostgreSQL store.*postgresql"):
        served(url, bundles, "pgvector")
