"""Hybrid search index: BM25 words, BM25 character n-grams (typos) and dense vectors, fused.

Three retrievers look at the whole catalog; their top lists are merged by reciprocal-rank
fusion (Cormack et al. 2009: ``Σ 1 / (k + rank)``), which needs no score calibration between
BM25 and cosine. Each candidate keeps every retriever's raw score, so a learned ranker can
weigh them (see :mod:`shelfwise.search.features`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.ann import EXACT_THRESHOLD, VectorIndex, fill_value, spread_sample
from shelfwise.retrieval.passages import Rows, as_rows
from shelfwise.search.columns import State, TextColumn, release_pages
from shelfwise.text.bm25 import BM25Config, BM25Index, put_growing

QueryEncoder = Callable[[str], NDArray[np.float32]]


class SearchConfig(BaseModel):
    """How candidates are retrieved and fused (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=200, ge=1, description="candidates each retriever contributes")
    rrf_k: float = Field(default=60.0, gt=0, description="reciprocal-rank-fusion constant")
    char_ngrams: int = Field(default=3, ge=0, le=6,
                             description="n-gram size of the typo-tolerant index; 0 = off")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"bm25": 1.0, "ngram": 1.0, "dense": 1.0},
        description="each retriever's weight in the fusion")
    min_ngram_coverage: float = Field(
        default=0.6, ge=0, le=1,
        description="share of a misspelled word's n-grams a title must contain for the "
        "n-gram retriever to propose it")
    dense_exact_items: int = Field(
        default=EXACT_THRESHOLD, ge=0,
        description="catalogs up to this many items compare each query with every item "
        "vector; larger ones search an 8-bit HNSW index for the `dense_candidates` nearest "
        "items and score those exactly (a candidate outside that list gets its exact score and "
        "a catalog rank estimated from a sample)")
    dense_candidates: int = Field(default=400, ge=10,
                                  description="items the HNSW search returns per query")
    dense_ef: int = Field(
        default=1000, ge=10,
        description="HNSW search width (efSearch) for a query: on the 100k-item bench shop "
        "1,000 finds 95% of the exact top 10, 400 finds 89% (~1.3 ms less)")


@dataclass
class DenseList:
    """A query's dense scores on a large catalog: exact on the HNSW list and a fixed sample,
    one fill value (no higher than the list's last) elsewhere."""

    query: NDArray[np.float32]
    items: NDArray[np.int64]
    scores: NDArray[np.float32]
    sample_scores: NDArray[np.float32]

    def ranks(self, scores: NDArray[np.float32], n_docs: int) -> NDArray[np.float32]:
        """1-based catalog ranks of these exact scores: counted in the list where a score
        reaches it, else estimated as the share of the sample above it (at least the list)."""
        desc = np.sort(self.scores)[::-1]
        in_list = np.searchsorted(-desc, -scores, side="left").astype(np.float64)
        asc = np.sort(self.sample_scores)
        share = 1.0 - np.searchsorted(asc, scores, side="right") / max(len(asc), 1)
        low = scores < (desc[-1] if len(desc) else np.inf)
        est = np.maximum(len(desc), np.round(share * n_docs))
        out: NDArray[np.float32] = (np.where(low, est, in_list) + 1).astype(np.float32)
        return out


SAMPLE = 2048
"""Items whose exact dense scores stand in for the catalog's distribution (large catalogs)."""


@dataclass
class Candidates:
    """Retrieved items for one query: catalog positions, fused score, per-retriever scores."""

    index: NDArray[np.int64]
    fused: NDArray[np.float64]
    scores: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    ranks: dict[str, NDArray[np.float32]] = field(default_factory=dict)

    def order(self) -> NDArray[np.int64]:
        """Positions into this candidate list, best fused score first (ties by catalog order)."""
        return np.lexsort((self.index, -self.fused)).astype(np.int64)


