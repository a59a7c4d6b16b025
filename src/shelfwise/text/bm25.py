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
size and average length into every stored score. A term's weights are cached from its first
query until the next add, so steady-state queries cost what ``bm25s``'s do. Scores equal
``bm25s``'s for every variant (``tests/test_text_bm25.py`` checks this on real titles).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import NotFittedError

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_]+)")
Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
_DELTA = 0.5  # bm25l / bm25+ lower bound on a present term's weight (bm25s's default)


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
    """One BM25 field: term ids, a growable postings list per term (document positions and
    term frequencies, documents ascending) and document lengths.

    Scoring follows Kamphuis et al. (ECIR 2020), as ``bm25s`` does: ``Σ idf(t) · tfc(tf, |d|)``
    over the query's tokens (repeats count again); for ``bm25l``/``bm25+`` a document lacking a
    term still gets ``idf · tfc(0)``.
    """

    def __init__(self, k1: float, b: float, method: Method) -> None:
        self.k1, self.b, self.method = k1, b, method
        self.vocab: dict[str, int] = {}
        self._docs: list[NDArray[np.int32]] = []  # per term; capacity may exceed _df[t]
        self._tf: list[NDArray[np.float32]] = []
        self._df: list[int] = []
        self._lens = np.zeros(0, np.float64)  # capacity may exceed n_docs
        self.n_docs = 0
        self._total_len = 0
        # query-time caches, tagged with the generation they were computed at (add bumps it)
        self._generation = 0
        self._dnorm: tuple[int, NDArray[np.float32]] = (-1, np.zeros(0, np.float32))
        self._cached: list[NDArray[np.float32]] = []
        self._cached_at: list[int] = []

    def add(self, docs: Sequence[Sequence[str]]) -> None:
        """Append documents (token lists) at positions ``n_docs, n_docs + 1, ...``: their
        postings go to the end of each term's list, so the cost is O(their tokens)."""
        vocab = self.vocab
        counts = [{vocab.setdefault(w, len(vocab)): c for w, c in Counter(toks).items()}
                  for toks in docs]
        new_terms = len(vocab) - len(self._df)
        self._docs += [np.zeros(0, np.int32)] * new_terms
        self._tf += [np.zeros(0, np.float32)] * new_terms
        self._df += [0] * new_terms
        self._cached += [np.zeros(0, np.float32)] * new_terms
        self._cached_at += [-1] * new_terms
        lens = np.fromiter((len(toks) for toks in docs), np.float64, len(docs))
        start = self.n_docs
        self._lens = put_growing(self._lens, start, lens)
        self.n_docs += len(docs)
        self._total_len += int(lens.sum())
        per_doc = [len(c) for c in counts]
        total = sum(per_doc)
        terms = np.fromiter(chain.from_iterable(counts), np.int64, total)
        tfs = np.fromiter(chain.from_iterable(c.values() for c in counts), np.float32, total)
        rows = np.repeat(np.arange(start, self.n_docs, dtype=np.int32), per_doc)
        order = np.argsort(terms, kind="stable")  # by term, documents stay ascending
        terms, rows, tfs = terms[order], rows[order], tfs[order]
        firsts = np.flatnonzero(np.diff(terms, prepend=-1))  # where each term's run starts
        bounds = np.append(firsts, total).tolist()
        for t, a, z in zip(terms[firsts].tolist(), bounds[:-1], bounds[1:], strict=True):
            df = self._df[t]
            self._docs[t] = put_growing(self._docs[t], df, rows[a:z])
            self._tf[t] = put_growing(self._tf[t], df, tfs[a:z])
            self._df[t] = df + z - a
        self._generation += 1

    def postings(self, term: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Documents containing ``term`` (ascending) and its frequency in each."""
        df = self._df[term]
        return self._docs[term][:df], self._tf[term][:df]

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
        if self._cached_at[term] == generation:
            return self._cached[term]
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
        self._cached[term] = w
        self._cached_at[term] = generation
        return self._cached[term]

    def scores(self, tokens: Sequence[str]) -> NDArray[np.float32]:
        """BM25 of a query's tokens for every document."""
        out = np.zeros(self.n_docs, np.float32)
        base = 0.0
        absent = self._absent()
        for t, times in Counter(self.vocab[t] for t in tokens if t in self.vocab).items():
            w = self.weights(t)
            np.add.at(out, self._docs[t][:self._df[t]], w if times == 1 else w * times)
            if absent:
                base += times * self.idf(self._df[t]) * absent
        if base:
            out += np.float32(base)
        return out


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
        self._fitted().words_.add([self.tokenize(t) for t in texts])
        if self.grams_ is not None:
            self.grams_.add([self.ngrams(t) for t in texts])
        return self

    @property
    def n_docs(self) -> int:
        return self._fitted().words_.n_docs

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
