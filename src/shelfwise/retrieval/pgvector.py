"""Item vectors in PostgreSQL's pgvector (HNSW), an option beside faiss (``[serve]
vector_index = "pgvector"``).

With faiss every server process loads its own copy of the semantic generator's HNSW index
and appends posted items to it. With pgvector the index lives once in the store's database:
processes and machines serving one shop share it, and an item posted to any of them is
written there once (keyed by its id, so two processes adding the same item agree).

One table per bundle version and generator (``sw_vectors_<hash>``: item id, vector; its
comment names the bundle) with a pgvector HNSW index on inner product. The first process
that serves a bundle fills it (in one transaction under an advisory lock: the others wait,
then find it full); items posted since training are added by whoever indexes them. Tables
of bundles no longer served stay until dropped (``\\dt+ sw_vectors_*`` lists them).
Searches return item ids, which each process maps to its own row numbers (the order in
which a process learnt of posted items is its own); an id it does not know yet (posted
elsewhere, not synced here) is left out.

Measured by ``benchmarks/bench_pgvector.py`` (100k bench shop, 384-d, lists of 400): a
search takes ~10x faiss's time (``EXPLAIN ANALYZE``: ~4-6 ms of it inside PostgreSQL, the
rest the round trip, the vector as text and the rows back), so faiss stays the default;
pgvector is for memory per process and one index shared by machines.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError, StoreError

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
MAX_EF_SEARCH = 1000  # pgvector's limit


def table_name(version: str, generator: str) -> str:
    """The vectors table of one bundle version's generator (a safe identifier)."""
    digest = hashlib.sha1(f"{version}/{generator}".encode()).hexdigest()[:16]
    return f"sw_vectors_{digest}"


def _literal(v: NDArray[np.float32]) -> str:
    return "[" + ",".join(map(repr, np.asarray(v, np.float32).tolist())) + "]"


