"""Candidate features for the feed ranker, computed by one code path offline and online.

The pipeline trains the ranker on features of held-out users' candidates and serves it on the
same features of live users' candidates, both built by :meth:`FeatureSpec.compute` from the
generators' score rows, their top-N lists and per-item statistics fitted on the training log.
A feature the data cannot support (no categories, no real timestamps, no semantic generator) is
simply not in :attr:`FeatureSpec.names`, so a model never sees a column that is constant by
construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.ranking.lexical import LEXICAL_FEATURES, TitleTerms
from shelfwise.retrieval.base import sorted_unique

ScalarT = TypeVar("ScalarT", bound=np.generic)

MISSING_RANK = 1000.0
"""Rank feature of an item outside a generator's top-N (top-N positions are 1..N)."""
MISSING_STEPS = 1000.0
"""Category recency of a category the user never touched."""
CATEGORY_HISTORY = 50
"""Most recent history items read by the category features."""
COLD_BELOW = 5
"""Items with fewer training interactions than this are cold (the benchmarks' cold slice);
items posted after training (beyond the statistics) are cold too."""
TEXT_HISTORY = 10
"""Most recent history items read by ``sem_max_history`` and ``lex_max_history``."""
COLD_SUFFIX = ":cold"
"""Key suffix, in the top-N lists, of a generator's top-N among cold items only."""
LEX_COLD = "lex" + COLD_SUFFIX
"""Key, in the top-N lists, of the cold items sharing the most words with the history."""


@dataclass(frozen=True)
class Candidates:
    """Merged candidates of a batch of histories: row ``r`` owns
    ``items[offsets[r]:offsets[r + 1]]`` (ascending item index; order carries no meaning)."""

    items: NDArray[np.int64]
    offsets: NDArray[np.int64]

    @property
    def sizes(self) -> NDArray[np.int64]:
        return np.diff(self.offsets)

    @property
    def rows(self) -> NDArray[np.int64]:
        """Batch row of each candidate."""
        return np.repeat(np.arange(self.sizes.shape[0], dtype=np.int64), self.sizes)

    def __len__(self) -> int:
        return int(self.items.shape[0])


