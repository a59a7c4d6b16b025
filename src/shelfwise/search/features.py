"""Query-item and personal features for the search ranker, computed the same way offline and
online (one function feeds both training and serving)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shelfwise.search.index import Candidates, SearchIndex

QUERY_FEATURES = (
    "bm25", "bm25_rel", "bm25_log_rank", "ngram", "ngram_rel", "dense", "dense_rel",
    "dense_log_rank", "fused", "title_coverage", "phrase_match", "category_coverage",
    "title_tokens", "query_tokens", "popularity",
)
PERSONAL_FEATURES = ("profile_sim", "category_affinity", "root_category_affinity",
                     "brand_affinity", "seen_count")
FEATURES = QUERY_FEATURES + PERSONAL_FEATURES


@dataclass
class UserContext:
    """What personalization knows of the searcher: a profile vector in the item-vector space
    used for ``profile_sim`` and the catalog positions of their past items (oldest first)."""

    profile: NDArray[np.float32] | None
    history: NDArray[np.int64]


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


class FeatureBuilder:
    """Per-catalog lookups (token sets, categories, brands, popularity) for :func:`build`."""

    def __init__(self, index: SearchIndex, titles: Sequence[str],
                 categories: Sequence[Sequence[str]] | None = None,
                 brands: Sequence[str | None] | None = None,
                 popularity: NDArray[np.float64] | None = None,
                 profile_vectors: NDArray[np.float32] | None = None) -> None:
        n = len(titles)
        self.index = index
        self.titles = [_norm(t or "") for t in titles]
        self.title_tokens = [frozenset(index.tokenize(t)) for t in titles]
        cats = categories or [()] * n
        self.leaf = [c[-1] if c else "" for c in cats]
        self.root = [c[0] if c else "" for c in cats]
        self.category_tokens = [frozenset(index.tokenize(" ".join(c))) if c else frozenset()
                                for c in cats]
        self.brands = [(b or "").lower() for b in (brands or [None] * n)]
        self.popularity = (np.zeros(n) if popularity is None
                           else np.log1p(np.asarray(popularity, dtype=np.float64)))
        self.profile_vectors = profile_vectors

    def build(self, query: str, cand: Candidates, user: UserContext | None = None
              ) -> NDArray[np.float32]:
        """One row of :data:`FEATURES` per candidate (personal columns 0 without a user)."""
        idx = cand.index
        m = len(idx)
        cols: dict[str, NDArray[np.float64]] = {}
        for name in ("bm25", "ngram", "dense"):
            s = cand.scores.get(name)
            s64 = np.zeros(m) if s is None else s.astype(np.float64)
            cols[name] = s64
            top = s64.max() if m else 0.0
            cols[f"{name}_rel"] = s64 - top if name == "dense" else (
                s64 / top if top > 0 else np.zeros(m))
        for name in ("bm25", "dense"):
            r = cand.ranks.get(name)
            cols[f"{name}_log_rank"] = (np.full(m, np.log(self.index.n_docs + 1.0)) if r is None
                                        else np.log(r.astype(np.float64)))
        cols["fused"] = cand.fused.astype(np.float64)
        q_tokens = frozenset(self.index.tokenize(query))
        nq = max(len(q_tokens), 1)
        q_norm = _norm(query)
        cols["title_coverage"] = np.array([len(q_tokens & self.title_tokens[i]) / nq
                                           for i in idx], dtype=np.float64)
        cols["phrase_match"] = np.array([float(bool(q_norm) and q_norm in self.titles[i])
                                         for i in idx], dtype=np.float64)
        cols["category_coverage"] = np.array([len(q_tokens & self.category_tokens[i]) / nq
                                              for i in idx], dtype=np.float64)
        cols["title_tokens"] = np.array([len(self.title_tokens[i]) for i in idx], np.float64)
        cols["query_tokens"] = np.full(m, float(len(q_tokens)))
        cols["popularity"] = self.popularity[idx] if m else np.zeros(0)
        cols.update(self._personal(idx, user))
        return np.column_stack([cols[f] for f in FEATURES]).astype(np.float32) if m else (
            np.zeros((0, len(FEATURES)), np.float32))

    def _personal(self, idx: NDArray[np.int64], user: UserContext | None
                  ) -> dict[str, NDArray[np.float64]]:
        m = len(idx)
        zeros = {f: np.zeros(m) for f in PERSONAL_FEATURES}
        if user is None or len(user.history) == 0:
            return zeros
        hist = user.history
        out = dict(zeros)
        if user.profile is not None and self.profile_vectors is not None:
            out["profile_sim"] = (self.profile_vectors[idx] @ user.profile).astype(np.float64)
        n = float(len(hist))
        for key, table in (("category_affinity", self.leaf), ("root_category_affinity",
                                                               self.root),
                           ("brand_affinity", self.brands)):
            counts: dict[str, int] = {}
            for h in hist:
                v = table[int(h)]
                if v:
                    counts[v] = counts.get(v, 0) + 1
            out[key] = np.array([counts.get(table[int(i)], 0) / n if table[int(i)] else 0.0
                                 for i in idx])
        seen: dict[int, int] = {}
        for h in hist:
            seen[int(h)] = seen.get(int(h), 0) + 1
        out["seen_count"] = np.log1p(np.array([seen.get(int(i), 0) for i in idx], np.float64))
        return out
