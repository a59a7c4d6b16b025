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
class _ListMetric:
    """A cutoff ``k`` and a name, for metrics of the lists rather than of their hits."""

    k: int
    label: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.k, int | np.integer) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(f"{self.label}: k must be a positive integer, got {self.k!r}")

    @property
    def name(self) -> str:
        return f"{self.label}@{self.k}"

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Coverage(_ListMetric):
    """Catalog coverage: distinct items across all top-``k`` lists / ``n_items``.

    A property of the whole set of lists, not of one user, so it has ``calc`` only.
    """

    label: ClassVar[str] = "Coverage"

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None) -> float:
        """``targets`` is ignored; ``n_items`` (catalog size) is required."""
        if n_items is None or n_items < 1:
            raise ConfigError("Coverage needs n_items, the catalog size")
        r = _as_reco(reco, self.k)
        return float(np.unique(r[r >= 0]).shape[0] / n_items)


@dataclass(frozen=True)
class ItemContext:
    """What beyond-accuracy metrics know besides the lists: item vectors ``(n_items, d)``,
    one category label per item (``-1`` = unknown), training interactions per item, and the
    fed history of each evaluated user (aligned with the rows of ``reco``). A metric whose
    piece is missing gives NaN (a dataset without categories has no category diversity)."""

    vectors: NDArray[np.floating[Any]] | None = None
    categories: NDArray[np.int64] | None = None
    popularity: NDArray[np.floating[Any] | np.integer[Any]] | None = None
    histories: Sequence[NDArray[np.integer[Any]]] | None = None


@dataclass(frozen=True)
class ContextMetric(_ListMetric):
    """A beyond-accuracy metric: needs an :class:`ItemContext`, ignores the targets;
    ``calc`` averages ``calc_per_user`` over users where it is defined."""

    needs: ClassVar[str] = ""

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None,
             context: ItemContext | None = None) -> float:
        if context is None or getattr(context, self.needs) is None:
            return float("nan")
        return _mean(self.calc_per_user(reco, context))

    def calc_per_user(self, reco: ArrayLike, context: ItemContext) -> NDArray[np.float64]:
        raise NotImplementedError


