"""On-disk embedding cache keyed by (encoder id, kind, sha1 of text).

Re-embedding an unchanged catalog is the most expensive thing a nightly ``train`` would do; with
this cache only new or edited titles reach the model. Vectors live in one SQLite table
(``<cache>/embeddings.sqlite`` by default, WAL mode, safe across threads and processes). The kind
(``item`` or ``query``) is part of the key because asymmetric models embed the same text
differently as a query and as an item.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shelfwise.exceptions import StoreError
from shelfwise.text.base import Embeddings, TextEncoder, cache_root, check_texts

_CHUNK = 500  # keys per SELECT … IN (…), below SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    kind TEXT NOT NULL,
    text_sha1 BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, kind, text_sha1)
) WITHOUT ROWID
"""


def text_key(text: str) -> bytes:
    """SHA-1 digest of the UTF-8 text: the cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).digest()


class EmbeddingCache:
    """A SQLite store of float32 vectors; ``get``/``put`` work on batches."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_root() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open embedding cache {self.path}: {exc}") from exc

    def get(self, encoder: str, kind: str, keys: Sequence[bytes]) -> dict[bytes, Embeddings]:
        """Stored vectors for those of ``keys`` that are present."""
        found: dict[bytes, Embeddings] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT text_sha1, vector FROM embeddings WHERE encoder = ? AND kind = ? "
                    f"AND text_sha1 IN ({marks})",
                    [encoder, kind, *chunk],
                ).fetchall()
                for key, blob in rows:
                    found[bytes(key)] = np.frombuffer(blob, np.float32)
        return found

    def put(self, encoder: str, kind: str, keys: Sequence[bytes], vectors: Embeddings) -> None:
        """Store one vector per key (existing entries are kept)."""
        rows = [
            (encoder, kind, k, np.ascontiguousarray(v, np.float32).tobytes())
            for k, v in zip(keys, vectors, strict=True)
        ]
        with self._lock:
            try:
                self._db.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                self._db.rollback()
                raise StoreError(f"cannot write embedding cache {self.path}: {exc}") from exc

    def count(self, encoder: str | None = None) -> int:
        """Number of stored vectors (of one encoder, or all)."""
        with self._lock:
            if encoder is None:
                row = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE encoder = ?", (encoder,)
                ).fetchone()
        return int(row[0])

    def delete(self, encoder: str) -> int:
        """Drop every vector of ``encoder`` (e.g. after fine-tuning replaced it)."""
        with self._lock:
            cur = self._db.execute("DELETE FROM embeddings WHERE encoder = ?", (encoder,))
            self._db.commit()
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedEncoder:
    """A :class:`TextEncoder` that answers from an :class:`EmbeddingCache` and encodes only misses.

    Items are always cached; queries only with ``cache_queries`` (they repeat less and would grow
    the table with every search). ``hits``/``misses`` count texts, for monitoring and tests.
    """

    def __init__(
        self, encoder: TextEncoder, cache: EmbeddingCache, *, cache_queries: bool = False
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.cache_queries = cache_queries
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.encoder.id

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode_items(self, texts: Sequence[str]) -> Embeddings:
        return self._encode(check_texts(texts), "item")

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        texts = check_texts(texts)
        if not self.cache_queries:
            return self.encoder.encode_queries(texts)
        return self._encode(texts, getattr(self.encoder, "query_kind", "query"))

    def _encode(self, texts: list[str], kind: str) -> Embeddings:
        out = np.empty((len(texts), self.dim), np.float32)
        if not texts:
            return out
        keys = [text_key(t) for t in texts]
        found = self.cache.get(self.id, kind, list(dict.fromkeys(keys)))
        todo: dict[bytes, str] = {}  # distinct missing texts, first occurrence order
        for k, t in zip(keys, texts, strict=True):
            if k not in found:
                todo.setdefault(k, t)
        if todo:
            fn = self.encoder.encode_items if kind == "item" else self.encoder.encode_queries
            new = fn(list(todo.values()))
            self.cache.put(self.id, kind, list(todo), new)
            found.update(zip(todo, new, strict=True))
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out
