"""EASE: a closed-form linear item-item autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError, ShelfwiseError
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores, unique_first

BYTES_PER_ITEM_PAIR = 12
"""Peak memory of the EASE fit per item pair: one float64 Gram/inverse plus the float32 B."""


def history_matrix(
    histories: Sequence[History],
    n_items: int,
    *,
    decay: float = 1.0,
    max_history: int | None = None,
) -> sp.csr_matrix:
    """Histories as a sparse (n_histories, n_items) float32 matrix.

    Each distinct item weighs ``decay**d``, ``d`` = steps since its most recent occurrence
    (so ``decay=1`` gives a binary row). Indices outside ``[0, n_items)`` (items the model was
    not trained on) are skipped.
    """
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    cols: list[NDArray[np.int64]] = []
    vals: list[NDArray[np.float32]] = []
    for row, hist in enumerate(histories):
        h = np.asarray(hist, dtype=np.int64)
        if max_history is not None:
            h = h[-max_history:]
        rev = h[::-1]
        rev_steps = np.arange(rev.shape[0])[(rev >= 0) & (rev < n_items)]
        rev = rev[(rev >= 0) & (rev < n_items)]
        items, first = unique_first(rev)  # first in reversed = most recent
        cols.append(items)
        vals.append((decay ** rev_steps[first].astype(np.float64)).astype(np.float32))
        indptr[row + 1] = indptr[row] + items.shape[0]
    return sp.csr_matrix(
        (
            np.concatenate(vals) if vals else np.empty(0, np.float32),
            np.concatenate(cols) if cols else np.empty(0, np.int64),
            indptr,
        ),
        shape=(len(histories), n_items),
    )


def popularity_prior(data: Interactions) -> NDArray[np.float32]:
    """Interaction counts scaled to [0, 1]: the answer for an empty history."""
    counts = np.bincount(data.item_idx, minlength=data.n_items).astype(np.float64)
    scaled: NDArray[np.float32] = (counts / max(float(counts.max(initial=0.0)), 1.0)).astype(
        np.float32
    )
    return scaled


def fill_empty_rows(scores: Scores, h: sp.csr_matrix, prior: NDArray[np.float32]) -> Scores:
    """Rows whose history had no known item get ``prior`` (popularity) instead of zeros."""
    empty = np.diff(h.indptr) == 0
    if empty.any():
        scores[empty] = prior
    return scores


class EASEConfig(GeneratorConfig):
    l2: float = Field(default=500.0, gt=0, description="L2 regularisation λ of the item weights")
    max_items: int = Field(
        default=20_000,
        ge=1,
        description="refuse to fit above this many items: the fit needs ~12·n² bytes "
        "(20k items ≈ 4.8 GB) and O(n³) time",
    )
    history_decay: float = Field(
        default=1.0, gt=0, le=1, description="weight of a history item d steps back: decay**d"
    )
    max_history: int | None = Field(default=None, ge=1, description="use only the last items")


class EASE(BaseGenerator):
    """Embarrassingly Shallow Autoencoder: ``B = I - P·diag(1/diag P)``, ``P = (XᵀX + λI)⁻¹``.

    ``X`` is the binary user-item matrix; ``B`` is dense (n_items²) with a zero diagonal. A
    history is scored as its (optionally recency-weighted) binary row times ``B``. Dense state
    limits it to catalogs of about ``max_items`` (default 20k) items; see ``BYTES_PER_ITEM_PAIR``.
    """

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def _fit(self, data: Interactions) -> None:
        n = data.n_items
        if n > self.config.max_items:
            gb = BYTES_PER_ITEM_PAIR * n * n / 1e9
            raise ConfigError(
                f"EASE with {n} items needs ~{gb:.1f} GB of memory (dense {n}x{n}), above "
                f"max_items={self.config.max_items}; raise max_items if the machine has the "
                "memory, or use 'itemknn' / 'als' for large catalogs"
            )
        x = data.to_csr(binary=True)
        gram = sp.csr_matrix(x.T @ x, dtype=np.float64).toarray(order="C")
        gram[np.diag_indices(n)] += self.config.l2
        p = _spd_inverse_inplace(gram)
        diag = np.diag(p).copy()
        p /= -diag[np.newaxis, :]  # B_ij = -P_ij / P_jj
        p[np.diag_indices(n)] = 0.0
        self.weights_ = np.ascontiguousarray(p, dtype=np.float32)
        del p, gram
        self.popularity_ = popularity_prior(data)

    def _score(self, histories: Sequence[History]) -> Scores:
        n = self.weights_.shape[0]
        h = history_matrix(
            histories, n, decay=self.config.history_decay, max_history=self.config.max_history
        )
        scores = np.asarray(h @ self.weights_, dtype=np.float32)
        return fill_empty_rows(scores, h, self.popularity_)

    def _state(self) -> dict[str, NDArray[Any]]:
        return {"weights": self.weights_, "popularity": self.popularity_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.weights_ = np.ascontiguousarray(state["weights"], dtype=np.float32)
        self.popularity_ = state["popularity"].astype(np.float32)


def _spd_inverse_inplace(a: NDArray[np.float64], block: int = 2048) -> NDArray[np.float64]:
    """Inverse of a symmetric positive-definite matrix, overwriting ``a`` (no second n² copy).

    LAPACK potrf + potri on the Fortran view of ``a`` (equal to ``a`` since it is symmetric)
    leave the inverse in one triangle; the other is then mirrored block by block.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

    if not a.flags.c_contiguous:
        raise ValueError("_spd_inverse_inplace needs a C-contiguous matrix")
    f = a.T  # Fortran-contiguous view of the same memory
    # one BLAS thread: scipy's OpenBLAS 0.3.30 crashed the process (SIGSEGV) in a two-thread
    # dpotrf at n = 16,859 (Amazon Games), and ran it on one thread
    with threadpool_limits(1, user_api="blas"):
        c, info = lapack.dpotrf(f, lower=0, overwrite_a=1, clean=0)
        if info != 0:
            raise ShelfwiseError(
                f"EASE: Gram matrix is not positive definite (potrf info={info})")
        inv, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise ShelfwiseError(f"EASE: inversion failed (potri info={info})")
    if not np.shares_memory(inv, a):  # LAPACK wrapper copied after all; keep correctness
        a[...] = inv.T
    # The Fortran upper triangle is the C lower triangle of `a`: mirror it to the upper one.
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        blk = a[start:stop, start:stop]
        a[start:stop, start:stop] = np.tril(blk) + np.tril(blk, -1).T
        a[start:stop, stop:] = a[stop:, start:stop].T
    return a