def _keys(tops: NDArray[np.int64], n_items: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(row * n_items + item) of the valid entries of a padded top-N array, with positions."""
    rows = np.repeat(np.arange(tops.shape[0], dtype=np.int64), tops.shape[1]).reshape(tops.shape)
    pos = np.broadcast_to(np.arange(tops.shape[1], dtype=np.int64), tops.shape)
    ok = tops >= 0
    return rows[ok] * n_items + tops[ok], pos[ok]


def merge_candidates(tops: Sequence[NDArray[np.int64]], n_rows: int, n_items: int) -> Candidates:
    """Union of each row's top-N lists (``-1`` = padding), duplicates removed."""
    keys = [_keys(t, n_items)[0] for t in tops if t.size]
    uniq = sorted_unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    rows = uniq // n_items
    offsets = np.searchsorted(rows, np.arange(n_rows + 1, dtype=np.int64)).astype(np.int64)
    return Candidates(uniq % n_items, offsets)


def _rank_lookup(top: NDArray[np.int64], cands: Candidates, n_items: int) -> NDArray[np.float32]:
    """1-based position of each candidate in ``top`` (its row's top-N), else MISSING_RANK."""
    keys, pos = _keys(top, n_items)
    order = np.argsort(keys, kind="stable")
    keys, pos = keys[order], pos[order]
    want = cands.rows * n_items + cands.items
    at = np.searchsorted(keys, want)
    at_c = np.minimum(at, max(keys.shape[0] - 1, 0))
    hit = (at < keys.shape[0]) & (keys[at_c] == want) if keys.size else np.zeros(
        want.shape, dtype=bool)
    out = np.full(want.shape[0], MISSING_RANK, dtype=np.float32)
    out[hit] = pos[at_c[hit]] + 1.0
    return out


@dataclass
class ItemStats:
    """Per-item statistics of a training log that candidate features read.

    ``popularity`` is log1p of the interaction count; ``recent_popularity`` the same over the
    last ``recent_days`` and ``age_days`` the days from an item's first interaction to the log's
    end, both only when timestamps are real; ``categories`` (-1 = none) only when given;
    ``position`` the mean relative place of an item's interactions in their users' sequences
    (0 = first, 1 = last; NaN without interactions): near 1 for new and trending items, which
    sequence-only data (no dates) otherwise cannot tell. Items beyond the arrays (posted after
    training) read as never interacted with (:meth:`take`).
    """

    popularity: NDArray[np.float32]
    recent_popularity: NDArray[np.float32] | None = None
    age_days: NDArray[np.float32] | None = None
    categories: NDArray[np.int64] | None = None
    position: NDArray[np.float32] | None = None

    @classmethod
    def fit(cls, data: Interactions, *, categories: NDArray[np.int64] | None = None,
            recent_days: float = 30.0) -> ItemStats:
        n = data.n_items
        pop = np.log1p(np.bincount(data.item_idx, minlength=n)).astype(np.float32)
        recent = age = None
        if data.has_time and len(data):
            end = float(data.timestamp.max())
            last = data.timestamp >= end - recent_days * 86_400.0
            recent = np.log1p(np.bincount(data.item_idx[last], minlength=n)).astype(np.float32)
            first = np.full(n, np.inf)
            np.minimum.at(first, data.item_idx, data.timestamp)
            age = np.where(np.isfinite(first), (end - first) / 86_400.0, np.nan).astype(
                np.float32)
        if categories is not None and categories.shape[0] != n:
            raise ConfigError(f"item_categories has {categories.shape[0]} entries but the data "
                              f"has {n} items; give one category (or -1) per item index")
        return cls(pop, recent, age, categories, _mean_position(data) if len(data) else None)

    def counts(self, n_items: int) -> NDArray[np.int64]:
        """Training interactions per item for ``n_items`` items (0 beyond the statistics)."""
        out = np.zeros(n_items, dtype=np.int64)
        m = min(n_items, self.popularity.shape[0])
        out[:m] = np.rint(np.expm1(self.popularity[:m].astype(np.float64)))
        return out

    @staticmethod
    def take(values: NDArray[ScalarT], items: NDArray[np.int64], fill: float) -> NDArray[ScalarT]:
        """``values[items]``, with ``fill`` for items beyond ``values`` (posted after training)."""
        out = np.full(items.shape[0], fill, dtype=values.dtype)
        ok = items < values.shape[0]
        out[ok] = values[items[ok]]
        return out

    def arrays(self) -> dict[str, NDArray[np.float32] | NDArray[np.int64]]:
        out: dict[str, NDArray[np.float32] | NDArray[np.int64]] = {"popularity": self.popularity}
        for key in ("recent_popularity", "age_days", "categories", "position"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> ItemStats:
        def get(key: str, dtype: type[np.generic]) -> NDArray[np.generic] | None:
            return arrays[key].astype(dtype) if key in arrays else None

        pop = get("popularity", np.float32)
        if pop is None:
            raise ConfigError("item statistics lack 'popularity': the saved pipeline is damaged")
        return cls(pop.astype(np.float32), get("recent_popularity", np.float32),  # type: ignore[arg-type]
                   get("age_days", np.float32), get("categories", np.int64),  # type: ignore[arg-type]
                   get("position", np.float32))  # type: ignore[arg-type]


def _mean_position(data: Interactions) -> NDArray[np.float32]:
    """Mean relative position (0 = a user's first item, 1 = the last) of each item's
    interactions; rows are sorted by user, then time."""
    bounds = np.searchsorted(data.user_idx, np.arange(data.n_users + 1))
    lens = np.diff(bounds)
    pos = np.arange(len(data)) - np.repeat(bounds[:-1], lens)
    rel = pos / np.maximum(np.repeat(lens, lens) - 1, 1)
    n = np.bincount(data.item_idx, minlength=data.n_items)
    total = np.bincount(data.item_idx, weights=rel, minlength=data.n_items)
    out: NDArray[np.float32] = np.divide(total, n, out=np.full(data.n_items, np.nan),
                                         where=n > 0).astype(np.float32)
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """Which features exist for a pipeline: per generator ``<alias>_score``, ``_ratio`` (score
    over the row's best score), for candidate sources ``_rank`` and, for sources that also add
    their best cold items, ``_cold_rank`` (place among cold items only); then ``n_sources``,
    ``history_len``, ``pop``, the history's cold share and mean popularity (how much a user
    goes for rarely bought items) and the optional ones the data supports (item texts: the
    words shared with the last and the closest recent history item, ``lexical``, and with
    ``lexical_cold`` the place among the cold items sharing the most words, ``lex_cold_rank``)."""

    aliases: tuple[str, ...]
    ranked: tuple[str, ...]
    stats: ItemStats
    semantic_vectors: NDArray[np.float32] | None = None
    cold_ranked: tuple[str, ...] = ()
    lexical: TitleTerms | None = None
    lexical_cold: bool = False

    @property
    def names(self) -> list[str]:
        out: list[str] = []
        for a in self.aliases:
            out += [f"{a}_score", f"{a}_ratio"] + ([f"{a}_rank"] if a in self.ranked else [])
            out += [f"{a}_cold_rank"] if a in self.cold_ranked else []
        out += ["n_sources", "history_len", "pop"]
        if self.stats.recent_popularity is not None:
            out.append("pop_recent")
        if self.stats.age_days is not None:
            out.append("item_age_days")
        if self.stats.position is not None:
            out.append("item_position")
        out += ["history_cold_share", "history_pop"]
        if self.stats.categories is not None:
            out += ["cat_affinity", "cat_recency"]
        if self.semantic_vectors is not None:
            out += ["sem_last_item", "sem_max_history"]
        if self.lexical is not None:
            out += list(LEXICAL_FEATURES)
            out += ["lex_cold_rank"] if self.lexical_cold else []
        return out

    def compute(self, histories: Sequence[History], cands: Candidates,
                scores: Mapping[str, NDArray[np.float32]],
                tops: Mapping[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        """Feature matrix (one row per candidate, columns in :attr:`names` order). Items
        beyond the statistics (posted after training) read as never interacted with."""
        rows, items = cands.rows, cands.items
        n_items = next(iter(scores.values())).shape[1] if scores else int(
            self.stats.popularity.shape[0])
        stats = self.stats
        cols: list[NDArray[np.float32]] = []
        n_sources = np.zeros(len(cands), dtype=np.float32)
        for a in self.aliases:
            s = scores[a]
            value = s[rows, items].astype(np.float32)
            value[~np.isfinite(value)] = np.nan
            if a in tops and tops[a].shape[1]:
                first = tops[a][:, 0]
                best = np.where(first >= 0, s[np.arange(s.shape[0]), np.maximum(first, 0)],
                                np.nan)
            else:
                best = np.nanmax(np.where(np.isfinite(s), s, np.nan), axis=1)
            best_c = best[rows].astype(np.float32)
            ok = np.isfinite(best_c) & (np.abs(best_c) > 0)
            ratio = np.full(value.shape, np.nan, dtype=np.float32)
            np.divide(value, best_c, out=ratio, where=ok)
            cols += [value, ratio]
            if a in self.ranked:
                rank = _rank_lookup(tops[a], cands, n_items)
                n_sources += rank < MISSING_RANK
                cols.append(rank)
            if a in self.cold_ranked:
                cols.append(_rank_lookup(tops[a + COLD_SUFFIX], cands, n_items))
        lens = np.asarray([len(h) for h in histories], dtype=np.float32)
        cols += [n_sources, lens[rows], stats.take(stats.popularity, items, 0.0)]
        if stats.recent_popularity is not None:
            cols.append(stats.take(stats.recent_popularity, items, 0.0))
        if stats.age_days is not None:
            cols.append(stats.take(stats.age_days, items, np.nan))
        if stats.position is not None:
            cols.append(stats.take(stats.position, items, np.nan))
        cols += [c[rows] for c in _history_popularity(histories, stats)]
        if stats.categories is not None:
            cols += _category_features(histories, cands, stats.categories)
        if self.semantic_vectors is not None:
            cols.append(_last_item_similarity(histories, cands, self.semantic_vectors))
            cols.append(_max_history_similarity(histories, cands, self.semantic_vectors))
        if self.lexical is not None:
            cols += self.lexical.similarities(histories, cands.items, cands.offsets,
                                              TEXT_HISTORY)
            if self.lexical_cold:
                cols.append(_rank_lookup(tops[LEX_COLD], cands, n_items))
        return np.column_stack(cols).astype(np.float32) if cols else np.zeros(
            (len(cands), 0), np.float32)


def _history_popularity(histories: Sequence[History], stats: ItemStats
                        ) -> list[NDArray[np.float32]]:
    """Per history: the share of its items that are cold, and their mean ``pop`` (NaN for an
    empty history)."""
    share = np.full(len(histories), np.nan, dtype=np.float32)
    mean = np.full(len(histories), np.nan, dtype=np.float32)
    cold_pop = np.log1p(COLD_BELOW - 1)
    for r, hist in enumerate(histories):
        h = np.asarray(hist, dtype=np.int64)
        if h.shape[0]:
            p = stats.take(stats.popularity, h, 0.0)
            share[r] = float((p <= cold_pop + 1e-6).mean())
            mean[r] = float(p.mean())
    return [share, mean]


def _category_features(histories: Sequence[History], cands: Candidates,
                       categories: NDArray[np.int64]) -> list[NDArray[np.float32]]:
    """Share of the recent history in the candidate's category, and steps since the user's
    last item of that category (0 = the last item); by position, as histories carry no time."""
    n_items = categories.shape[0]
    n_cat = int(categories.max(initial=-1)) + 1
    aff = np.full(len(cands), np.nan, dtype=np.float32)
    rec = np.full(len(cands), MISSING_STEPS, dtype=np.float32)
    for r, hist in enumerate(histories):
        lo, hi = int(cands.offsets[r]), int(cands.offsets[r + 1])
        if hi == lo or n_cat == 0:
            continue
        h = np.asarray(hist, dtype=np.int64)[-CATEGORY_HISTORY:]
        h = h[(h >= 0) & (h < n_items)]
        hc = categories[h]
        cc = ItemStats.take(categories, cands.items[lo:hi], -1)
        known = cc >= 0
        if h.shape[0] == 0:
            continue
        seen = hc >= 0
        counts = np.bincount(hc[seen], minlength=n_cat)
        last = np.full(n_cat, -1, dtype=np.int64)
        np.maximum.at(last, hc[seen], np.flatnonzero(seen))
        a = np.full(hi - lo, np.nan, dtype=np.float32)
        a[known] = counts[cc[known]] / h.shape[0]
        aff[lo:hi] = a
        lp = np.where(known, last[np.maximum(cc, 0)], -1)
        rec[lo:hi] = np.where(lp >= 0, h.shape[0] - 1 - lp, MISSING_STEPS)
    return [aff, rec]


def _last_item_similarity(histories: Sequence[History], cands: Candidates,
                          vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Cosine between each candidate's text vector and the user's most recent item's."""
    n = vectors.shape[0]
    last = np.full(len(histories), -1, dtype=np.int64)
    for r, hist in enumerate(histories):
        h = np.asarray(hist, dtype=np.int64)
        h = h[(h >= 0) & (h < n)]
        if h.shape[0]:
            last[r] = h[-1]
    lr = last[cands.rows]
    ok = (lr >= 0) & (cands.items < n)
    out = np.full(len(cands), np.nan, dtype=np.float32)
    out[ok] = np.einsum("ij,ij->i", vectors[cands.items[ok]], vectors[lr[ok]])
    return out


def _max_history_similarity(histories: Sequence[History], cands: Candidates,
                            vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Largest cosine between each candidate's text vector and any of the user's last
    :data:`TEXT_HISTORY` items': text nearest neighbours, which place an item nobody has
    bought yet next to what the user took (a profile mean blurs several interests)."""
    n = vectors.shape[0]
    out = np.full(len(cands), np.nan, dtype=np.float32)
    for r, hist in enumerate(histories):
        lo, hi = int(cands.offsets[r]), int(cands.offsets[r + 1])
        h = np.asarray(hist, dtype=np.int64)
        h = h[(h >= 0) & (h < n)][-TEXT_HISTORY:]
        c = cands.items[lo:hi]
        ok = c < n
        if hi == lo or h.shape[0] == 0 or not ok.any():
            continue
        part = out[lo:hi]
        part[ok] = (vectors[c[ok]] @ vectors[h].T).max(axis=1)
    return out
