"""Query-item and personal features for the search ranker, computed the same way offline and
online (one function feeds both training and serving)."""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError
from shelfwise.search.index import Candidates, SearchIndex
from shelfwise.text.bm25 import put_growing

QUERY_FEATURES = (
    "bm25", "bm25_rel", "bm25_log_rank", "ngram", "ngram_rel", "dense", "dense_rel",
    "dense_log_rank", "fused", "title_coverage", "phrase_match", "category_coverage",
    "title_tokens", "query_tokens", "popularity",
    # word-level matching that survives typos and weighs rare words (see MatchFeatures)
    "fuzzy_coverage", "idf_coverage", "idf_fuzzy_coverage", "missing_idf", "last_word_match",
    "number_mismatch", "gram_containment", "partial_ratio",
)
MATCH_FEATURES = QUERY_FEATURES[QUERY_FEATURES.index("fuzzy_coverage"):]
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
    """Per-catalog lookups (token sets, categories, brands, popularity) for :func:`build`.

    Items are addressed by position, as in the :class:`SearchIndex` they are built with;
    :meth:`add` appends items, and features built afterwards equal those of a builder made
    from all items at once (add to the builder, then to the index, or the other way round,
    but before the next :meth:`build`).
    """

    def __init__(self, index: SearchIndex, titles: Sequence[str],
                 categories: Sequence[Sequence[str]] | None = None,
                 brands: Sequence[str | None] | None = None,
                 popularity: NDArray[np.float64] | None = None,
                 profile_vectors: NDArray[np.float32] | None = None) -> None:
        self.index = index
        self.titles: list[str] = []
        self.title_tokens: list[frozenset[str]] = []
        self.leaf: list[str] = []
        self.root: list[str] = []
        self.category_tokens: list[frozenset[str]] = []
        self.brands: list[str] = []
        self._popularity = np.zeros(0)
        self._profile = (None if profile_vectors is None
                         else np.zeros((0, profile_vectors.shape[1]), np.float32))
        self.match = MatchFeatures(index.tokenize, [], [])
        self.add(titles, categories, brands, popularity, profile_vectors)

    def add(self, titles: Sequence[str], categories: Sequence[Sequence[str]] | None = None,
            brands: Sequence[str | None] | None = None,
            popularity: NDArray[np.float64] | None = None,
            profile_vectors: NDArray[np.float32] | None = None) -> FeatureBuilder:
        """Append items (None for categories, brands or popularity means none / zero);
        ``profile_vectors`` are required exactly when the builder was made with them."""
        if isinstance(titles, str):
            raise TypeError("add() takes a sequence of titles, not a single string")
        n, at = len(titles), len(self.titles)
        for name, seq in (("categories", categories), ("brands", brands),
                          ("popularity", popularity), ("profile_vectors", profile_vectors)):
            if seq is not None and len(seq) != n:
                raise ConfigError(f"{name}: {len(seq)} rows for {n} titles")
        if (profile_vectors is None) != (self._profile is None):
            raise ConfigError("profile_vectors: give them exactly when the builder has them")
        norm = [_norm(t or "") for t in titles]
        tokens = [frozenset(self.index.tokenize(t or "")) for t in titles]
        cats = categories if categories is not None else [()] * n
        self.titles += norm
        self.title_tokens += tokens
        self.leaf += [c[-1] if c else "" for c in cats]
        self.root += [c[0] if c else "" for c in cats]
        self.category_tokens += [frozenset(self.index.tokenize(" ".join(c))) if c
                                 else frozenset() for c in cats]
        self.brands += [(b or "").lower()
                        for b in (brands if brands is not None else [None] * n)]
        pop = (np.zeros(n) if popularity is None
               else np.log1p(np.asarray(popularity, dtype=np.float64)))
        self._popularity = put_growing(self._popularity, at, pop)
        if self._profile is not None and profile_vectors is not None:
            self._profile = put_growing(self._profile, at,
                                        np.asarray(profile_vectors, np.float32))
        self.match.add(tokens, norm)
        return self

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @property
    def popularity(self) -> NDArray[np.float64]:
        """log(1 + popularity) per item."""
        return self._popularity[:self.n_items]

    @property
    def profile_vectors(self) -> NDArray[np.float32] | None:
        """The items' vectors in the user-profile space (None when personalization has none)."""
        return None if self._profile is None else self._profile[:self.n_items]

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
        cols.update(self.match.build(q_norm, idx))
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


