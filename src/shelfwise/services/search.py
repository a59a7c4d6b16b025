"""Personalized search over the live catalog: hybrid retrieval, then the ranker, per user.

The index covers every item the recommender knows (the bundle's plus those posted since), in
the recommender's own index order, so dense vectors, profiles and histories line up with it.
A bundle trained with a store carries the index (``search_index/``, see
:mod:`shelfwise.search.part`): it is opened memory-mapped instead of built, unless the catalog
changed since training in anything but prices (or the n-gram size differs); an old bundle
without it is built from the catalog on first use. Items posted after the index was built are
added to it in place on the next query (lexical, n-gram and dense parts, features and filter
masks); an indexed item whose text, category, brand or price changed makes the next query
rebuild it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.data.loading import item_text
from shelfwise.exceptions import NotFoundError
from shelfwise.ranking.ranker import LambdaMART
from shelfwise.retrieval.passages import Rows
from shelfwise.search.features import FEATURES, FeatureBuilder, UserContext
from shelfwise.search.filters import CatalogFilter
from shelfwise.search.index import Candidates, QueryEncoder, SearchConfig, SearchIndex
from shelfwise.search.part import SearchPart, rows_digest
from shelfwise.services.recommender import Recommender

logger = logging.getLogger(__name__)


class SearchFilters(BaseModel):
    """Restrictions on what a search may return (all optional, combined with AND)."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(default=None, description="category path prefix, e.g. "
                                 "'Home > Kitchen' or a single level such as 'Kitchen'")
    brand: str | None = None
    min_price: float | None = Field(default=None, ge=0)
    max_price: float | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class SearchHit:
    item_id: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchResult:
    hits: list[SearchHit]
    personalized: bool
    ranker: str


