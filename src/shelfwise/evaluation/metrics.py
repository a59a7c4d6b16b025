"""Top-k ranking metrics over recommendation lists, vectorised over users.

Every metric reads ``reco``, an ``(n_users, >= k)`` array of item indices, best first, where
``-1`` pads lists shorter than ``k`` (as :func:`shelfwise.retrieval.top_k` returns), and
``targets``, one array of relevant item indices per row. Relevance is binary: duplicated targets
count once and an item repeated within a list is credited only at its first position. A user with
no targets has no defined accuracy, so ``calc_per_user`` gives NaN there and ``calc`` averages over
the users that have targets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shelfwise.exceptions import ConfigError

Targets = Sequence[NDArray[np.integer[Any]] | Sequence[int]]
"""One array (or list) of relevant item indices per user."""


@runtime_checkable
class Metric(Protocol):
    """Anything with a cutoff ``k``, a display ``name`` (``"NDCG@10"``) and a scalar ``calc``."""

    @property
    def k(self) -> int: ...

    @property
    def name(self) -> str: ...

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None) -> float: ...


def _as_reco(reco: ArrayLike, k: int) -> NDArray[np.int64]:
    arr = np.asarray(reco)
    if arr.ndim != 2:
        raise ValueError(f"reco must be 2-D (n_users, k), got shape {arr.shape}")
    if arr.shape[1] < k and arr.shape[0] > 0:
        raise ValueError(f"reco has {arr.shape[1]} columns, fewer than k={k}; pad with -1")
    return arr[:, :k].astype(np.int64, copy=False)


def relevance(
    reco: ArrayLike, targets: Targets, k: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Hit matrix ``(n_users, k)`` (is ``reco[u, j]`` a target of user ``u``) and the number of
    distinct targets per user. Membership is one binary search of (user, item) keys in the
    sorted target keys, so the cost is a few sorts, with no Python loop over users."""
    r = _as_reco(reco, k)
    n = r.shape[0]
    if len(targets) != n:
        raise ValueError(f"reco has {n} rows but targets has {len(targets)} entries")
    if n == 0:
        return np.zeros((0, k), bool), np.zeros(0, np.int64)
    lens = np.fromiter(map(len, targets), dtype=np.int64, count=n)
    flat = (
        np.concatenate(targets).astype(np.int64, copy=False).reshape(-1)
        if lens.sum()
        else np.zeros(0, np.int64)
    )
    owner = np.repeat(np.arange(n, dtype=np.int64), lens)
    keep = flat >= 0
    flat, owner = flat[keep], owner[keep]
    base = int(max(r.max(initial=0), flat.max(initial=0))) + 1
    tkeys = np.sort(owner * base + flat)
    if tkeys.shape[0] > 1:
        tkeys = tkeys[np.concatenate(([True], tkeys[1:] != tkeys[:-1]))]
    n_rel = np.bincount(tkeys // base, minlength=n).astype(np.int64)
    hits = np.zeros(r.shape, dtype=bool)
    if tkeys.shape[0]:
        rkeys = np.arange(n, dtype=np.int64)[:, None] * base + r
        pos = np.minimum(np.searchsorted(tkeys, rkeys), tkeys.shape[0] - 1)
        hits = (tkeys[pos] == rkeys) & (r >= 0)
    multi = np.flatnonzero(hits.sum(axis=1) > 1)
    if multi.shape[0]:  # a repeated item is credited at its first position only
        rm = r[multi]
        order = np.argsort(rm, axis=1, kind="stable")
        s = np.take_along_axis(rm, order, axis=1)
        dup_sorted = np.zeros(rm.shape, dtype=bool)
        dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        hits[multi] &= ~dup
    return hits, n_rel


def _mean(values: NDArray[np.float64]) -> float:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


@dataclass(frozen=True)
class _RankingMetric:
    """Shared plumbing of per-user accuracy metrics; subclasses define ``_per_user``."""

    k: int
    label: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.k, int | np.integer) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(
                f"{type(self).__name__}: k must be a positive integer, got {self.k!r}"
            )

    @property
    def name(self) -> str:
        return f"{self.label}@{self.k}"

    def calc_per_user(self, reco: ArrayLike, targets: Targets) -> NDArray[np.float64]:
        """Value per user (NaN for users without targets)."""
        hits, n_rel = relevance(reco, targets, self.k)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self._per_user(hits, n_rel)
        out[n_rel == 0] = np.nan
        return out

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None) -> float:
        """Mean over users with at least one target (``n_items`` is unused here)."""
        return _mean(self.calc_per_user(reco, targets))

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        raise NotImplementedError


