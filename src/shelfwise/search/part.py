"""The search index as a bundle part: built by ``train``, loaded memory-mapped by ``serve``.

The part holds what answering a query needs besides the item vectors (which the semantic
generator already carries): the word and n-gram postings with the item texts
(:class:`SearchIndex`), the feature builder's stem ids, titles, categories, brands and
popularity (:class:`FeatureBuilder`), and the filter postings and prices
(:class:`CatalogFilter`), all over the bundle's items in index order. It records a digest of
the catalog rows it was built from, so a server whose catalog changed since (other than in
prices, which it patches) builds the index afresh instead of serving stale text.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.retrieval.passages import Rows
from shelfwise.search.columns import State, load_state, save_state
from shelfwise.search.features import FeatureBuilder
from shelfwise.search.filters import CatalogFilter
from shelfwise.search.index import QueryEncoder, SearchConfig, SearchIndex

FORMAT = 1
"""Version of the saved layout; a part of another version is rebuilt, not read."""

Parts = tuple[SearchIndex, FeatureBuilder, CatalogFilter]


def rows_digest(titles: Sequence[str], texts: Sequence[str],
                categories: Sequence[Sequence[str]], brands: Sequence[str | None]) -> str:
    """A digest of what the index reads of each item (prices excepted)."""
    h = hashlib.blake2b(digest_size=16)
    unit, record, level = "\x1f", "\x1e", "\x1d"
    h.update(record.join(unit.join((t, x, level.join(c), b or "")) for t, x, c, b in zip(
        titles, texts, categories, brands, strict=True)).encode("utf-8", "surrogatepass"))
    h.update(str(len(titles)).encode())
    return h.hexdigest()


class SearchPart:
    """Saved search-index state for the first ``n_items`` items of a bundle.

    :meth:`open` makes the live objects; each call gets its own (adding items to one never
    touches another or the saved arrays). :meth:`load` checks the state by opening it once and
    keeps those objects for the first :meth:`open`.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._opened: Parts | None = None
        self._lock = threading.Lock()

    @property
    def n_items(self) -> int:
        return int(self.state["n_items"])

    @property
    def char_ngrams(self) -> int:
        return int(self.state["index"]["char_ngrams"])

    @property
    def digest(self) -> str:
        return str(self.state["digest"])

    @classmethod
    def from_parts(cls, index: SearchIndex, features: FeatureBuilder, filters: CatalogFilter,
                   digest: str) -> SearchPart:
        return cls({"format": FORMAT, "n_items": index.n_docs, "digest": digest,
                    "index": index.state(), "features": features.state(),
                    "filter": filters.state()})

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (what is memory-mapped once saved, plus small ones)."""
        def walk(node: Any) -> int:
            if isinstance(node, dict):
                return sum(walk(v) for v in node.values())
            return int(node.nbytes) if isinstance(node, np.ndarray) else 0
        return walk(self.state)

    def summary(self, seconds: float | None = None) -> dict[str, Any]:
        """What the manifest says of it."""
        out: dict[str, Any] = {"items": self.n_items, "char_ngrams": self.char_ngrams,
                               "array_mb": round(self.nbytes / 2**20, 1)}
        if seconds is not None:
            out["seconds"] = round(seconds, 2)
        return out

    def save(self, path: Path) -> int:
        """Write it under the directory ``path``; returns the bytes written."""
        return save_state(path, self.state)

    @classmethod
    def load(cls, path: Path) -> SearchPart:
        """The part under ``path``, large arrays memory-mapped; raises (ValueError, OSError,
        KeyError, ...) when it is missing, truncated or does not hold together."""
        state = load_state(path)
        if state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format')!r}, this version reads {FORMAT}")
        part = cls(state)
        part._opened = part._make(SearchConfig(char_ngrams=part.char_ngrams))
        return part

    def _make(self, config: SearchConfig) -> Parts:
        index = SearchIndex.from_state(self.state["index"], config)
        features = FeatureBuilder.from_state(index, self.state["features"])
        filters = CatalogFilter.from_state(self.state["filter"])
        if not index.n_docs == features.n_items == filters.n_items == self.n_items:
            raise ValueError(f"{self.n_items} items, but {index.n_docs} indexed, "
                             f"{features.n_items} with features and {filters.n_items} in "
                             "the filters")
        return index, features, filters

    def open(self, config: SearchConfig, vectors: Rows | None = None,
             encode_query: QueryEncoder | None = None,
             profile_vectors: NDArray[np.float32] | None = None) -> Parts:
        """Live index, feature builder and filter over the saved state, with ``vectors`` and
        ``encode_query`` for dense retrieval and ``profile_vectors`` for personal features
        (one row per item, kept as given). ``config`` must have the saved n-gram size."""
        with self._lock:
            made, self._opened = self._opened, None
        index, features, filters = made if made is not None else self._make(config)
        if config.char_ngrams != index.config.char_ngrams:
            index = SearchIndex.from_state(self.state["index"], config)  # raises: mismatch
        index.config = config
        index.set_vectors(vectors, encode_query)
        features.set_profile_vectors(profile_vectors)
        return index, features, filters