class PgVectorIndex:
    """:class:`~shelfwise.retrieval.ann.VectorIndex`'s interface (inner product, rows
    0..n-1, appends) over a pgvector table; rows are this process's, the table's keys item
    ids. Scores are exact (pgvector stores float32); the HNSW list is approximate."""

    exact = False
    quantized = False

    def __init__(self, engine: sa.Engine, table: str, dim: int, ids: Sequence[str],
                 *, ef_search: int = 128, owner: str = "") -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigError(
                f"[serve] vector_index = \"pgvector\" needs a PostgreSQL store, not "
                f"{engine.dialect.name}: set storage.url to postgresql+psycopg://... or "
                "vector_index = \"faiss\"")
        self.engine = engine
        self.table = table
        self.dim = dim
        self.ef_search = ef_search
        self.owner = owner  # which bundle and generator (the table's comment)
        self._ids: list[str] = list(ids)
        self._rows: dict[str, int] = {i: k for k, i in enumerate(self._ids)}
        self._lock = threading.Lock()  # guards the row map (searches read it)
        self._local = threading.local()
        # searches hold a connection per thread, outside the store's pool
        self._search_engine = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)

    @classmethod
    def attach(cls, engine: sa.Engine, table: str, vectors: NDArray[np.float32],
               ids: Sequence[str], *, ef_search: int = 128, owner: str = ""
               ) -> PgVectorIndex:
        """The index over ``vectors`` (rows named by ``ids``), creating and filling its
        table when no process has yet; rows the table lacks (items posted since training)
        are added."""
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"{len(ids)} ids for {vectors.shape[0]} vectors")
        index = cls(engine, table, int(vectors.shape[1]), ids, ef_search=ef_search,
                    owner=owner)
        index._fill(np.ascontiguousarray(vectors, np.float32))
        return index

    def _fill(self, vectors: NDArray[np.float32]) -> None:
        key = int(hashlib.sha1(self.table.encode()).hexdigest()[:15], 16)
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (key,))
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
                conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {self.table} (item_id TEXT PRIMARY KEY, "
                    f"embedding vector({self.dim}) NOT NULL)")
                have = conn.exec_driver_sql(f"SELECT count(*) FROM {self.table}").scalar()
                if not have:  # the whole bundle at once; its HNSW index after the rows
                    comment = f"shelfwise item vectors: {self.owner}".replace("'", "''")
                    conn.exec_driver_sql(f"COMMENT ON TABLE {self.table} IS '{comment}'")
                    self._copy(conn, self._ids, vectors)
                    conn.exec_driver_sql(
                        f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} "
                        f"USING hnsw (embedding vector_ip_ops) WITH (m = {HNSW_M}, "
                        f"ef_construction = {HNSW_EF_CONSTRUCTION})")
                else:  # items posted since training that no process has added yet
                    stored = {r[0] for r in conn.exec_driver_sql(
                        f"SELECT item_id FROM {self.table}")}
                    missing = [k for k, i in enumerate(self._ids) if i not in stored]
                    if missing:
                        self._upsert(conn, [self._ids[k] for k in missing], vectors[missing])
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"pgvector table {self.table}: {exc.orig} (the database needs the vector "
                "extension, CREATE EXTENSION vector, and a role that may create tables)"
            ) from exc

    def _copy(self, conn: sa.Connection, ids: Sequence[str],
              vectors: NDArray[np.float32]) -> None:
        """All rows through ``COPY`` (the driver's, on the transaction's connection)."""
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(
                f"COPY {self.table} (item_id, embedding) FROM STDIN") as copy:
            for item, v in zip(ids, vectors, strict=True):
                copy.write_row((item, _literal(v)))

    def _upsert(self, conn: sa.Connection, ids: Sequence[str],
                vectors: NDArray[np.float32]) -> None:
        conn.exec_driver_sql(
            f"INSERT INTO {self.table} (item_id, embedding) VALUES (%s, %s::vector) "
            "ON CONFLICT (item_id) DO NOTHING",
            [(i, _literal(v)) for i, v in zip(ids, vectors, strict=True)])

    def __len__(self) -> int:
        return len(self._ids)

    def _cursor(self, ef: int) -> Any:
        """A cursor on this thread's own autocommit connection (a search is one round trip:
        no pool checkout, no BEGIN/COMMIT; ~2 ms less than through the store's pool), with
        ``hnsw.ef_search`` at ``ef``."""
        conn: Any = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            held = self._search_engine.raw_connection()  # closed when let go (NullPool)
            conn = held.driver_connection
            conn.autocommit = True
            self._local.held, self._local.conn, self._local.ef = held, conn, None
        if self._local.ef != ef:
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            self._local.ef = ef
        return conn.cursor()

    def add(self, vectors: NDArray[np.float32], ids: Sequence[str] | None = None) -> None:
        """Append rows ``len(self)..`` named by ``ids`` (an item another process added is
        kept as it is: the same text and encoder give the same vector)."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if ids is None or len(ids) != vectors.shape[0]:
            raise ValueError("a pgvector index needs the item id of every added vector")
        if vectors.shape[1] != self.dim:
            raise ConfigError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        try:
            with self.engine.begin() as conn:
                self._upsert(conn, ids, vectors)
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"pgvector table {self.table}: {exc.orig}") from exc
        with self._lock:  # one row per vector, as the caller's rows grow (an id given
            for item in ids:  # twice keeps its first row)
                self._rows.setdefault(item, len(self._ids))
                self._ids.append(item)

    def search(self, queries: NDArray[np.float32], k: int, *, ef: int = 0
               ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` rows per query by inner product, best first; -1 pads (fewer items, or
        ids this process does not know yet)."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        k = max(1, k)
        ef = min(MAX_EF_SEARCH, max(self.ef_search, k, ef))
        idx = np.full((q.shape[0], k), -1, np.int64)
        val = np.full((q.shape[0], k), -np.inf, np.float32)
        sql = (f"SELECT item_id, embedding <#> %s::vector AS d FROM {self.table} "
               "ORDER BY d LIMIT %s")  # <#>: the negative inner product
        for attempt in (1, 2):  # a connection the server closed (restart) is replaced once
            try:
                cur = self._cursor(ef)
                found = [cur.execute(sql, (_literal(row), k)).fetchall() for row in q]
                break
            except Exception as exc:
                conn = self._local.conn
                self._local.held = self._local.conn = None
                if not type(exc).__module__.startswith("psycopg"):
                    raise
                if attempt == 2 or conn is None or not conn.closed:
                    raise StoreError(f"pgvector search in {self.table}: {exc}") from exc
        with self._lock:
            for row, rows in enumerate(found):
                kept = [(self._rows[i], -d) for i, d in rows if i in self._rows]
                if kept:
                    idx[row, :len(kept)] = [r for r, _ in kept]
                    val[row, :len(kept)] = [s for _, s in kept]
        return idx, val
