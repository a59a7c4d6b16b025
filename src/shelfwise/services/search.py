"""Personalized search over the live catalog: hybrid retrieval, then the ranker, per user.

The index covers every item the recommender knows (the bundle's plus those posted since), in
the recommender's own index order, so dense vectors, profiles and histories line up with it.
Items posted after the index was built mark it stale; the next query rebuilds it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.data.loading import item_text
from shelfwise.exceptions import NotFoundError
from shelfwise.search.features import FEATURES, FeatureBuilder, UserContext
from shelfwise.search.index import Candidates, SearchConfig, SearchIndex
from shelfwise.search.ranker import LTRRanker
from shelfwise.services.recommender import Recommender

RANKER_DIR = "search_ranker"


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
                 ranker: LTRRanker | None = None) -> None:
        self.rec = recommender
        self.config = config or SearchConfig()
        path = recommender.bundle.path / RANKER_DIR
        self.ranker = ranker or (LTRRanker.load(path) if path.is_dir() else None)
        self._lock = threading.Lock()
        self._built_for = -1
        self._index = SearchIndex(self.config)
        self._features: FeatureBuilder | None = None
        self._prices = np.zeros(0)
        self._paths: list[tuple[str, ...]] = []

    # ---- index ---------------------------------------------------------------------------
    def _ensure_index(self) -> tuple[SearchIndex, FeatureBuilder]:
        with self._lock:
            n = len(self.rec.items)
            if self._features is None or self._built_for != n:
                self._build(n)
            assert self._features is not None
            return self._index, self._features

    def _build(self, n: int) -> None:
        ids = self.rec.items.ids[:n]
        catalog = self.rec.store.get_items(list(ids))
        titles, texts, cats, brands, prices = [], [], [], [], []
        for item_id in ids:
            it = catalog.get(item_id)
            titles.append(it.title if it else "")
            cats.append(tuple(it.category) if it else ())
            brands.append(it.brand if it else None)
            prices.append(it.price if it and it.price is not None else np.nan)
            texts.append(item_text(it.title, it.category, it.brand, it.description)
                         if it else "")
        sem = self.rec.semantic
        vectors = encode = profile_vectors = None
        if sem is not None and sem.raw_vectors_.shape[0] >= n:
            vectors, profile_vectors = sem.raw_vectors_[:n], sem.vectors_[:n]

            def encode(q: str) -> NDArray[np.float32]:
                return np.asarray(sem.encoder.encode_queries([q])[0], dtype=np.float32)
        self._index = SearchIndex(self.config).fit(texts, vectors, encode)
        pop_gen = self.rec.bundle.generators.get("popularity")
        pop = None
        if pop_gen is not None:
            raw = pop_gen.score([np.empty(0, np.int64)])[0].astype(np.float64)
            pop = np.pad(np.clip(raw, 0, None), (0, max(0, n - raw.shape[0])))[:n]
        self._features = FeatureBuilder(self._index, titles, cats, brands, pop, profile_vectors)
        self._prices = np.asarray(prices, dtype=np.float64)
        self._paths = [tuple(c.lower() for c in p) for p in cats]
        self._built_for = n

    def _allowed(self, filters: SearchFilters | None, n: int) -> NDArray[np.bool_]:
        blocked = self.rec.blocked[:n]
        ok = ~np.pad(blocked, (0, max(0, n - blocked.shape[0])))
        if filters is None:
            return ok
        if filters.category:
            want = tuple(p.strip().lower() for p in filters.category.split(">") if p.strip())
            ok &= np.array([_has_path(p, want) for p in self._paths], dtype=bool)
        if filters.brand:
            assert self._features is not None
            ok &= np.array([b == filters.brand.lower() for b in self._features.brands])
        if filters.min_price is not None:
            ok &= self._prices >= filters.min_price
        if filters.max_price is not None:
            ok &= self._prices <= filters.max_price
        return ok

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
               filters: SearchFilters | None = None) -> SearchResult:
        index, feats = self._ensure_index()
        cand = index.retrieve(query, allowed=self._allowed(filters, index.n_docs))
        return self._rank(query, cand, feats, user_id, n)

    def rerank(self, query: str, item_ids: Sequence[str], user_id: str | None = None
               ) -> SearchResult:
        index, feats = self._ensure_index()
        idx = self.rec.items.indices(list(item_ids))
        missing = [i for i, k in zip(item_ids, idx, strict=True) if k < 0 or k >= index.n_docs]
        if missing:
            raise NotFoundError(f"items: unknown ids {missing[:10]}; post them to /v1/items "
                                "first")
        cand = index.candidates(np.asarray(idx, np.int64), query=query)
        return self._rank(query, cand, feats, user_id, len(item_ids))

    def feature_rows(self, query: str, item_ids: Sequence[str], user: UserContext | None, *,
                     retrieved: bool = True) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The ranker's feature rows and the fused score of ``item_ids`` for ``query``, as
        serving computed them (for training the ranker from logged requests): ``retrieved``
        for a ``search`` (fused as retrieval fuses), False for a ``rerank`` of a given list."""
        index, feats = self._ensure_index()
        idx = np.asarray(self.rec.items.indices(list(item_ids)), np.int64)
        if np.any((idx < 0) | (idx >= index.n_docs)):
            raise NotFoundError(f"items: unknown ids among {list(item_ids)[:10]}")
        cand = index.candidates(idx, query=query, within_depth=retrieved)
        return feats.build(query, cand, user), cand.fused

    def _rank(self, query: str, cand: Candidates, feats: FeatureBuilder, user_id: str | None,
              n: int) -> SearchResult:
        user = self._user(user_id)
        if self.ranker is not None and len(cand.index):
            x = feats.build(query, cand, user)
            score = self.ranker.predict(x[:, self.ranker.columns()])
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


def _has_path(path: tuple[str, ...], want: tuple[str, ...]) -> bool:
    """True when ``want`` is a prefix of ``path`` or, for one level, any level of it."""
    if len(want) == 1:
        return want[0] in path
    return path[: len(want)] == want
