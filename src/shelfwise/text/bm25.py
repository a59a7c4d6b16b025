"""BM25 lexical scoring for mixed English/Chinese catalogs, on ``bm25s``.

Text is NFKC-normalised and lower-cased, then split into runs: Chinese runs are segmented into
words by ``rjieba`` (Chinese has no spaces, so whole runs would never match a query), other
letter/digit runs are words, English-stemmed by PyStemmer ("running shoes" meets "shoe for
runners" on ``shoe``) with common English stop words dropped. Optional character n-grams of each
word (and of each Chinese run) go into a second index whose score is added with a weight: they
rescue misspellings ("hamer" vs "hammer") and Chinese segmentation mismatches at some precision
cost, so they are off by default.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import NotFittedError

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_]+)")


class BM25Config(BaseModel):
    """BM25 hyperparameters and tokenisation options (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.5, ge=0)
    b: float = Field(default=0.75, ge=0, le=1)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stem: bool = True
    stopwords: bool = True
    char_ngrams: int = Field(default=0, ge=0, le=6, description="n-gram size; 0 = off")
    ngram_weight: float = Field(default=0.3, ge=0)

    def to_config(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> BM25Config:
        return cls.model_validate(data)


class BM25Index:
    """A BM25 index over a list of texts: ``fit(texts)``, then ``score`` or ``search``.

    Documents are addressed by their position in the fitted list.
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
        if isinstance(texts, str):
            raise TypeError("fit() takes a sequence of texts, not a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("cannot fit BM25 on an empty corpus")
        self.words_ = self._index([self.tokenize(t) for t in texts])
        self.grams_ = (self._index([self.ngrams(t) for t in texts])
                       if self.config.char_ngrams else None)
        self.n_docs_ = len(texts)
        return self

    def _index(self, corpus: list[list[str]]) -> Any:
        import bm25s

        c = self.config
        model = bm25s.BM25(k1=c.k1, b=c.b, method=c.method)
        model.index(corpus, show_progress=False)
        return model

    @property
    def n_docs(self) -> int:
        return int(self._fitted().n_docs_)

    def _fitted(self) -> BM25Index:
        if not hasattr(self, "words_"):
            raise NotFittedError("BM25Index is not fitted: call fit(texts) first")
        return self

    @staticmethod
    def _scores(model: Any, tokens: list[str], n: int) -> NDArray[np.float32]:
        ids = model.get_tokens_ids(tokens)
        if not ids:
            return np.zeros(n, np.float32)
        return np.asarray(model.get_scores_from_ids(ids), dtype=np.float32)

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
        self._fitted()
        vocab = self.words_.vocab_dict
        return [w for w in self.tokenize(query) if w not in vocab]

    def word_score(self, query: str) -> NDArray[np.float32]:
        """The word index's BM25 score of ``query`` for every document."""
        self._fitted()
        return self._scores(self.words_, self.tokenize(query), self.n_docs_)

    def ngram_score(self, query: str) -> NDArray[np.float32]:
        """The character n-gram index's score for every document (zeros when n-grams are off)."""
        self._fitted()
        if self.grams_ is None:
            return np.zeros(self.n_docs_, np.float32)
        return self._scores(self.grams_, self.ngrams(query), self.n_docs_)

    def search(self, query: str, k: int = 10) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Indices and scores of the best ``k`` documents with a positive score, best first
        (ties by index)."""
        scores = self.score(query)
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:k]
        return order.astype(np.int64), scores[order]


def _is_cjk(word: str) -> bool:
    return bool(word) and re.match(rf"[{_CJK}]", word) is not None
