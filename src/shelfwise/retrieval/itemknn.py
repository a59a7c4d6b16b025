"""Item-kNN: cosine item-item similarity over the user-item matrix, pruned to top neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores
from shelfwise.retrieval.ease import history_matrix


class ItemKNNConfig(GeneratorConfig):
    neighbors: int = Field(default=100, ge=1, description="similar items kept per item")
    shrink: float = Field(
        default=0.0, ge=0, description="cosine shrinkage: c_ij / (sqrt(n_i·n_j) + shrink)"
    )
    history_decay: float = Field(
        default=1.0, gt=0, le=1, description="weight of a history item d steps back: decay**d"
    )
    max_history: int | None = Field(default=None, ge=1, description="use only the last items")
    popularity_tiebreak: bool = Field(
        default=True, description="break ties (e.g. no similar item) by item popularity"
    )


class ItemKNN(BaseGenerator):
    """Scores items by summed cosine similarity to the history's items.

    Similarity is computed on the binary user-item matrix (users who took both items over the
    geometric mean of each item's users), the diagonal dropped, and each item keeps only its
    ``neighbors`` most similar items.
    """

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    def _fit(self, data: Interactions) -> None:
        cfg = self.config
        x = data.to_csr(binary=True)
        counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
        co = sp.coo_matrix(x.T @ x)
        keep = co.row != co.col
        rows, cols = co.row[keep].astype(np.int64), co.col[keep].astype(np.int64)
        sim = co.data[keep] / (np.sqrt(counts[rows] * counts[cols]) + cfg.shrink)
        self.similarity_ = _top_per_row(rows, cols, sim, data.n_items, cfg.neighbors)
        pop = counts / max(counts.max(initial=0.0), 1.0)
        floor = float(self.similarity_.data.min()) if self.similarity_.nnz else 1.0
        # Scaled below the smallest similarity a single history item adds: only breaks ties.
        self.tiebreak_ = (pop * floor * 1e-3).astype(np.float32)

    def _score(self, histories: Sequence[History]) -> Scores:
        n = self.similarity_.shape[0]
        cfg = self.config
        h = history_matrix(histories, n, decay=cfg.history_decay, max_history=cfg.max_history)
        out = np.asarray((h @ self.similarity_).toarray(), dtype=np.float32)
        if cfg.popularity_tiebreak:
            out += self.tiebreak_
        return out

    def _state(self) -> dict[str, NDArray[Any]]:
        s = self.similarity_
        return {
            "data": s.data,
            "indices": s.indices,
            "indptr": s.indptr,
            "tiebreak": self.tiebreak_,
        }

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        n = state["indptr"].shape[0] - 1
        self.similarity_ = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=(n, n)
        )
        self.tiebreak_ = state["tiebreak"].astype(np.float32)


def _top_per_row(
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    vals: NDArray[np.float64],
    n: int,
    k: int,
) -> sp.csr_matrix:
    """Sparse (n, n) float32 matrix keeping the ``k`` largest values of each row (ties: lower
    column first)."""
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.shape[0]) - starts[rows]
    keep = (rank < k) & (vals > 0)
    m = sp.csr_matrix((vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n, n))
    m.sort_indices()
    return m
