"""Query-item and personal features for the search ranker, computed the same way offline and
online (one function feeds both training and serving)."""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError
from shelfwise.search.columns import Codes, Ragged, State, TextColumn
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
    """Per-catalog lookups (token ids, categories, brands, popularity) for :func:`build`.

    Items are addressed by position, as in the :class:`SearchIndex` they are built with;
    :meth:`add` appends items, and features built afterwards equal those of a builder made
    from all items at once (add to the builder, then to the index, or the other way round,
    but before the next :meth:`build`). Per-item data are flat arrays (:mod:`.columns`), so
    :meth:`state` saves them and :meth:`from_state` maps them back.
    """

    def __init__(self, index: SearchIndex, titles: Sequence[str],
                 categories: Sequence[Sequence[str]] | None = None,
                 brands: Sequence[str | None] | None = None,
                 popularity: NDArray[np.float64] | None = None,
                 profile_vectors: NDArray[np.float32] | None = None) -> None:
        self.index = index
        self.match = MatchFeatures(index.tokenize)
        self.category_stems = Ragged()  # ids into match.stems
        self.leaf, self.root, self.brands = Codes(), Codes(), Codes()
        self._popularity = np.zeros(0)
        self._profile = (None if profile_vectors is None
                         else np.zeros((0, profile_vectors.shape[1]), np.float32))
        self.add(titles, categories, brands, popularity, profile_vectors)

    def add(self, titles: Sequence[str], categories: Sequence[Sequence[str]] | None = None,
            brands: Sequence[str | None] | None = None,
            popularity: NDArray[np.float64] | None = None,
            profile_vectors: NDArray[np.float32] | None = None) -> FeatureBuilder:
        """Append items (None for categories, brands or popularity means none / zero);
        ``profile_vectors`` are required exactly when the builder was made with them: the new
        items' rows, or every item's (new ones last; kept as given, not copied)."""
        if isinstance(titles, str):
            raise TypeError("add() takes a sequence of titles, not a single string")
        n, at = len(titles), self.n_items
        for name, seq in (("categories", categories), ("brands", brands),
                          ("popularity", popularity), ("profile_vectors", profile_vectors)):
            if seq is not None and len(seq) != n and not (
                    name == "profile_vectors" and len(seq) == at + n):
                raise ConfigError(f"{name}: {len(seq)} rows for {n} titles")
        if (profile_vectors is None) != (self._profile is None):
            raise ConfigError("profile_vectors: give them exactly when the builder has them")
        tokenize = self.index.tokenize
        cats = categories if categories is not None else [()] * n
        self.match.add([tokenize(t or "") for t in titles], [_norm(t or "") for t in titles])
        self.category_stems.append_rows([self.match.ids(tokenize(" ".join(c))) if c else []
                                         for c in cats])
        self.leaf.extend([c[-1] if c else "" for c in cats])
        self.root.extend([c[0] if c else "" for c in cats])
        self.brands.extend([(b or "").lower()
                            for b in (brands if brands is not None else [None] * n)])
        pop = (np.zeros(n) if popularity is None
               else np.log1p(np.asarray(popularity, dtype=np.float64)))
        self._popularity = put_growing(self._popularity, at, pop)
        if self._profile is not None and profile_vectors is not None:
            rows = np.asarray(profile_vectors, np.float32)
            self._profile = rows if len(rows) == at + n else put_growing(self._profile, at, rows)
        return self

    @property
    def titles(self) -> TextColumn:
        """Normalised titles (:func:`_norm`)."""
        return self.match.titles

    @property
    def n_items(self) -> int:
        return len(self.match.titles)

    @property
    def popularity(self) -> NDArray[np.float64]:
        """log(1 + popularity) per item."""
        return self._popularity[:self.n_items]

    @property
    def profile_vectors(self) -> NDArray[np.float32] | None:
        """The items' vectors in the user-profile space (None when personalization has none)."""
        return None if self._profile is None else self._profile[:self.n_items]

    def set_profile_vectors(self, vectors: NDArray[np.float32] | None) -> None:
        """Use ``vectors`` (one row per item, kept as given) for ``profile_sim``, or none."""
        if vectors is not None and vectors.shape[0] != self.n_items:
            raise ConfigError(f"profile_vectors: {vectors.shape[0]} rows for {self.n_items} "
                              "items")
        self._profile = None if vectors is None else np.asarray(vectors, np.float32)

    def state(self) -> State:
        """Everything but the profile vectors (they belong to the caller)."""
        return {"match": self.match.state(), "category_stems": self.category_stems.state(),
                "leaf": self.leaf.state(), "root": self.root.state(),
                "brands": self.brands.state(), "popularity": self.popularity}

    @classmethod
    def from_state(cls, index: SearchIndex, state: State,
                   profile_vectors: NDArray[np.float32] | None = None) -> FeatureBuilder:
        """A builder over saved state (arrays kept as given, e.g. memory-mapped)."""
        fb = cls(index, [])
        fb.match = MatchFeatures.from_state(index.tokenize, state["match"])
        fb.category_stems = Ragged.from_state(state["category_stems"])
        fb.leaf, fb.root, fb.brands = (Codes.from_state(state[k])
                                       for k in ("leaf", "root", "brands"))
        fb._popularity = state["popularity"]
        n = fb.n_items
        sizes = {len(fb.category_stems), fb.leaf.n, fb.root.n, fb.brands.n, len(fb.popularity),
                 len(fb.match.title_stems)}
        if sizes != {n}:
            raise ValueError(f"feature columns of different lengths {sorted(sizes)}")
        fb.set_profile_vectors(profile_vectors)
        return fb

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
        q_ids = self.match.known_ids(q_tokens)
        titles = [self.titles[int(i)] for i in idx]
        cols["title_coverage"] = _count_in(self.match.title_stems, idx, q_ids) / nq
        cols["phrase_match"] = np.array([float(bool(q_norm) and q_norm in t) for t in titles],
                                        dtype=np.float64)
        cols["category_coverage"] = _count_in(self.category_stems, idx, q_ids) / nq
        cols["title_tokens"] = self.match.title_stems.lengths(idx).astype(np.float64)
        cols["query_tokens"] = np.full(m, float(len(q_tokens)))
        cols["popularity"] = self.popularity[idx] if m else np.zeros(0)
        cols.update(self.match.build(q_norm, idx, titles))
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
        for key, col in (("category_affinity", self.leaf), ("root_category_affinity",
                                                            self.root),
                         ("brand_affinity", self.brands)):
            theirs = col.codes[hist]
            counts = np.bincount(theirs[theirs > 0], minlength=len(col.names))
            mine = col.codes[idx]
            out[key] = np.where(mine > 0, counts[mine] / n, 0.0)
        seen: dict[int, int] = {}
        for h in hist:
            seen[int(h)] = seen.get(int(h), 0) + 1
        out["seen_count"] = np.log1p(np.array([seen.get(int(i), 0) for i in idx], np.float64))
        return out