class MatchFeatures:
    """How well a title covers the query's words, tolerating typos and weighing rare words.

    Shop queries are short and often misspelled ("hampton bay celing fan"); BM25 sees only exact
    stems and cosine blurs which word is missing. Each query word counts as found when its stem
    is among the title's, or when the word as typed is within one edit (two from 8 letters) of,
    or a prefix relation with, one of the title's words as written (:mod:`rapidfuzz`, expanded
    once per query over the catalog vocabulary, so titles are checked by set lookups). Chinese
    words match exactly only. IDF is over titles, as in BM25. The last query word is the product
    type in most shop queries ("... ceiling fan"), so it has its own flag.
    """

    def __init__(self, tokenize: Callable[[str], list[str]],
                 title_tokens: Sequence[frozenset[str]], titles: Sequence[str]) -> None:
        self.tokenize = tokenize
        self.title_tokens: list[frozenset[str]] = []
        self.titles: list[str] = []
        self.title_words: list[frozenset[str]] = []
        self.df: Counter[str] = Counter()  # titles containing each stem
        self.vocab: list[str] = []  # title words as written, sorted (for prefix lookups)
        self._vocab_set: set[str] = set()
        self._near: dict[str, frozenset[str]] = {}  # expansions of words seen in queries
        self.add(title_tokens, titles)

    def add(self, title_tokens: Sequence[frozenset[str]], titles: Sequence[str]) -> None:
        """Append titles (stem sets and normalised text). Document frequencies grow in place
        and IDF is computed at lookup; new catalog words join the sorted vocabulary and drop
        the cached query-word expansions, which they might extend."""
        words = [frozenset(w for w in _WORDS.findall(t) if w.isascii()) for t in titles]
        self.title_tokens += title_tokens
        self.titles += titles
        self.title_words += words
        for toks in title_tokens:
            self.df.update(toks)
        new = sorted(set().union(*words) - self._vocab_set) if words else []
        if new:
            self._vocab_set.update(new)
            if len(new) > len(self.vocab) // 8:  # a big batch: one merge beats many inserts
                self.vocab = sorted(self.vocab + new)
            else:
                for w in new:
                    bisect.insort(self.vocab, w)
            self._near.clear()

    @property
    def max_idf(self) -> float:
        """IDF of a stem no title contains."""
        n = max(len(self.title_tokens), 1)
        return math.log1p((n + 0.5) / 0.5)

    def idf(self, stem: str) -> float:
        """BM25-style IDF of ``stem`` over titles (:attr:`max_idf` when no title has it)."""
        c = self.df.get(stem, 0)
        n = max(len(self.title_tokens), 1)
        return math.log1p((n - c + 0.5) / (c + 0.5)) if c else self.max_idf

    def units(self, q_norm: str) -> list[tuple[str, str | None]]:
        """The words of a normalised query (:func:`_norm`) as (stem, word as typed or None for
        Chinese), stop words out."""
        out: list[tuple[str, str | None]] = []
        for word in _WORDS.findall(q_norm):
            stems = self.tokenize(word)
            if word.isascii():
                out += [(stems[0], word)] if stems else []
            else:
                out += [(t, None) for t in stems]
        return list(dict.fromkeys(out))

    def expand(self, word: str) -> frozenset[str]:
        """Catalog words (as written) that count as ``word``: near spellings and prefixes."""
        if len(word) < 3 or word[0].isdigit():
            return frozenset({word})
        cached = self._near.get(word)
        if cached is not None:
            return cached
        if len(self._near) >= 100_000:
            self._near.clear()
        self._near[word] = near = self._expand(word)
        return near

    def _expand(self, word: str) -> frozenset[str]:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        out = {word}
        if len(word) >= 4:
            cutoff = 2 if len(word) >= 8 else 1
            out.update(m[0] for m in process.extract(
                word, self.vocab, scorer=Levenshtein.distance, score_cutoff=cutoff,
                limit=None))
        lo = bisect.bisect_left(self.vocab, word)
        while lo < len(self.vocab) and self.vocab[lo].startswith(word):
            out.add(self.vocab[lo])
            lo += 1
        out.update(word[:k] for k in range(3, len(word)) if word[:k] in self._vocab_set)
        return frozenset(out)

    def build(self, q_norm: str, idx: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
        """The :data:`MATCH_FEATURES` of candidates ``idx`` for a normalised query."""
        from rapidfuzz import fuzz

        m = len(idx)
        units = self.units(q_norm)
        if not units or m == 0:
            return {f: np.zeros(m) for f in MATCH_FEATURES}
        near = [self.expand(raw) if raw else frozenset() for _, raw in units]
        w_idf = np.array([self.idf(stem) for stem, _ in units])
        numeric = np.array([stem[0].isdigit() for stem, _ in units])
        exact = np.zeros((m, len(units)))
        fuzzy = np.zeros((m, len(units)))
        for r, i in enumerate(idx):
            stems, words = self.title_tokens[int(i)], self.title_words[int(i)]
            for c, ((stem, _), alts) in enumerate(zip(units, near, strict=True)):
                if stem in stems:
                    exact[r, c] = fuzzy[r, c] = 1.0
                elif not words.isdisjoint(alts):
                    fuzzy[r, c] = 1.0
        total = float(w_idf.sum())
        q_grams = _grams(q_norm)
        return {
            "fuzzy_coverage": fuzzy.mean(1),
            "idf_coverage": exact @ w_idf / total,
            "idf_fuzzy_coverage": fuzzy @ w_idf / total,
            "missing_idf": ((1.0 - fuzzy) * w_idf).max(1),
            "last_word_match": fuzzy[:, -1],
            "number_mismatch": ((1.0 - exact) * numeric).sum(1),
            "gram_containment": np.array([
                len(q_grams & _grams(self.titles[int(i)])) / max(len(q_grams), 1)
                for i in idx]),
            "partial_ratio": np.array([fuzz.partial_ratio(q_norm, self.titles[int(i)]) / 100.0
                                       for i in idx]),
        }


_WORDS = re.compile(r"[^\W_]+")


def _grams(text: str, n: int = 3) -> set[str]:
    return {text[i:i + n] for i in range(len(text) - n + 1)}