class SearchIndex:
    """Lexical + dense retrieval over a growing list of item texts (addressed by position).

    ``vectors`` are the items' passage embeddings (rows L2-normalised) and ``encode_query``
    embeds a query into the same space; without them search is lexical only. :meth:`add`
    appends items in place (not safe while another thread queries the same index).
    :meth:`state` and :meth:`from_state` save and restore the lexical part (vectors belong
    to the caller).
    """

    def __init__(self, config: SearchConfig | None = None, **options: Any) -> None:
        self.config = config if config is not None else SearchConfig(**options)
        self._words: BM25Index | None = None
        self._vectors: Rows | None = None  # rows past n_docs are spare capacity
        self._ann: VectorIndex | None = None  # over the first len(_ann) vectors
        self._ann_saved: NDArray[np.uint8] | None = None  # serialised, until vectors are set
        self._ann_lock = threading.Lock()
        self._sample: tuple[int, NDArray[np.float32]] | None = None  # (n_docs, rows)
        self.encode_query: QueryEncoder | None = None
        self.texts = TextColumn()
        self.n_docs = 0

    @property
    def vectors(self) -> Rows | None:
        """The indexed items' vectors (one row per item), or None for a lexical index."""
        return None if self._vectors is None else self._vectors[:self.n_docs]

    def fit(self, texts: Sequence[str], vectors: Rows | None = None,
            encode_query: QueryEncoder | None = None) -> SearchIndex:
        texts = [t or "" for t in texts]
        if not texts:
            raise ConfigError("cannot build a search index over an empty catalog")
        if vectors is not None and vectors.shape[0] != len(texts):
            raise ConfigError(f"{vectors.shape[0]} item vectors for {len(texts)} item texts")
        if (vectors is None) != (encode_query is None):
            raise ConfigError("dense search needs both item vectors and a query encoder")
        self._words = BM25Index(BM25Config(char_ngrams=self.config.char_ngrams))
        self._words.fit(texts)
        self.texts = TextColumn(texts)
        self.n_docs = len(texts)
        return self.set_vectors(vectors, encode_query)

    def set_vectors(self, vectors: Rows | None,
                    encode_query: QueryEncoder | None) -> SearchIndex:
        """Use ``vectors`` (one row per indexed item, kept as given) and ``encode_query`` for
        dense retrieval; both None makes the index lexical."""
        if vectors is not None and vectors.shape[0] != self.n_docs:
            raise ConfigError(f"{vectors.shape[0]} item vectors for {self.n_docs} item texts")
        if (vectors is None) != (encode_query is None):
            raise ConfigError("dense search needs both item vectors and a query encoder")
        self._vectors = None if vectors is None else as_rows(vectors)
        self.encode_query = encode_query
        with self._ann_lock:
            self._ann, self._sample = None, None
            if self._ann_saved is not None and vectors is not None:
                ann = VectorIndex.from_array(self._ann_saved)
                release_pages(self._ann_saved)  # faiss holds its own copy now
                if ann.dim == vectors.shape[1] and len(ann) <= self.n_docs:
                    self._ann = ann
            self._ann_saved = None
        return self

    @property
    def approximate(self) -> bool:
        """Whether dense retrieval searches an HNSW index (catalog above
        ``dense_exact_items``) instead of comparing the query with every vector."""
        return self._vectors is not None and self.n_docs > self.config.dense_exact_items

    def ann(self) -> VectorIndex:
        """The HNSW index over the item vectors, built or grown to every item now."""
        vectors = self.vectors
        assert vectors is not None
        with self._ann_lock:
            if self._ann is None:
                self._ann = VectorIndex(vectors.shape[1], exact=False, quantized=True)
            if len(self._ann) < self.n_docs:
                self._ann.add(np.asarray(vectors[len(self._ann):], dtype=np.float32))
            return self._ann

    def state(self) -> State:
        """The texts, the word and n-gram postings and, for a large dense catalog, the HNSW
        index serialised (not the vectors)."""
        out: State = {"n_docs": self.n_docs, "char_ngrams": self.config.char_ngrams,
                      "texts": self.texts.state(), "bm25": self._bm25().state()}
        if self.approximate:
            out["ann"] = self.ann().to_array()
        return out

    @classmethod
    def from_state(cls, state: State, config: SearchConfig | None = None) -> SearchIndex:
        """A lexical index over saved state (arrays kept as given, e.g. memory-mapped); add
        vectors with :meth:`set_vectors`. ``config`` must have the saved n-gram size."""
        ix = cls(config)
        if ix.config.char_ngrams != state["char_ngrams"]:
            raise ConfigError(f"the saved index has {state['char_ngrams']}-grams, the config "
                              f"asks for {ix.config.char_ngrams}")
        ix._words = BM25Index.from_state(state["bm25"])
        ix.texts = TextColumn.from_state(state["texts"])
        ix.n_docs = int(state["n_docs"])
        ix._ann_saved = state.get("ann")
        if not ix.n_docs == ix._words.n_docs == len(ix.texts):
            raise ValueError(f"{ix.n_docs} items, {ix._words.n_docs} in the postings and "
                             f"{len(ix.texts)} texts")
        return ix

    def add(self, texts: Sequence[str], vectors: Rows | None = None) -> SearchIndex:
        """Append items at positions ``n_docs, n_docs + 1, ...``: the word and n-gram indexes
        grow by the new items' tokens (no rebuild), and every score afterwards equals that of
        a fresh :meth:`fit` on all texts. ``vectors`` are required exactly when the index is
        dense: the new items' rows (appended to a private copy), or every item's rows, new ones
        last (kept as given, e.g. the semantic generator's own matrix, so they are not held
        twice)."""
        bm25 = self._bm25()
        if isinstance(texts, str):
            raise TypeError("add() takes a sequence of texts, not a single string")
        texts = [t or "" for t in texts]
        dim = None if self._vectors is None else self._vectors.shape[1]
        if (vectors is None) != (dim is None):
            raise ConfigError("this index is " + ("lexical: add() takes no vectors" if dim is
                              None else "dense: add() needs the new items' vectors"))
        whole = vectors is not None and vectors.shape == (self.n_docs + len(texts), dim)
        if vectors is not None and not whole and vectors.shape != (len(texts), dim):
            raise ConfigError(f"vectors of shape {vectors.shape} for {len(texts)} texts in a "
                              f"{dim}-dimensional index of {self.n_docs} items")
        if not texts:
            return self
        bm25.add(texts)
        self.texts.extend(texts)
        if self._vectors is not None and vectors is not None:
            self._vectors = as_rows(vectors) if whole else put_growing(
                np.asarray(self._vectors, dtype=np.float32), self.n_docs,
                np.asarray(vectors, dtype=np.float32))
        self.n_docs += len(texts)
        return self

    def tokenize(self, text: str) -> list[str]:
        return self._bm25().tokenize(text)

    def _bm25(self) -> BM25Index:
        if self._words is None:
            raise ConfigError("SearchIndex is not fitted: call fit(texts) first")
        return self._words

    def all_scores(self, query: str) -> dict[str, NDArray[np.float32]]:
        """Every retriever's score for every document (dense ones exact)."""
        return self._scores(query, exact=True)[0]

    def _scores(self, query: str, *, exact: bool = False
                ) -> tuple[dict[str, NDArray[np.float32]], DenseList | None]:
        """Every retriever's scores; on a large catalog (unless ``exact``) the dense row is
        exact only on the HNSW list and the sample, described by the :class:`DenseList`."""
        bm25 = self._bm25()
        out = {"bm25": bm25.word_score(query)}
        if self.config.char_ngrams:
            out["ngram"] = bm25.ngram_score(query)
        vectors = self.vectors
        dense = None
        if vectors is not None and self.encode_query is not None:
            q = np.asarray(self.encode_query(query), dtype=np.float32)
            if exact or not self.approximate:
                out["dense"] = (vectors @ q).astype(np.float32)
            else:
                dense = self._dense_list(vectors, q)
                out["dense"] = dense_row(dense, self.n_docs)
        return out, dense

    def _dense_list(self, vectors: Rows, q: NDArray[np.float32]) -> DenseList:
        from shelfwise.services.cold_start import single_threaded_ann

        single_threaded_ann()
        ann = self.ann()  # searches run side by side (VectorIndex)
        idx = ann.search(q, self.config.dense_candidates, ef=self.config.dense_ef)[0][0]
        idx = idx[idx >= 0]
        with self._ann_lock:  # the sample's rows, gathered once per catalog size
            if self._sample is None or self._sample[0] != self.n_docs:
                self._sample = (self.n_docs, np.ascontiguousarray(
                    vectors[spread_sample(self.n_docs, SAMPLE)], dtype=np.float32))
            sample = self._sample[1]
        return DenseList(q, idx, (vectors[idx] @ q).astype(np.float32),
                         (sample @ q).astype(np.float32))

    def retrieve(self, query: str, *, allowed: NDArray[np.bool_] | None = None,
                 depth: int | None = None) -> Candidates:
        """Fused candidates for ``query`` among ``allowed`` documents (all when None)."""
        if not query.strip():
            raise ConfigError("query: empty; send some text to search for")
        depth = depth or self.config.depth
        scores, dense = self._scores(query)
        ok = np.ones(self.n_docs, bool) if allowed is None else allowed
        if dense is not None and allowed is not None and ok[dense.items].sum() < depth:
            # filters left too little of the list: compare with every item
            vectors = self.vectors
            assert vectors is not None
            scores["dense"], dense = (vectors @ dense.query).astype(np.float32), None
        fused = np.zeros(self.n_docs, np.float64)
        pooled = np.zeros(self.n_docs, bool)
        unknown = self._bm25().unknown_words(query) if "ngram" in scores else []
        for name, s in scores.items():
            w = self.config.weights.get(name, 0.0)
            if name == "ngram" and not unknown:
                continue  # every word matched as spelled: n-grams would only add noise
            if name == "dense" and dense is not None:  # only the list has exact scores
                cand = dense.items[ok[dense.items]]
            else:
                cand = np.flatnonzero(ok & (s > 0) if name != "dense" else ok)
            if len(cand) == 0:
                continue
            top = _top(cand, s[cand], depth * (4 if name == "ngram" else 1))
            if name == "ngram":
                top = self._covering(top, unknown)[:depth]
                if len(top) == 0:
                    continue
            pooled[top] = True
            fused[top] += w / (self.config.rrf_k + np.arange(1, len(top) + 1))
        index = np.flatnonzero(pooled).astype(np.int64)
        return self.candidates(index, scores, fused=fused[index], dense=dense)

    def _covering(self, docs: NDArray[np.int64], words: list[str]) -> NDArray[np.int64]:
        """Those of ``docs`` whose text contains enough of some misspelled word's n-grams."""
        bm25 = self._bm25()
        docs = np.asarray(docs, dtype=np.int64)
        keep = np.zeros(len(docs), bool)
        for word in words:
            grams = set(bm25.ngrams(word))
            if grams:
                keep |= bm25.gram_counts(docs, grams) >= (
                    self.config.min_ngram_coverage * len(grams))
        out: NDArray[np.int64] = docs[keep]
        return out

    def candidates(self, index: NDArray[np.int64], scores: dict[str, NDArray[np.float32]] |
                   None = None, *, query: str | None = None,
                   fused: NDArray[np.float64] | None = None, within_depth: bool = False,
                   dense: DenseList | None = None) -> Candidates:
        """A candidate set for given documents (the shop's own list, for re-ranking).
        ``within_depth`` fuses only ranks inside each retriever's depth, as :meth:`retrieve`
        does (for rebuilding the features of a logged search). ``dense`` describes an
        approximate dense row in ``scores``: the candidates get exact scores and estimated
        catalog ranks from it."""
        if scores is None:
            if query is None:
                raise ConfigError("candidates() needs the query or precomputed scores")
            scores, dense = self._scores(query)
        per = {name: s[index] for name, s in scores.items()}
        ranks = {name: _rank_within_catalog(s, index) for name, s in scores.items()
                 if name != "dense" or dense is None}
        if dense is not None:
            vectors = self.vectors
            assert vectors is not None
            per["dense"] = (vectors[index] @ dense.query).astype(np.float32)
            ranks["dense"] = dense.ranks(per["dense"], self.n_docs)
        if fused is None:  # catalog ranks (a shop's list may sit deep), and n-grams only
            # for words the index does not know, as retrieve() fuses
            fused = np.zeros(len(index), np.float64)
            typo = query is None or bool(self._bm25().unknown_words(query))
            for name, r in ranks.items():
                if name == "ngram" and not typo:
                    continue
                w = self.config.weights.get(name, 0.0)
                has = per[name] > 0 if name != "dense" else np.ones(len(index), bool)
                if within_depth:
                    has &= r <= self.config.depth
                fused += np.where(has, w / (self.config.rrf_k + r), 0.0)
        return Candidates(index, np.asarray(fused, np.float64), per, ranks)


