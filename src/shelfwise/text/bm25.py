"""BM25 lexical scoring for mixed English/Chinese catalogs, growable without refitting.

Text is NFKC-normalised and lower-cased, then split into runs: Chinese runs are segmented into
words by ``rjieba`` (Chinese has no spaces, so whole runs would never match a query), other
letter/digit runs are words, English-stemmed by PyStemmer ("running shoes" meets "shoe for
runners" on ``shoe``) with common English stop words dropped. Optional character n-grams of each
word (and of each Chinese run) go into a second index whose score is added with a weight: they
rescue misspellings ("hamer" vs "hammer") and Chinese segmentation mismatches at some precision
cost, so they are off by default.

Each index keeps raw term frequencies (a postings list per term) and document lengths; IDF and
length normalisation are applied at query time. That is what lets :meth:`BM25Index.add` append
documents in O(their postings): an eager index (``bm25s``, which this replaces) bakes the corpus
size and average length into every stored score. Postings are flat CSR arrays, which
:meth:`BM25Index.state` hands out for saving and :meth:`BM25Index.from_state` takes back
(memory-mapped: a term that grows afterwards copies its own postings, the rest stay shared).
A term's weights are cached from its first query until the next add, so steady-state queries
cost what ``bm25s``'s do. Scores equal
``bm25s``'s for every variant (``tests/test_text_bm25.py`` checks this on real titles).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import NotFittedError

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_]+)")
Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
_DELTA = 0.5  # bm25l / bm25+ lower bound on a present term's weight (bm25s's default)
_CHUNK = 8192  # documents tokenised at a time while indexing


class BM25Config(BaseModel):
    """BM25 hyperparameters and tokenisation options (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.5, ge=0)
    b: float = Field(default=0.75, ge=0, le=1)
    method: Method = "lucene"
    stem: bool = True
    stopwords: bool = True
    char_ngrams: int = Field(default=0, ge=0, le=6, description="n-gram size; 0 = off")
    ngram_weight: float = Field(default=0.3, ge=0)

    def to_config(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> BM25Config:
        return cls.model_validate(data)


class TermIndex:
    """One BM25 field: term ids, a postings list per term (document positions and term
    frequencies, documents ascending) and document lengths.

    Postings are CSR arrays (``offsets`` per term into ``docs``/``tf``) as built by the first
    :meth:`add` or loaded from a bundle (then memory-mapped, read-only); a term that grows
    later gets a private growable copy of its postings (``_docs``/``_tf``), so loaded arrays
    are never written.

    Scoring follows Kamphuis et al. (ECIR 2020), as ``bm25s`` does: ``Σ idf(t) · tfc(tf, |d|)``
    over the query's tokens (repeats count again); for ``bm25l``/``bm25+`` a document lacking a
    term still gets ``idf · tfc(0)``.
    """

    def __init__(self, k1: float, b: float, method: Method) -> None:
        self.k1, self.b, self.method = k1, b, method
        self.vocab: dict[str, int] = {}
        self._freeze(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        self._df = np.zeros(0, np.int64)  # per term; capacity may exceed len(vocab)
        self._lens = np.zeros(0, np.float64)  # capacity may exceed n_docs
        self.n_docs = 0
        self._frozen_docs = 0  # documents in the CSR arrays (all, until an add)
        self._total_len = 0
        # query-time caches, tagged with the generation they were computed at (add bumps it)
        self._generation = 0
        self._dnorm: tuple[int, NDArray[np.float32]] = (-1, np.zeros(0, np.float32))
        self._cached: dict[int, tuple[int, NDArray[np.float32]]] = {}

    def _freeze(self, offsets: NDArray[np.int64], docs: NDArray[np.int32],
                tf: NDArray[np.float32]) -> None:
        self._offsets = offsets
        self._docs = _TermArrays(offsets, docs)
        self._tf = _TermArrays(offsets, tf)

    def add(self, docs: Iterable[Sequence[str]]) -> None:
        """Append documents (token lists) at positions ``n_docs, n_docs + 1, ...``: their
        postings go to the end of each term's list, so the cost is O(their tokens). ``docs``
        is consumed in chunks (a generator keeps only one chunk's tokens in memory)."""
        vocab = self.vocab
        n_terms = len(vocab)
        parts: list[tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64],
                          NDArray[np.float64]]] = []
        it = iter(docs)
        while chunk := list(islice(it, _CHUNK)):
            counts = [{vocab.setdefault(w, len(vocab)): c for w, c in Counter(toks).items()}
                      for toks in chunk]
            per = np.fromiter((len(c) for c in counts), np.int64, len(counts))
            total = int(per.sum())
            parts.append((np.fromiter(chain.from_iterable(counts), np.int64, total),
                          np.fromiter(chain.from_iterable(c.values() for c in counts),
                                      np.float32, total),
                          per, np.fromiter((len(t) for t in chunk), np.float64, len(chunk))))
        if not parts:
            return
        terms, tfs, per_doc, lens = (np.concatenate([p[k] for p in parts]) for k in range(4))
        self._df = put_growing(self._df, n_terms, np.zeros(len(vocab) - n_terms, np.int64))
        start = self.n_docs
        self._lens = put_growing(self._lens, start, lens)
        self.n_docs += len(lens)
        self._total_len += int(lens.sum())
        total = len(terms)
        rows = np.repeat(np.arange(start, self.n_docs, dtype=np.int32), per_doc)
        order = np.argsort(terms, kind="stable")  # by term, documents stay ascending
        terms, rows, tfs = terms[order], rows[order], tfs[order]
        self._generation += 1
        if start == 0 and n_terms == 0:  # the first documents: one CSR build, no copies
            self._df = np.bincount(terms, minlength=len(vocab)).astype(np.int64)
            self._freeze(np.concatenate([[0], np.cumsum(self._df)]).astype(np.int64),
                         rows, tfs)
            self._frozen_docs = self.n_docs
            return
        firsts = np.flatnonzero(np.diff(terms, prepend=-1))  # where each term's run starts
        bounds = np.append(firsts, total).tolist()
        for t, a, z in zip(terms[firsts].tolist(), bounds[:-1], bounds[1:], strict=True):
            df = int(self._df[t])
            self._docs[t] = put_growing(self._docs.current(t, df), df, rows[a:z])
            self._tf[t] = put_growing(self._tf.current(t, df), df, tfs[a:z])
            self._df[t] = df + z - a

    def postings(self, term: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Documents containing ``term`` (ascending) and its frequency in each."""
        df = int(self._df[term])
        return self._docs.current(term, df)[:df], self._tf.current(term, df)[:df]

    def state(self) -> dict[str, Any]:
        """Terms (in id order), CSR postings, document lengths: what :meth:`from_state`
        takes (terms grown since the CSR build are folded in)."""
        n_terms, n = len(self.vocab), self.n_docs
        if n == self._frozen_docs and len(self._offsets) == n_terms + 1:
            offsets, docs, tf = self._offsets, self._docs.flat, self._tf.flat
        else:
            lists = [self.postings(t) for t in range(n_terms)]
            offsets = np.concatenate([[0], np.cumsum(self._df[:n_terms])]).astype(np.int64)
            docs = np.concatenate([d for d, _ in lists] or [np.zeros(0, np.int32)])
            tf = np.concatenate([f for _, f in lists] or [np.zeros(0, np.float32)])
        return {"terms": list(self.vocab), "offsets": offsets, "docs": docs, "tf": tf,
                "lens": self._lens[:n], "total_len": self._total_len}

    @classmethod
    def from_state(cls, state: dict[str, Any], k1: float, b: float, method: Method
                   ) -> TermIndex:
        """An index over saved arrays (kept as given: memory-mapped ones stay mapped)."""
        ix = cls(k1, b, method)
        terms, offsets, docs, tf = state["terms"], state["offsets"], state["docs"], state["tf"]
        lens = state["lens"]
        if not (len(offsets) == len(terms) + 1 and int(offsets[0]) == 0
                and int(offsets[-1]) == len(docs) == len(tf)):
            raise ValueError(f"postings offsets ({len(offsets)}, ending at "
                             f"{int(offsets[-1]) if len(offsets) else None}) do not match "
                             f"{len(terms)} terms and {len(docs)} postings")
        ix._df = np.diff(offsets).astype(np.int64)
        if len(ix._df) and int(ix._df.min()) < 0:
            raise ValueError("postings offsets decrease")
        ix.vocab = dict(zip(terms, range(len(terms)), strict=True))
        ix._freeze(offsets, docs, tf)
        ix._lens = lens
        ix.n_docs = ix._frozen_docs = len(lens)
        ix._total_len = int(state["total_len"])
        return ix

    def _norm(self) -> NDArray[np.float32]:
        """Per document, ``k1·(1 - b + b·|d|/avg)`` (bm25l: without ``k1``)."""
        generation = self._generation
        if self._dnorm[0] != generation:  # the average moves with every add
            n = self.n_docs
            avg = self._total_len / n if n else 0.0
            dn = (1 - self.b) + self.b * (self._lens[:n] / avg if avg > 0 else self._lens[:n])
            self._dnorm = (generation, (dn if self.method == "bm25l" else self.k1 * dn
                                        ).astype(np.float32))
        return self._dnorm[1]

    def idf(self, df: int) -> float:
        n, m = self.n_docs, self.method
        if m == "robertson":
            return math.log(max((n - df + 0.5) / (df + 0.5), 1.0))
        if m == "lucene":
            return math.log(1 + (n - df + 0.5) / (df + 0.5))
        if m == "atire":
            return math.log(n / df)
        if m == "bm25l":
            return math.log((n + 1) / (df + 0.5))
        return math.log((n + 1) / df)  # bm25+

    def _absent(self) -> float:
        """The term-frequency component of a term a document lacks (0 but for bm25l/bm25+)."""
        k1 = self.k1
        return {"bm25l": (k1 + 1) * _DELTA / (k1 + _DELTA), "bm25+": _DELTA}.get(
            self.method, 0.0)

    def weights(self, term: int) -> NDArray[np.float32]:
        """``idf · (tfc(tf, |d|) - tfc(0))`` for each document of ``term``'s postings: what
        the term adds to them. Kept until the next :meth:`add` moves IDF and average length."""
        generation = self._generation
        hit = self._cached.get(term)
        if hit is not None and hit[0] == generation:
            return hit[1]
        docs, tf = self.postings(term)
        k1, idf = np.float32(self.k1), self.idf(len(docs))
        if self.method == "bm25l":
            c = tf / self._norm()[docs]
            c += np.float32(_DELTA)
            w = (k1 + 1) * c / (k1 + c)
            w -= np.float32(self._absent())
            w *= np.float32(idf)
        else:  # tf / (k1·dnorm + tf), in place; bm25+'s "+ delta" cancels the absent delta
            w = self._norm()[docs]
            w += tf
            np.divide(tf, w, out=w)
            w *= np.float32(idf * (self.k1 + 1 if self.method in ("atire", "bm25+") else 1))
        self._cached[term] = (generation, w)
        return w

    def scores(self, tokens: Sequence[str]) -> NDArray[np.float32]:
        """BM25 of a query's tokens for every document."""
        out = np.zeros(self.n_docs, np.float32)
        base = 0.0
        absent = self._absent()
        for t, times in Counter(self.vocab[t] for t in tokens if t in self.vocab).items():
            w = self.weights(t)
            np.add.at(out, self.postings(t)[0], w if times == 1 else w * times)
            if absent:
                base += times * self.idf(int(self._df[t])) * absent
        if base:
            out += np.float32(base)
        return out


class _TermArrays(dict[int, NDArray[Any]]):
    """Per-term arrays of a :class:`TermIndex`: private growable buffers of the terms grown
    since the CSR build; any other term reads (and on ``[t]`` keeps) a view of ``flat``."""

    def __init__(self, offsets: NDArray[np.int64], flat: NDArray[Any]) -> None:
        super().__init__()
        self.offsets, self.flat = offsets, flat

    def current(self, term: int, df: int) -> NDArray[Any]:
        """The term's array (its first ``df`` entries are its postings)."""
        arr = self.get(term)
        if arr is not None:
            return arr
        if term + 1 < len(self.offsets):
            a = int(self.offsets[term])
            return self.flat[a:a + df]
        return self.flat[:0]

    def __missing__(self, term: int) -> NDArray[Any]:
        frozen = term + 1 < len(self.offsets)
        arr = self.current(term, int(self.offsets[term + 1] - self.offsets[term]) if frozen
                           else 0)
        self[term] = arr
        return arr


def put_growing(buf: NDArray[Any], at: int, values: NDArray[Any]) -> NDArray[Any]:
    """``buf[at:at + len(values)] = values`` along the first axis, growing ``buf`` by half when
    full, so appending stays amortised O(len(values)); returns the buffer to keep. The first
    fill of an empty buffer keeps ``values`` itself, and a buffer that is someone else's array
    is copied before it is written (it is full, so it grows)."""
    end = at + len(values)
    if at == 0 and len(buf) == 0:
        return values
    if end > len(buf):
        grown = np.empty((max(end, len(buf) + len(buf) // 2, 4), *buf.shape[1:]), buf.dtype)
        grown[:at] = buf[:at]
        buf = grown
    buf[at:end] = values
    return buf


class BM25Index:
    """A BM25 index over a list of texts: ``fit(texts)``, ``add(more)``, then ``score`` or
    ``search``.

    Documents are addressed by their position in the fitted-then-added list. After
    ``fit(a).add(b)`` every score equals that of ``fit(a + b)`` (IDF and average length move).
    """

    def __init__(self, config: BM25Config | None = None, **options: Any) -> None:
        self.config = config if config is not None else BM25Config(**options)
        self._stemmer: Any = None
        self._stop: frozenset[str] = frozenset()
        if self.config.stem:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
        if self.config.stopwords:
            from bm25s.stopwords import STOPWORDS_EN

            self._stop = frozenset(STOPWORDS_EN)

    # ---- tokenisation ---------------------------------------------------------------------
    def _runs(self, text: str) -> list[tuple[str, bool]]:
        """(run, is_chinese) pieces of the normalised text."""
        norm = unicodedata.normalize("NFKC", text).lower()
        return [(m.group(0), m.group(1) is not None) for m in _RUNS.finditer(norm)]

    def tokenize(self, text: str) -> list[str]:
        """The word tokens BM25 matches on (segmented, stop words dropped, stemmed)."""
        import rjieba

        words: list[str] = []
        for run, chinese in self._runs(text):
            if chinese:
                words += [w for w in rjieba.cut(run) if w.strip()]
            elif run not in self._stop:
                words.append(run)
        if self._stemmer is not None:
            words = [w if _is_cjk(w) else s
                     for w, s in zip(words, self._stemmer.stemWords(words), strict=True)]
        return words

    def ngrams(self, text: str) -> list[str]:
        """Character n-grams of each word (padded with ``#``) and of each Chinese run."""
        n = self.config.char_ngrams
        out: list[str] = []
        for run, chinese in self._runs(text):
            s = run if chinese else f"#{run}#"
            size = min(n, 2) if chinese else n
            out += [s[i:i + size] for i in range(max(1, len(s) - size + 1))]
        return out

    # ---- fitting and scoring --------------------------------------------------------------
    def fit(self, texts: Sequence[str]) -> BM25Index:
        """Index ``texts`` (replacing any previous index); returns ``self``."""
        texts = _texts(texts, "fit")
        if not texts:
            raise ValueError("cannot fit BM25 on an empty corpus")
        c = self.config
        self.words_ = TermIndex(c.k1, c.b, c.method)
        self.grams_ = TermIndex(c.k1, c.b, c.method) if c.char_ngrams else None
        return self.add(texts)

    def add(self, texts: Sequence[str]) -> BM25Index:
        """Append ``texts`` after the indexed documents (cost: their tokens, no refit);
        returns ``self``."""
        texts = _texts(texts, "add")
        self._fitted().words_.add(self.tokenize(t) for t in texts)
        if self.grams_ is not None:
            self.grams_.add(self.ngrams(t) for t in texts)
        return self

    @property
    def n_docs(self) -> int:
        return self._fitted().words_.n_docs

    def state(self) -> dict[str, Any]:
        """The config and both fields' arrays, for :meth:`from_state`."""
        self._fitted()
        return {"config": self.config.to_config(), "words": self.words_.state(),
                "grams": None if self.grams_ is None else self.grams_.state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BM25Index:
        """An index over saved arrays; :meth:`add` still grows it (into private copies)."""
        ix = cls(BM25Config.from_config(state["config"]))
        c = ix.config
        ix.words_ = TermIndex.from_state(state["words"], c.k1, c.b, c.method)
        ix.grams_ = (None if state["grams"] is None
                     else TermIndex.from_state(state["grams"], c.k1, c.b, c.method))
        if (ix.grams_ is None) != (c.char_ngrams == 0) or (
                ix.grams_ is not None and ix.grams_.n_docs != ix.words_.n_docs):
            raise ValueError("the n-gram field does not match the word field or the config")
        return ix

    def _fitted(self) -> BM25Index:
        if not hasattr(self, "words_"):
            raise NotFittedError("BM25Index is not fitted: call fit(texts) first")
        return self

    def score(self, query: str, doc_indices: ArrayLike | None = None) -> NDArray[np.float32]:
        """BM25 score of ``query`` for every document, or only for ``doc_indices`` (in order)."""
        scores = self.word_score(query)
        if self.grams_ is not None:
            scores = scores + np.float32(self.config.ngram_weight) * self.ngram_score(query)
        if doc_indices is None:
            return scores
        return scores[np.asarray(doc_indices, dtype=np.int64)]

    def gram_counts(self, docs: NDArray[np.int64], grams: Iterable[str]) -> NDArray[np.int64]:
        """How many of the distinct ``grams`` each of ``docs`` contains, read from the n-gram
        postings (no document text is re-split)."""
        self._fitted()
        out = np.zeros(len(docs), np.int64)
        if self.grams_ is None or not len(docs):
            return out
        for gram in set(grams):
            term = self.grams_.vocab.get(gram)
            if term is None:
                continue
            have, _ = self.grams_.postings(term)  # documents ascending
            if not len(have):
                continue
            at = np.minimum(np.searchsorted(have, docs), len(have) - 1)
            out += have[at] == docs
        return out

    def unknown_words(self, query: str) -> list[str]:
        """Query tokens that no indexed document contains (likely misspellings)."""
        vocab = self._fitted().words_.vocab
        return [w for w in self.tokenize(query) if w not in vocab]

    def word_score(self, query: str) -> NDArray[np.float32]:
        """The word index's BM25 score of ``query`` for every document."""
        return self._fitted().words_.scores(self.tokenize(query))

    def ngram_score(self, query: str) -> NDArray[np.float32]:
        """The character n-gram index's score for every document (zeros when n-grams are off)."""
        self._fitted()
        if self.grams_ is None:
            return np.zeros(self.n_docs, np.float32)
        return self.grams_.scores(self.ngrams(query))

    def search(self, query: str, k: int = 10) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Indices and scores of the best ``k`` documents with a positive score, best first
        (ties by index)."""
        scores = self.score(query)
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:k]
        return order.astype(np.int64), scores[order]


def _texts(texts: Sequence[str], verb: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{verb}() takes a sequence of texts, not a single string")
    return list(texts)


def _is_cjk(word: str) -> bool:
    return bool(word) and re.match(rf"[{_CJK}]", word) is not None
