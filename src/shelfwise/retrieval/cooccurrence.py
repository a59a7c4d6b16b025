"""Item-to-item co-occurrence: "shoppers who took X also took Y", from each user's sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores, SparseRow


class CooccurrenceConfig(GeneratorConfig):
    window: int | None = Field(
        default=3, ge=1, description="pairs at most this many steps apart; None = whole history"
    )
    directed: bool = Field(default=False, description="count only X-then-Y, not Y-then-X")
    normalization: Literal["cosine", "none"] = "cosine"
    history_decay: float = Field(
        default=0.7, gt=0, le=1, description="weight of a history item d steps back: decay**d"
    )
    max_history: int = Field(default=50, ge=1)
    popularity_tiebreak: bool = Field(
        default=True, description="break ties (e.g. zero co-occurrence) by item popularity"
    )


class Cooccurrence(BaseGenerator):
    """Scores items by weighted co-occurrence with the user's recent items.

    Pairs within ``window`` positions count ``1/distance``; counts are cosine-normalised by
    item frequency so that bestsellers do not co-occur with everything.
    """

    name = "cooccurrence"
    Config = CooccurrenceConfig
    config: CooccurrenceConfig

    def _fit(self, data: Interactions) -> None:
        n = data.n_items
        items, users = data.item_idx, data.user_idx
        cfg = self.config
        rows: list[NDArray[np.int64]] = []
        cols: list[NDArray[np.int64]] = []
        vals: list[NDArray[np.float32]] = []
        max_gap = cfg.window
        if max_gap is None:
            x = data.to_csr(binary=True)
            c = (x.T @ x).tocoo()
            rows.append(c.row.astype(np.int64))
            cols.append(c.col.astype(np.int64))
            vals.append(c.data.astype(np.float32))
        else:
            for d in range(1, max_gap + 1):
                same = users[d:] == users[:-d]
                a, b = items[:-d][same], items[d:][same]
                w = np.full(a.shape[0], 1.0 / d, dtype=np.float32)
                rows.append(a)
                cols.append(b)
                vals.append(w)
                if not cfg.directed:
                    rows.append(b)
                    cols.append(a)
                    vals.append(w)
        c = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        c.sum_duplicates()
        c.setdiag(0)
        c.eliminate_zeros()
        freq = np.bincount(items, minlength=n).astype(np.float64)
        if cfg.normalization == "cosine":
            inv = 1.0 / np.sqrt(np.maximum(freq, 1.0))
            c = sp.diags(inv) @ c @ sp.diags(inv)
        self.matrix_ = sp.csr_matrix(c, dtype=np.float32)
        pop = freq / max(freq.max(), 1.0)
        # Scaled below the smallest possible co-occurrence signal so it only breaks ties.
        floor = float(self.matrix_.data.min()) if self.matrix_.nnz else 1.0
        self.tiebreak_ = (pop * floor * 1e-3).astype(np.float32)

    def _known(self, history: History, n: int) -> NDArray[np.int64]:
        """The history's last ``max_history`` items that the matrix has."""
        h = np.asarray(history, dtype=np.int64)[-self.config.max_history :]
        return h[(h >= 0) & (h < n)]

    def _history_matrix(self, histories: Sequence[History], n: int) -> sp.csr_matrix:
        cfg = self.config
        indptr = [0]
        indices: list[NDArray[np.int64]] = []
        data: list[NDArray[np.float32]] = []
        for raw in histories:
            h = self._known(raw, n)
            w = cfg.history_decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
            indices.append(h)
            data.append(w.astype(np.float32))
            indptr.append(indptr[-1] + len(h))
        return sp.csr_matrix(
            (
                np.concatenate(data) if data else np.empty(0, np.float32),
                np.concatenate(indices) if indices else np.empty(0, np.int64),
                np.asarray(indptr),
            ),
            shape=(len(histories), n),
        )

    def _score(self, histories: Sequence[History]) -> Scores:
        n = self.matrix_.shape[0]
        h = self._history_matrix(histories, n)
        out = np.asarray((h @ self.matrix_).todense(), dtype=np.float32)
        if self.config.popularity_tiebreak:
            out += self.tiebreak_
        return out

    def sparse_row(self, history: History, focus: NDArray[np.int64] | None = None
                   ) -> SparseRow | None:
        """The history's neighbours (zero elsewhere); None with the popularity tie-break."""
        if self.config.popularity_tiebreak:
            return None
        m = self.matrix_
        n = m.shape[0]
        h = self._known(history, n)
        if len(h) == 1:  # one item (similar items): its row, weight 1 (no sparse product)
            a, b = m.indptr[h[0]], m.indptr[h[0] + 1]
            return SparseRow.of(n, 0.0, m.indices[a:b], m.data[a:b])
        row = self._history_matrix([h], n) @ m
        return SparseRow.of(n, 0.0, row.indices, row.data)

    def _state(self) -> dict[str, NDArray[Any]]:
        m = self.matrix_
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr,
                "tiebreak": self.tiebreak_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        n = state["indptr"].shape[0] - 1
        self.matrix_ = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=(n, n)
        )
        self.tiebreak_ = state["tiebreak"]