@dataclass(frozen=True)
class HitRate(_RankingMetric):
    """1 if any target is in the top ``k``, else 0 (HR@k; equals Recall@k with one target)."""

    label: ClassVar[str] = "HR"

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.asarray(hits.any(axis=1), dtype=np.float64)
        return out


@dataclass(frozen=True)
class Recall(_RankingMetric):
    """Share of the user's distinct targets found in the top ``k``."""

    label: ClassVar[str] = "Recall"

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = hits.sum(axis=1) / n_rel.astype(np.float64)
        return out


@dataclass(frozen=True)
class Precision(_RankingMetric):
    """Share of the ``k`` slots holding a target (padding counts as a miss)."""

    label: ClassVar[str] = "Precision"

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = hits.sum(axis=1) / float(self.k)
        return out


@dataclass(frozen=True)
class MRR(_RankingMetric):
    """Reciprocal rank of the first target within the top ``k`` (0 if none)."""

    label: ClassVar[str] = "MRR"

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        first = hits.argmax(axis=1)
        out: NDArray[np.float64] = np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)
        return out


@dataclass(frozen=True)
class NDCG(_RankingMetric):
    """Binary-relevance NDCG: DCG with gain 1/log2(rank+1), divided by the ideal DCG of
    ``min(k, n_targets)`` hits at the top."""

    label: ClassVar[str] = "NDCG"

    def _per_user(self, hits: NDArray[np.bool_], n_rel: NDArray[np.int64]) -> NDArray[np.float64]:
        disc = 1.0 / np.log2(np.arange(2, self.k + 2, dtype=np.float64))
        dcg = hits.astype(np.float64) @ disc
        ideal = np.concatenate(([0.0], np.cumsum(disc)))[np.minimum(n_rel, self.k)]
        out: NDArray[np.float64] = dcg / ideal
        return out


@dataclass(frozen=True)
class Coverage:
    """Catalog coverage: distinct items across all top-``k`` lists / ``n_items``.

    A property of the whole set of lists, not of one user, so it has ``calc`` only.
    """

    k: int
    label: ClassVar[str] = "Coverage"

    def __post_init__(self) -> None:
        if not isinstance(self.k, int | np.integer) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(f"Coverage: k must be a positive integer, got {self.k!r}")

    @property
    def name(self) -> str:
        return f"{self.label}@{self.k}"

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None) -> float:
        """``targets`` is ignored; ``n_items`` (catalog size) is required."""
        if n_items is None or n_items < 1:
            raise ConfigError("Coverage needs n_items, the catalog size")
        r = _as_reco(reco, self.k)
        return float(np.unique(r[r >= 0]).shape[0] / n_items)


METRICS: dict[str, type[_RankingMetric] | type[Coverage]] = {
    cls.label.lower(): cls for cls in (HitRate, Recall, Precision, MRR, NDCG, Coverage)
}
METRICS["hitrate"] = HitRate

_SPEC = re.compile(r"^\s*([A-Za-z]+)\s*@\s*(\d+)\s*$")


def parse_metric(spec: str) -> Metric:
    """``"NDCG@10"`` -> ``NDCG(10)``; names are case-insensitive (HR, HitRate, Recall,
    Precision, MRR, NDCG, Coverage)."""
    m = _SPEC.match(spec)
    cls = METRICS.get(m.group(1).lower()) if m else None
    if m is None or cls is None:
        known = ", ".join(sorted({c.label for c in METRICS.values()}))
        raise ConfigError(f"bad metric {spec!r}; expected NAME@K with NAME one of {known}")
    return cls(int(m.group(2)))