def _count_in(rows: Ragged, idx: NDArray[np.int64], ids: NDArray[np.int64]
              ) -> NDArray[np.float64]:
    """For each of ``idx``, how many of its (distinct) ids are among ``ids``."""
    if len(ids) == 0 or len(idx) == 0:
        return np.zeros(len(idx))
    row, values = rows.gather(idx)
    return np.bincount(row[np.isin(values, ids)], minlength=len(idx)).astype(np.float64)


class MatchFeatures:
    """How well a title covers the query's words, tolerating typos and weighing rare words.

    Shop queries are short and often misspelled ("hampton bay celing fan"); BM25 sees only exact
    stems and cosine blurs which word is missing. Each query word counts as found when its stem
    is among the title's, or when the word as typed is within one edit (two from 8 letters) of,
    or a prefix relation with, one of the title's words as written (:mod:`rapidfuzz`, expanded
    once per query over the catalog vocabulary, so titles are checked by set lookups). Chinese
    words match exactly only. IDF is over titles, as in BM25. The last query word is the product
    type in most shop queries ("... ceiling fan"), so it has its own flag.

    Stems get integer ids (``stems``; category stems share them) and each title its sorted
    stem ids (``title_stems``); a title's words as written are read from its normalised text.
    """

    def __init__(self, tokenize: Callable[[str], list[str]]) -> None:
        self.tokenize = tokenize
        self.stems: dict[str, int] = {}
        self.title_stems = Ragged()
        self.titles = TextColumn()
        self._df = np.zeros(0, np.int64)  # titles containing each stem (capacity may exceed)
        self.vocab: list[str] = []  # title words as written, sorted (for prefix lookups)
        self._vocab_set: set[str] = set()
        self._near: dict[str, frozenset[str]] = {}  # expansions of words seen in queries

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """Sorted distinct ids of ``tokens``' stems, new stems numbered as they come."""
        stems = self.stems
        out = sorted({stems.setdefault(t, len(stems)) for t in tokens})
        if len(stems) > len(self._df):  # spare capacity is zeros: counts of future stems
            grown = np.zeros(max(len(stems), len(self._df) * 3 // 2), np.int64)
            grown[:len(self._df)] = self._df
            self._df = grown
        return out

    def known_ids(self, tokens: Iterable[str]) -> NDArray[np.int64]:
        """Ids of those of ``tokens`` the catalog has (no new ids)."""
        stems = self.stems
        return np.array(sorted({stems[t] for t in tokens if t in stems}), np.int64)

    def add(self, title_tokens: Sequence[Iterable[str]], titles: Sequence[str]) -> None:
        """Append titles (stem tokens and normalised text). Document frequencies grow in place
        and IDF is computed at lookup; new catalog words join the sorted vocabulary and drop
        the cached query-word expansions, which they might extend."""
        rows = [self.ids(toks) for toks in title_tokens]
        self.title_stems.append_rows(rows)
        self.titles.extend(titles)
        flat = np.fromiter(chain.from_iterable(rows), np.int64)
        np.add.at(self._df, flat, 1)
        words = [_ascii_words(t) for t in titles]
        new = sorted(set().union(*words) - self._vocab_set) if words else []
        if new:
            self._vocab_set.update(new)
            if len(new) > len(self.vocab) // 8:  # a big batch: one merge beats many inserts
                self.vocab = sorted(self.vocab + new)
            else:
                for w in new:
                    bisect.insort(self.vocab, w)
            self._near.clear()

    def state(self) -> State:
        return {"stems": list(self.stems), "df": self._df[:len(self.stems)],
                "title_stems": self.title_stems.state(), "titles": self.titles.state(),
                "vocab": list(self.vocab)}

    @classmethod
    def from_state(cls, tokenize: Callable[[str], list[str]], state: State) -> MatchFeatures:
        mf = cls(tokenize)
        mf.stems = dict(zip(state["stems"], range(len(state["stems"])), strict=True))
        mf._df = np.array(state["df"])  # a private copy: adds count into it
        mf.title_stems = Ragged.from_state(state["title_stems"])
        mf.titles = TextColumn.from_state(state["titles"])
        mf.vocab = list(state["vocab"])
        mf._vocab_set = set(mf.vocab)
        if len(mf._df) != len(mf.stems) or len(mf.title_stems) != len(mf.titles):
            raise ValueError("title stems, their frequencies and the titles do not match")
        return mf

    @property
    def n_titles(self) -> int:
        return len(self.titles)

    @property
    def max_idf(self) -> float:
        """IDF of a stem no title contains."""
        n = max(self.n_titles, 1)
        return math.log1p((n + 0.5) / 0.5)

    def idf(self, stem: str) -> float:
        """BM25-style IDF of ``stem`` over titles (:attr:`max_idf` when no title has it)."""
        sid = self.stems.get(stem)
        c = 0 if sid is None else int(self._df[sid])
        n = max(self.n_titles, 1)
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

    def build(self, q_norm: str, idx: NDArray[np.int64], titles: Sequence[str] | None = None
              ) -> dict[str, NDArray[np.float64]]:
        """The :data:`MATCH_FEATURES` of candidates ``idx`` for a normalised query
        (``titles``: their normalised titles, when the caller has them already)."""
        from rapidfuzz import fuzz

        m = len(idx)
        units = self.units(q_norm)
        if not units or m == 0:
            return {f: np.zeros(m) for f in MATCH_FEATURES}
        if titles is None:
            titles = [self.titles[int(i)] for i in idx]
        near = [self.expand(raw) if raw else frozenset() for _, raw in units]
        w_idf = np.array([self.idf(stem) for stem, _ in units])
        numeric = np.array([stem[0].isdigit() for stem, _ in units])
        exact = np.zeros((m, len(units)))
        row, values = self.title_stems.gather(idx)
        for c, (stem, _) in enumerate(units):
            sid = self.stems.get(stem)
            if sid is not None:
                exact[row[values == sid], c] = 1.0
        fuzzy = exact.copy()
        for r, title in enumerate(titles):
            words = _ascii_words(title)
            for c, alts in enumerate(near):
                if not fuzzy[r, c] and not words.isdisjoint(alts):
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
            "gram_containment": np.array([len(q_grams & _grams(t)) / max(len(q_grams), 1)
                                          for t in titles]),
            "partial_ratio": np.array([fuzz.partial_ratio(q_norm, t) / 100.0
                                       for t in titles]),
        }


_WORDS = re.compile(r"[^\W_]+")


def _ascii_words(title: str) -> frozenset[str]:
    """A normalised title's words as written, ASCII ones only (what typos are matched to)."""
    return frozenset(w for w in _WORDS.findall(title) if w.isascii())


def _grams(text: str, n: int = 3) -> set[str]:
    return {text[i:i + n] for i in range(len(text) - n + 1)}