class SearchService:
    """Answers ``search`` (whole catalog) and ``rerank`` (a given list) for a user or nobody."""

    def __init__(self, recommender: Recommender, config: SearchConfig | None = None,
                 ranker: LambdaMART | None = None) -> None:
        self.rec = recommender
        self.config = config or SearchConfig()
        self.ranker = ranker or recommender.bundle.search_ranker
        if self.ranker is not None:  # needs a feature the builder no longer makes: fail now
            self.ranker.columns(FEATURES)
        self._lock = threading.RLock()  # held while the index grows and while it is read
        self._built_for = -1
        self._text_version = -1
        self._index = SearchIndex(self.config)
        self._features: FeatureBuilder | None = None
        self._filter = CatalogFilter()
        self._part: SearchPart | None = recommender.bundle.search_index
        self.source = "none"
        """How the index was made: ``bundle`` (opened from the bundle's part), ``built``."""

    # ---- index ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the index covers the catalog (no search will have to build it)."""
        return self._features is not None and self._built_for == len(self.rec.items)

    def warm(self) -> None:
        """Open, build or grow the index now, e.g. at server start, off the request path,
        then answer one query, so what loads on first use (the Chinese segmenter's
        dictionary, the query encoder, the ranker) is not left to the first request."""
        with self._lock:
            index, feats = self._ensure_index()
            query = "warm up 预热"
            self._rank(query, index.retrieve(query), feats, None, 10)

    def _ensure_index(self) -> tuple[SearchIndex, FeatureBuilder]:
        """The index over every item the recommender knows: built on first use, grown in
        place for items posted since (no rebuild), rebuilt only when an item already indexed
        changed its text, category, brand or price. Call with ``_lock`` held."""
        n = len(self.rec.items)
        if self._features is None and self._part is not None:
            part, self._part = self._part, None
            self._open(part, n)
        catalog_changed = self._text_version != self.rec.catalog.text_version
        stale = self._features is None or catalog_changed or n < self._built_for
        if stale or (n > self._built_for and not self._grow(n)):
            self._build(n)
        assert self._features is not None
        return self._index, self._features

    def _rows(self, start: int, n: int) -> tuple[list[str], list[str], list[tuple[str, ...]],
                                                 list[str | None], list[float]]:
        """Titles, texts, category paths, brands and prices of items ``start:n``."""
        ids = self.rec.items.ids[start:n]
        titles, texts, cats, brands, prices = [], [], [], [], []
        for row in self.rec.catalog.search_rows(list(ids)):
            title, description, category, brand, price = row or ("", "", (), None, None)
            titles.append(title)
            cats.append(tuple(category))
            brands.append(brand)
            prices.append(price if price is not None else np.nan)
            texts.append(item_text(title, category, brand, description) if row else "")
        return titles, texts, cats, brands, prices

    def _popularity(self, n: int) -> NDArray[np.float64] | None:
        pop_gen = self.rec.bundle.generators.get("popularity")
        if pop_gen is None:
            return None
        raw = pop_gen.score([np.empty(0, np.int64)])[0].astype(np.float64)
        return np.pad(np.clip(raw, 0, None), (0, max(0, n - raw.shape[0])))[:n]

    def _dense(self, n: int) -> tuple[Rows | None, QueryEncoder | None,
                                      NDArray[np.float32] | None]:
        """Passage vectors, query encoder and profile vectors of items ``:n`` (the semantic
        generator's own arrays), or Nones for a lexical index."""
        sem = self.rec.semantic
        if sem is None or sem.raw_vectors_.shape[0] < n:
            return None, None, None

        def encode(q: str) -> NDArray[np.float32]:
            return self.rec.query_vector(q)
        return sem.raw_vectors_[:n], encode, sem.vectors_[:n]

    def _build(self, n: int) -> None:
        start = time.perf_counter()
        titles, texts, cats, brands, prices = self._rows(0, n)
        vectors, encode, profile_vectors = self._dense(n)
        self._index = SearchIndex(self.config).fit(texts, vectors, encode)
        self._features = FeatureBuilder(self._index, titles, cats, brands, self._popularity(n),
                                        profile_vectors)
        self._filter = CatalogFilter(cats, brands, prices)
        self._built_for = n
        self._text_version = self.rec.catalog.text_version
        self.source = "built"
        logger.info("search index built over %d items in %.1f s", n,
                    time.perf_counter() - start)

    def _open(self, part: SearchPart, n: int) -> bool:
        """Use the bundle's index when it matches the catalog (prices are patched); False,
        with the reason logged, when it has to be built instead."""
        m = part.n_items
        why = None
        if m > n:
            why = f"it covers {m} items, the catalog {n}"
        elif part.char_ngrams != self.config.char_ngrams:
            why = (f"it has {part.char_ngrams}-grams, [serve.search] char_ngrams = "
                   f"{self.config.char_ngrams}")
        else:
            titles, texts, cats, brands, prices = self._rows(0, m)
            if rows_digest(titles, texts, cats, brands) != part.digest:
                why = "the catalog's titles, texts, categories or brands changed since train"
        if why is not None:
            logger.warning("not using the bundle's search index (%s): building it", why)
            return False
        vectors, encode, profile_vectors = self._dense(m)
        index, features, filters = part.open(self.config, vectors, encode, profile_vectors)
        if not np.array_equal(filters.prices, np.asarray(prices, np.float64), equal_nan=True):
            filters.set_prices(np.asarray(prices, np.float64))
        self._index, self._features, self._filter = index, features, filters
        self._built_for = m
        self._text_version = self.rec.catalog.text_version
        self.source = "bundle"
        return True

    def export(self) -> SearchPart:
        """The index over the whole catalog as a bundle part (built now if needed)."""
        with self._lock:
            index, features = self._ensure_index()
            titles, texts, cats, brands, _ = self._rows(0, index.n_docs)
            return SearchPart.from_parts(index, features, self._filter,
                                         rows_digest(titles, texts, cats, brands))

    def _grow(self, n: int) -> bool:
        """Add items ``_built_for:n`` to the index, features and filters; False when it
        cannot (a dense index whose new items have no vectors yet)."""
        assert self._features is not None
        start = self._built_for
        sem = self.rec.semantic
        dense = self._index.vectors is not None
        if dense and (sem is None or sem.raw_vectors_.shape[0] < n):
            return False
        titles, texts, cats, brands, prices = self._rows(start, n)
        pop = self._popularity(n)
        # whole matrices: the index and builder keep views, not copies, of the generator's
        self._features.add(
            titles, cats, brands, None if pop is None else pop[start:n],
            sem.vectors_[:n] if sem is not None and self._features.profile_vectors
            is not None else None)
        self._index.add(texts, sem.raw_vectors_[:n] if dense and sem is not None else None)
        self._filter.add(cats, brands, prices)
        self._built_for = n
        return True

    def _allowed(self, filters: SearchFilters | None, n: int) -> NDArray[np.bool_]:
        blocked = self.rec.blocked[:n]
        ok = ~np.pad(blocked, (0, max(0, n - blocked.shape[0])))
        if filters is None:
            return ok
        return ok & self._filter.mask(filters.category, filters.brand, filters.min_price,
                                      filters.max_price)

    # ---- queries -------------------------------------------------------------------------
    def _user(self, user_id: str | None) -> UserContext | None:
        return self.context(self.rec.history(user_id)) if user_id else None

    def context(self, history: NDArray[np.int64]) -> UserContext | None:
        """What personalization uses of a history (model indices, oldest first); None if
        empty."""
        if len(history) == 0:
            return None
        sem = self.rec.semantic
        profile = sem.profile(history) if sem is not None else None
        return UserContext(profile=profile, history=history)

    def search(self, query: str, user_id: str | None = None, n: int = 10,
               filters: SearchFilters | None = None, *,
               use_ranker: bool = True) -> SearchResult:
        """``use_ranker=False`` answers in the fused retrieval order (an experiment's
        variant without the learned ranker)."""
        user = self._user(user_id)
        with self._lock:
            index, feats = self._ensure_index()
            cand = index.retrieve(query, allowed=self._allowed(filters, index.n_docs))
            return self._rank(query, cand, feats, user, n, use_ranker)

    def compare(self, query: str, user_id: str | None = None, n: int = 10
                ) -> tuple[list[str], SearchResult, list[dict[str, float]]]:
        """The fused retrieval order (top ``n``), the served order for ``user_id`` and, per
        served item, each feature's contribution to its score (the ranker's SHAP values,
        bias left out; without a ranker the fused score and the profile nudge): what moved
        each item between the two orders."""
        user = self._user(user_id)
        with self._lock:
            index, feats = self._ensure_index()
            cand = index.retrieve(query, allowed=self._allowed(None, index.n_docs))
            fused = np.lexsort((cand.index, -cand.fused))[:n]
            result = self._rank(query, cand, feats, user, n)
            at = {self.rec.items.external(int(cand.index[j])): j for j in range(len(cand.index))}
            rows = np.asarray([at[h.item_id] for h in result.hits], np.int64)
            contrib: list[dict[str, float]] = []
            if self.ranker is not None and len(rows):
                cols = self.ranker.columns(FEATURES)
                x = feats.build(query, cand, user)[rows][:, cols]
                values = self.ranker.contributions(x)[:, :-1]
                names = [FEATURES[c] for c in cols]
                contrib = [{f: float(v) for f, v in zip(names, r, strict=True) if v != 0}
                           for r in values]
            else:
                for h in result.hits:
                    j = at[h.item_id]
                    contrib.append({"fused": float(cand.fused[j]),
                                    "profile_sim": float(h.score - cand.fused[j])})
        return [self.rec.items.external(int(cand.index[j])) for j in fused], result, contrib

    def rerank(self, query: str, item_ids: Sequence[str], user_id: str | None = None, *,
               use_ranker: bool = True) -> SearchResult:
        user = self._user(user_id)
        with self._lock:
            index, feats = self._ensure_index()
            idx = self.rec.items.indices(list(item_ids))
            missing = [i for i, k in zip(item_ids, idx, strict=True)
                       if k < 0 or k >= index.n_docs]
            if missing:
                raise NotFoundError(f"items: unknown ids {missing[:10]}; post them to "
                                    "/v1/items first")
            cand = index.candidates(np.asarray(idx, np.int64), query=query)
            return self._rank(query, cand, feats, user, len(item_ids), use_ranker)

    def feature_rows(self, query: str, item_ids: Sequence[str], user: UserContext | None, *,
                     retrieved: bool = True) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The ranker's feature rows and the fused score of ``item_ids`` for ``query``, as
        serving computed them (for training the ranker from logged requests): ``retrieved``
        for a ``search`` (fused as retrieval fuses), False for a ``rerank`` of a given list."""
        with self._lock:
            index, feats = self._ensure_index()
            idx = np.asarray(self.rec.items.indices(list(item_ids)), np.int64)
            if np.any((idx < 0) | (idx >= index.n_docs)):
                raise NotFoundError(f"items: unknown ids among {list(item_ids)[:10]}")
            cand = index.candidates(idx, query=query, within_depth=retrieved)
            return feats.build(query, cand, user), cand.fused

    def _rank(self, query: str, cand: Candidates, feats: FeatureBuilder,
              user: UserContext | None, n: int, use_ranker: bool = True) -> SearchResult:
        if self.ranker is not None and use_ranker and len(cand.index):
            x = feats.build(query, cand, user)
            score = self.ranker.predict(x[:, self.ranker.columns(FEATURES)])
            name = "lambdamart"
        else:
            x = None
            score = cand.fused.copy()
            if user is not None and user.profile is not None and feats.profile_vectors is not \
                    None and len(cand.index):  # fall-back personalization: a light nudge
                score = score + 0.002 * (feats.profile_vectors[cand.index] @ user.profile)
            name = "rrf"
        order = np.lexsort((cand.index, -score))[:n]
        hits = []
        for j in order:
            parts = {k: float(v[j]) for k, v in cand.scores.items()}
            if x is not None:
                parts["profile_sim"] = float(x[j, FEATURES.index("profile_sim")])
            hits.append(SearchHit(self.rec.items.external(int(cand.index[j])), float(score[j]),
                                  parts))
        return SearchResult(hits, personalized=user is not None, ranker=name)
