"""Nearest-neighbour search over item vectors: exact below a size threshold, HNSW above."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError

#: Catalogs up to this many items use exact inner-product search (it is fast and has recall 1).
EXACT_THRESHOLD = 50_000


class SharedLock:
    """Many holders of the shared side at once, or one of the exclusive side. A waiting
    exclusive holder keeps new shared ones out, so appends are not starved by searches."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class VectorIndex:
    """Inner-product (cosine, for L2-normalised vectors) search over rows 0..n-1, with appends.

    ``exact`` decides the faiss index: ``IndexFlatIP`` or ``IndexHNSWFlat`` (inner product);
    None picks exact below :data:`EXACT_THRESHOLD` items. Safe to share between threads:
    searches run side by side (faiss searches are thread-safe, and each passes its own
    ``efSearch``), appends alone.
    """

    def __init__(self, dim: int, *, exact: bool | None = None, n_hint: int = 0,
                 hnsw_m: int = 32, ef_search: int = 128, quantized: bool = False) -> None:
        import faiss

        if dim <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dim}")
        self.dim = dim
        self.exact = n_hint <= EXACT_THRESHOLD if exact is None else exact
        self._rw = SharedLock()
        if self.exact:
            self._index: Any = faiss.IndexFlatIP(dim)
        elif quantized:  # 1 byte per dimension: a quarter of the memory; rescore exactly
            self._index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit,  # type: ignore[arg-type]
                                            hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efSearch = ef_search
        else:
            self._index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efSearch = ef_search

    @property
    def quantized(self) -> bool:
        """Whether vectors are stored in 8 bits (search scores are then approximate)."""
        import faiss

        return isinstance(self._index, faiss.IndexHNSWSQ)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: NDArray[np.float32], ids: Sequence[str] | None = None) -> None:
        """Append rows ``len(self)..`` (``ids``, the items' names, are for indexes keyed by
        item id: :class:`~shelfwise.retrieval.pgvector.PgVectorIndex`)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ConfigError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        with self._rw.exclusive():
            if not self._index.is_trained:  # a quantizer learns its ranges from the first rows
                self._index.train(vectors)
            self._index.add(vectors)

    def search(self, queries: NDArray[np.float32], k: int, *, ef: int = 0
               ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` rows per query, best first; missing slots are -1. ``ef`` widens an HNSW
        search beyond its default (and beyond ``k``) for more recall."""
        import faiss

        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._rw.shared():
            k = max(1, min(k, len(self))) if len(self) else 1
            if self.exact:
                scores, idx = self._index.search(q, k)
            else:  # HNSW keeps only efSearch candidates: a longer list needs a wider search
                ef = max(int(self._index.hnsw.efSearch), k, ef)
                params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
                scores, idx = self._index.search(q, k, params=params)
        return idx.astype(np.int64), scores.astype(np.float32)

    def save(self, path: Path) -> None:
        import faiss

        with self._rw.shared():
            faiss.write_index(self._index, str(path))

    def to_array(self) -> NDArray[np.uint8]:
        """The index serialised into bytes (for a state saved with other arrays)."""
        import faiss

        with self._rw.shared():
            out: NDArray[np.uint8] = faiss.serialize_index(self._index)
        return out

    @classmethod
    def from_array(cls, data: NDArray[np.uint8]) -> VectorIndex:
        import faiss

        return cls._wrap(faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8)))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        import faiss

        return cls._wrap(faiss.read_index(str(path)))

    @classmethod
    def _wrap(cls, raw: Any) -> VectorIndex:
        import faiss

        obj = cls.__new__(cls)
        obj.dim = int(raw.d)
        obj.exact = isinstance(raw, faiss.IndexFlat)
        obj._index = raw
        obj._rw = SharedLock()
        return obj


def spread_sample(n: int, size: int) -> NDArray[np.int64]:
    """At most ``size`` evenly spaced positions of ``0..n-1``: the items whose exact scores
    stand in for a large catalog's score distribution."""
    out: NDArray[np.int64] = np.unique(np.linspace(0, n - 1, min(n, size)).astype(np.int64))
    return out


def fill_value(sample_scores: NDArray[np.floating], list_scores: NDArray[np.floating]
               ) -> NDArray[np.float32]:
    """Per row, the score given to items outside an exactly scored top list: the sample's
    median, never above the list's last entry (no such item scores higher than it)."""
    last = np.where(np.isfinite(list_scores), list_scores, np.inf).min(axis=-1, initial=np.inf)
    median = (np.median(sample_scores, axis=-1) if sample_scores.shape[-1]
              else np.zeros(sample_scores.shape[:-1]))
    out: NDArray[np.float32] = np.minimum(median, last).astype(np.float32)
    return out
