"""Sampled-candidate ranking (the LLMRank protocol): rank each user's targets among a small pool.

Full ranking over the catalog is shelfwise's default protocol; sampled metrics are higher and not
comparable with it (Krichene & Rendle, KDD 2020). They exist for re-rankers too costly to score
the whole catalog (LLMs) and to compare with papers that report them, e.g. LLMRank's
"20 random items + the target" on Amazon Games.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shelfwise.exceptions import ConfigError


def _rows(arrays: Sequence[ArrayLike]) -> list[NDArray[np.int64]]:
    return [np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays]


def _pad(rows: list[NDArray[np.int64]], width: int) -> NDArray[np.int64]:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def sample_negatives(
    n_items: int,
    exclude: Sequence[ArrayLike],
    n_negatives: int = 20,
    *,
    seed: int | np.random.Generator = 0,
) -> NDArray[np.int64]:
    """``(len(exclude), n_negatives)`` distinct random items per row, none of them in
    ``exclude[row]`` (pass each user's history plus targets). Rows with too few allowed items
    get all of them, padded with -1. Rejection sampling, vectorised over rows."""
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    rng = np.random.default_rng(seed)
    n = len(exclude)
    rows_in = _rows(exclude)
    lens = np.fromiter(map(len, rows_in), dtype=np.int64, count=n)
    flat = np.concatenate(rows_in) if lens.sum() else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), lens)
    ok = (flat >= 0) & (flat < n_items)
    fkeys = np.unique(owner[ok] * n_items + flat[ok])  # sorted (row, item) keys to avoid
    starts = np.searchsorted(fkeys, np.arange(n + 1, dtype=np.int64) * n_items)
    allowed = n_items - np.diff(starts)
    out = np.full((n, n_negatives), -1, dtype=np.int64)
    short = np.flatnonzero(allowed < 2 * n_negatives)  # draw these directly from what is left
    for row in short:
        taken = fkeys[starts[row] : starts[row + 1]] - row * n_items
        free = np.setdiff1d(np.arange(n_items), taken, assume_unique=True)
        take = rng.permutation(free)[:n_negatives]
        out[row, : take.shape[0]] = take
    rows = np.setdiff1d(np.arange(n), short)
    if rows.shape[0] == 0:
        return out
    draw = rng.integers(0, n_items, size=(rows.shape[0], n_negatives), dtype=np.int64)
    bad = np.ones_like(draw, dtype=bool)
    while bad.any():
        draw[bad] = rng.integers(0, n_items, size=int(bad.sum()), dtype=np.int64)
        bad = np.isin(rows[:, None] * n_items + draw, fkeys)
        order = np.argsort(draw, axis=1, kind="stable")
        s = np.take_along_axis(draw, order, axis=1)
        dup = np.zeros_like(bad)
        dup[:, 1:] = s[:, 1:] == s[:, :-1]
        np.put_along_axis(bad, order, np.take_along_axis(bad, order, axis=1) | dup, axis=1)
    out[rows] = draw
    return out


def candidate_lists(
    targets: Sequence[ArrayLike],
    negatives: Sequence[ArrayLike] | NDArray[np.int64],
    *,
    seed: int | np.random.Generator = 0,
) -> NDArray[np.int64]:
    """Each user's pool: their targets plus their negatives (minus any that are targets),
    shuffled so that ties in a model's scores are broken at random; -1 pads to equal width."""
    rng = np.random.default_rng(seed)
    t_rows, n_rows = _rows(targets), _rows(list(negatives))
    if len(t_rows) != len(n_rows):
        raise ValueError(f"{len(t_rows)} target lists but {len(n_rows)} negative lists")
    pools = []
    for t, neg in zip(t_rows, n_rows, strict=True):
        t = t[t >= 0]
        neg = neg[(neg >= 0) & ~np.isin(neg, t)]
        pool = np.concatenate((np.unique(t), neg))
        pools.append(rng.permutation(pool))
    width = max((p.shape[0] for p in pools), default=0)
    return _pad(pools, width)


def rank_candidates(scores: ArrayLike, candidates: ArrayLike, k: int) -> NDArray[np.int64]:
    """Top-``k`` of each candidate pool (``-1`` = padding) ordered by ``scores`` over all items
    ``(n_users, n_items)``; a ``reco`` array for the metrics. Candidates scored ``-inf`` or NaN
    rank after the others (kept, not dropped); ties keep pool order."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.int64)
    if s.ndim != 2 or c.ndim != 2 or s.shape[0] != c.shape[0]:
        raise ValueError(f"scores {s.shape} and candidates {c.shape} must be 2-D with equal rows")
    pad = c < 0
    cs = np.take_along_axis(s, np.where(pad, 0, c), axis=1)
    key = np.where(np.isnan(cs) | np.isneginf(cs), np.inf, -cs)
    key[pad] = np.nan  # NaN sorts after +inf: padding goes last
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    reco = np.take_along_axis(c, order, axis=1)
    if reco.shape[1] < k:
        reco = np.pad(reco, ((0, 0), (0, k - reco.shape[1])), constant_values=-1)
    return reco