def dense_row(dense: DenseList, n_docs: int) -> NDArray[np.float32]:
    """A full row from a :class:`DenseList`: its exact scores, the fill elsewhere."""
    row = np.full(n_docs, float(fill_value(dense.sample_scores, dense.scores)), np.float32)
    row[dense.items] = dense.scores
    return row


def _top(docs: NDArray[np.int64], scores: NDArray[np.float32], m: int) -> NDArray[np.int64]:
    """The ``m`` best of ``docs`` by score, best first, ties by document order (partial sort:
    only the documents at or above the m-th score are sorted)."""
    if len(docs) > m:
        kth = np.partition(scores, len(scores) - m)[len(scores) - m]
        keep = scores >= kth
        docs, scores = docs[keep], scores[keep]
    return docs[np.lexsort((docs, -scores))][:m]


def _rank_within_catalog(scores: NDArray[np.float32], index: NDArray[np.int64]
                         ) -> NDArray[np.float32]:
    """1-based rank of each of ``index`` in the whole catalog by ``scores`` (ties share)."""
    # each document's place among the few candidate scores instead of sorting the catalog:
    # below[d] = how many candidate values lie strictly under document d's score
    values = np.sort(scores[index])
    scores_above = scores[scores > values[0]] if len(values) else scores  # the rest are lower
    below = np.searchsorted(values, scores_above, side="left")
    at_most = np.cumsum(np.bincount(below, minlength=len(values) + 1))
    # documents strictly above values[j] are those with below > j
    higher = scores_above.shape[0] - at_most[np.searchsorted(values, scores[index],
                                                             side="left")]
    out: NDArray[np.float32] = (higher + 1).astype(np.float32)
    return out
