"""Lexical likeness of item texts for the feed ranker: the words two items share.

A multilingual sentence encoder places "Call of Duty: Black Ops III" near every shooter; the
words (and word pairs) a title shares with one the user bought name the product line, the
sequel, the brand (``benchmarks/bench_cold_ceiling.py`` measures how much they find alone).

Words come from the search index's tokenizer (Chinese segmented, English stemmed, stop words
dropped); each text's first :data:`MAX_TOKENS` words and their adjacent pairs are hashed into
:data:`N_FEATURES` buckets (no vocabulary to keep in memory), weighted by sublinear tf times
the idf of the fitted catalog, rows L2-normalised. Terms that fewer than two catalog items
carry get no weight: they cannot link two items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from shelfwise.data.interactions import History
from shelfwise.retrieval.base import top_k
from shelfwise.text.bm25 import BM25Index, put_growing

N_FEATURES = 1 << 20
MAX_TOKENS = 24
"""Words read per text (the title comes first in an item's text)."""
MIN_DF = 2
CHUNK_CELLS = 1 << 22
"""Dense (history item x cold item) similarities held at once by :meth:`TitleTerms.top_cold`
(16 MB of float32)."""
LEXICAL_FEATURES = ("lex_last_item", "lex_max_history")


def _terms(tokenize: Callable[[str], list[str]], text: str) -> list[str]:
    words = tokenize(text)[:MAX_TOKENS]
    return words + [f"{a} {b}" for a, b in pairwise(words)]


class TitleTerms:
    """Hashed tf-idf rows of the items' texts (row = item index) and the fitted idf."""

    def __init__(self, idf: NDArray[np.float32], matrix: sp.csr_matrix) -> None:
        self.idf = idf
        # CSR arrays with spare room: a posted item appends in amortised O(its terms)
        self._data: NDArray[np.float32] = matrix.data.astype(np.float32)
        self._indices: NDArray[np.int32] = matrix.indices.astype(np.int32)
        self._indptr: NDArray[np.int64] = matrix.indptr.astype(np.int64)
        self._rows = int(matrix.shape[0])
        self._vectorizer: Any = None
        # term -> cold item postings for top_cold: the fitted cold items, then a tail of
        # items that became cold later (posted), rebuilt alone while it stays small
        self._cold_blocks: list[tuple[NDArray[np.int64], sp.csr_matrix]] = []

    @property
    def matrix(self) -> sp.csr_matrix:
        """The rows as a scipy CSR matrix (a view of the stored arrays)."""
        nnz = int(self._indptr[self._rows])
        return sp.csr_matrix((self._data[:nnz], self._indices[:nnz],
                              self._indptr[: self._rows + 1]), shape=(self._rows, N_FEATURES))

    @classmethod
    def fit(cls, texts: Sequence[str] | None) -> TitleTerms | None:
        """Fitted on the catalog's texts; None when no item has text."""
        if not texts or not any(t and t.strip() for t in texts):
            return None
        obj = cls(np.zeros(N_FEATURES, np.float32), sp.csr_matrix((0, N_FEATURES),
                                                                   dtype=np.float32))
        counts = obj._counts(texts)
        df = np.bincount(counts.indices, minlength=N_FEATURES)
        n = counts.shape[0]
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        idf[df < MIN_DF] = 0.0
        obj.idf = idf.astype(np.float32)
        obj._append(counts)
        return obj

    def add(self, texts: Sequence[str]) -> None:
        """Rows for items appended after fitting (same idf: their new words weigh nothing).
        Readers see the new rows once ``n_items`` grows, which happens last."""
        if texts:
            self._append(self._counts(texts))

    def _append(self, counts: sp.csr_matrix) -> None:
        rows = self._weigh(counts)
        nnz = int(self._indptr[self._rows])
        self._data = put_growing(self._data, nnz, rows.data)
        self._indices = put_growing(self._indices, nnz, rows.indices)
        self._indptr = put_growing(self._indptr, self._rows + 1,
                                   rows.indptr[1:].astype(np.int64) + nnz)
        self._rows += rows.shape[0]

    @property
    def n_items(self) -> int:
        return self._rows

    def _counts(self, texts: Iterable[str]) -> sp.csr_matrix:
        if self._vectorizer is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            tokenize = BM25Index().tokenize
            self._vectorizer = HashingVectorizer(
                analyzer=lambda text: _terms(tokenize, text), n_features=N_FEATURES,
                alternate_sign=False, norm=None, dtype=np.float32)
        counts: sp.csr_matrix = self._vectorizer.transform(
            [t or "" for t in texts])
        return counts.tocsr()

    def _weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        m = counts.copy()
        m.data = (1.0 + np.log(m.data)) * self.idf[m.indices]
        m.eliminate_zeros()
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        m = sp.csr_matrix(sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms),
                                             where=norms > 0)) @ m)
        m.data = m.data.astype(np.float32)
        m.indices = m.indices.astype(np.int32)
        return m

    def similarities(self, histories: Sequence[History], items: NDArray[np.int64],
                     offsets: NDArray[np.int64], recent: int
                     ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """For each candidate (``items[offsets[r]:offsets[r + 1]]`` belong to history ``r``):
        its cosine to the history's last item, and the largest to any of its last ``recent``
        items; NaN where either side has no row. Works on the rows' few terms only (scipy's
        product would build 2^20-long index arrays per call)."""
        n = self.n_items
        last = np.full(items.shape[0], np.nan, np.float32)
        best = last.copy()
        for r, hist in enumerate(histories):
            lo, hi = int(offsets[r]), int(offsets[r + 1])
            h = np.asarray(hist, np.int64)
            h = h[(h >= 0) & (h < n)][-recent:]
            if hi == lo or h.shape[0] == 0:
                continue
            c = items[lo:hi]
            ok = np.flatnonzero(c < n)
            if ok.shape[0] == 0:
                continue
            h_row, h_term, h_val = self._entries(h)
            terms, at = np.unique(h_term, return_inverse=True)
            hist_terms = np.zeros((terms.shape[0], h.shape[0]), np.float32)
            hist_terms[at, h_row] = h_val
            c_row, c_term, c_val = self._entries(c[ok])
            pos = np.minimum(np.searchsorted(terms, c_term), max(terms.shape[0] - 1, 0))
            hit = (terms[pos] == c_term if terms.shape[0]
                   else np.zeros(c_term.shape[0], bool))
            sims = np.zeros((ok.shape[0], h.shape[0]), np.float32)
            rows = c_row[hit]  # ascending: entries come row by row
            if rows.shape[0]:
                first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
                sims[rows[first]] = np.add.reduceat(
                    c_val[hit, None] * hist_terms[pos[hit]], first, axis=0)
            last[lo + ok] = sims[:, -1]
            best[lo + ok] = sims.max(axis=1)
        return last, best

    def top_cold(self, histories: Sequence[History], cold: NDArray[np.int64], k: int,
                 recent: int, *, exclude: bool = True) -> NDArray[np.int64]:
        """Per history (rows), the ``k`` items of ``cold`` (ascending item indices) whose text
        shares the most words with any of its last ``recent`` items (largest cosine; ties
        broken arbitrarily), best first, -1 padded; with ``exclude`` the history's own items
        are skipped. Reads only the postings of the history items' terms."""
        out = np.full((len(histories), k), -1, np.int64)
        n = self.n_items
        cold = np.asarray(cold, np.int64)
        cold = cold[cold < n]
        hists = [np.asarray(h, np.int64) for h in histories]
        hists = [h[(h >= 0) & (h < n)] for h in hists]
        if k == 0 or cold.shape[0] == 0 or not any(h.shape[0] for h in hists):
            return out
        blocks = self._cold_postings(cold)  # their items, concatenated, are ``cold``
        step = max(1, CHUNK_CELLS // (cold.shape[0] * max(recent, 1)))
        for lo in range(0, len(hists), step):
            part = hists[lo : lo + step]
            recents = [h[-recent:] for h in part]
            lens = np.asarray([h.shape[0] for h in recents], np.int64)
            has = np.flatnonzero(lens)
            if has.shape[0] == 0:
                continue
            flat = np.concatenate(recents)
            h_row, h_term, h_val = self._entries(flat)
            queries = sp.csr_matrix((h_val, (h_row, h_term)),
                                    shape=(flat.shape[0], N_FEATURES))
            sims = np.hstack([(queries @ postings).toarray() for _, postings in blocks])
            best = np.full((len(part), cold.shape[0]), -np.inf, np.float32)
            best[has] = np.maximum.reduceat(sims, (np.cumsum(lens) - lens)[has], axis=0)
            best[best <= 0] = -np.inf  # no shared word: not a candidate
            if exclude:
                for r, h in enumerate(part):
                    at = np.searchsorted(cold, h)
                    ok = at < cold.shape[0]
                    at, h = at[ok], h[ok]
                    best[r, at[cold[at] == h]] = -np.inf
            idx, _ = top_k(best, k)
            out[lo : lo + len(part)] = np.where(idx >= 0, cold[np.maximum(idx, 0)], -1)
        return out

    def _cold_postings(self, cold: NDArray[np.int64]
                       ) -> list[tuple[NDArray[np.int64], sp.csr_matrix]]:
        """Blocks of (items, term x item postings) covering ``cold``: kept while ``cold``
        still starts with the first block's items, the rest rebuilt as one tail block."""
        blocks = self._cold_blocks
        base = blocks[0][0] if blocks else np.zeros(0, np.int64)
        m = base.shape[0]
        if not blocks or cold.shape[0] < m or not np.array_equal(cold[:m], base) or (
                cold.shape[0] - m > max(m // 4, 1024)):
            blocks = [self._postings(cold)]
        elif cold.shape[0] > m and (len(blocks) < 2 or not np.array_equal(
                cold[m:], blocks[1][0])):
            blocks = [blocks[0], self._postings(cold[m:])]
        elif cold.shape[0] == m:
            blocks = blocks[:1]
        self._cold_blocks = blocks
        return blocks

    def _postings(self, items: NDArray[np.int64]) -> tuple[NDArray[np.int64], sp.csr_matrix]:
        row, term, val = self._entries(items)
        return items.copy(), sp.csr_matrix((val, (term, row)),
                                           shape=(N_FEATURES, items.shape[0]))

    def _entries(self, rows: NDArray[np.int64]
                 ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
        """(position in ``rows``, term, weight) of every stored entry of those rows."""
        indptr, indices, data = self._indptr, self._indices, self._data
        starts = indptr[rows]
        lens = indptr[rows + 1] - starts
        owner = np.repeat(np.arange(rows.shape[0]), lens)
        at = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(
            starts, lens)
        return owner, indices[at], data[at]

    # ---- persistence -----------------------------------------------------------------------
    def arrays(self) -> dict[str, NDArray[np.generic]]:
        keep = np.flatnonzero(self.idf)
        m = self.matrix
        return {"idf_at": keep.astype(np.int32), "idf": self.idf[keep], "data": m.data,
                "indices": m.indices, "indptr": m.indptr}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> TitleTerms:
        idf = np.zeros(N_FEATURES, np.float32)
        idf[arrays["idf_at"]] = arrays["idf"]
        indptr = np.asarray(arrays["indptr"])
        matrix = sp.csr_matrix((arrays["data"], arrays["indices"], indptr),
                               shape=(indptr.shape[0] - 1, N_FEATURES))
        return cls(idf, matrix)