def _pair_mean(same: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Mean of ``same[u, i, j]`` over pairs ``i != j`` of valid positions (NaN under 2)."""
    pair = valid[:, :, None] & valid[:, None, :]
    pair &= ~np.eye(valid.shape[1], dtype=bool)[None]
    n = pair.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: NDArray[np.float64] = np.where(n > 0, (same * pair).sum(axis=(1, 2)) / n, np.nan)
    return out


@dataclass(frozen=True)
class ILD(ContextMetric):
    """Intra-list diversity: 1 − mean pairwise cosine of the list's item vectors."""

    label: ClassVar[str] = "ILD"
    needs: ClassVar[str] = "vectors"

    def calc_per_user(self, reco: ArrayLike, context: ItemContext) -> NDArray[np.float64]:
        assert context.vectors is not None
        r = _as_reco(reco, self.k)
        vec = np.asarray(context.vectors, np.float32)
        norm = np.linalg.norm(vec, axis=1, keepdims=True)
        vec = np.divide(vec, norm, out=np.zeros_like(vec), where=norm > 0)
        valid = (r >= 0) & (r < vec.shape[0])
        out = np.empty(r.shape[0])
        for s in range(0, r.shape[0], 4096):  # (users, k, d) in slices
            v = vec[np.where(valid[s:s + 4096], r[s:s + 4096], 0)]
            sim = np.einsum("uid,ujd->uij", v, v).astype(np.float64)
            out[s:s + 4096] = 1.0 - _pair_mean(sim, valid[s:s + 4096])
        return out


def _labels(r: NDArray[np.int64], categories: NDArray[np.int64]) -> NDArray[np.int64]:
    cats = np.asarray(categories, np.int64)
    ok = (r >= 0) & (r < cats.shape[0])
    return np.where(ok, cats[np.where(ok, r, 0)], -1)


@dataclass(frozen=True)
class CategoryILD(ContextMetric):
    """Intra-list diversity by category: 1 − share of same-category pairs (items of unknown
    category are left out)."""

    label: ClassVar[str] = "CatILD"
    needs: ClassVar[str] = "categories"

    def calc_per_user(self, reco: ArrayLike, context: ItemContext) -> NDArray[np.float64]:
        assert context.categories is not None
        lab = _labels(_as_reco(reco, self.k), context.categories)
        same = (lab[:, :, None] == lab[:, None, :]).astype(np.float64)
        return 1.0 - _pair_mean(same, lab >= 0)


@dataclass(frozen=True)
class CategoryCoverage(ContextMetric):
    """Distinct categories across all top-``k`` lists / categories in the catalog."""

    label: ClassVar[str] = "CatCoverage"
    needs: ClassVar[str] = "categories"

    def calc(self, reco: ArrayLike, targets: Targets, *, n_items: int | None = None,
             context: ItemContext | None = None) -> float:
        if context is None or context.categories is None:
            return float("nan")
        known = np.unique(context.categories[context.categories >= 0])
        lab = _labels(_as_reco(reco, self.k), context.categories)
        shown = np.unique(lab[lab >= 0])
        return float(shown.shape[0] / known.shape[0]) if known.shape[0] else float("nan")


@dataclass(frozen=True)
class Novelty(ContextMetric):
    """Mean self-information ``−log2(pop_i / Σ pop)`` of the listed items (an item never
    interacted with counts as seen once)."""

    label: ClassVar[str] = "Novelty"
    needs: ClassVar[str] = "popularity"

    def calc_per_user(self, reco: ArrayLike, context: ItemContext) -> NDArray[np.float64]:
        assert context.popularity is not None
        pop = np.asarray(context.popularity, np.float64)
        info = -np.log2(np.maximum(pop, 1.0) / max(float(pop.sum()), 1.0))
        r = _as_reco(reco, self.k)
        valid = (r >= 0) & (r < pop.shape[0])
        vals = np.where(valid, info[np.where(valid, r, 0)], 0.0)
        n = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: NDArray[np.float64] = np.where(n > 0, vals.sum(axis=1) / n, np.nan)
        return out


@dataclass(frozen=True)
class Miscalibration(ContextMetric):
    """Steck's (RecSys 2018) miscalibration: KL(p ‖ (1−a)·q + a·p) between the category mix
    ``p`` of the user's history and ``q`` of the list, a = 0.01; NaN without known categories
    in the history."""

    label: ClassVar[str] = "Miscalibration"
    needs: ClassVar[str] = "categories"
    smoothing: ClassVar[float] = 0.01

    def calc_per_user(self, reco: ArrayLike, context: ItemContext) -> NDArray[np.float64]:
        assert context.categories is not None
        r = _as_reco(reco, self.k)
        if context.histories is None or len(context.histories) != r.shape[0]:
            return np.full(r.shape[0], np.nan)
        cats = np.asarray(context.categories, np.int64)
        size = int(cats.max(initial=-1)) + 1
        lists = _labels(r, cats)
        a = self.smoothing
        out = np.full(r.shape[0], np.nan)
        for u, h in enumerate(context.histories):
            hl = _labels(np.asarray(h, np.int64).reshape(1, -1), cats)[0]
            hl, ql = hl[hl >= 0], lists[u][lists[u] >= 0]
            if hl.shape[0] == 0:
                continue
            p = np.bincount(hl, minlength=size) / hl.shape[0]
            q = np.bincount(ql, minlength=size) / max(ql.shape[0], 1)
            on = p > 0
            out[u] = float((p[on] * np.log(p[on] / ((1 - a) * q[on] + a * p[on]))).sum())
        return out


METRICS: dict[str, type[_RankingMetric] | type[_ListMetric]] = {
    cls.label.lower(): cls for cls in (HitRate, Recall, Precision, MRR, NDCG, Coverage, ILD,
                                       CategoryILD, CategoryCoverage, Novelty, Miscalibration)
}
METRICS["hitrate"] = HitRate

_SPEC = re.compile(r"^\s*([A-Za-z]+)\s*@\s*(\d+)\s*$")


def parse_metric(spec: str) -> Metric:
    """``"NDCG@10"`` -> ``NDCG(10)``; names are case-insensitive (HR, HitRate, Recall,
    Precision, MRR, NDCG, Coverage; beyond accuracy: ILD, CatILD, CatCoverage, Novelty,
    Miscalibration)."""
    m = _SPEC.match(spec)
    cls = METRICS.get(m.group(1).lower()) if m else None
    if m is None or cls is None:
        known = ", ".join(sorted({c.label for c in METRICS.values()}))
        raise ConfigError(f"bad metric {spec!r}; expected NAME@K with NAME one of {known}")
    return cls(int(m.group(2)))
