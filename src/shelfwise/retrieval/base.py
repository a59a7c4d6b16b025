"""The candidate-generator protocol shared by every recommender, and top-k helpers."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError, NotFittedError

Scores = NDArray[np.float32]


class GeneratorConfig(BaseModel):
    """Hyperparameters of a generator; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class CandidateGenerator(Protocol):
    """Scores every catalog item for a user given the user's history.

    Scoring from the history (not a user id) lets the server answer from each user's live state:
    a click counts in the very next request, without retraining. ``score`` returns one row per
    history over all ``n_items_`` items; ``-inf`` marks "no opinion".
    """

    name: ClassVar[str]

    def fit(self, data: Interactions) -> Self: ...

    def score(self, histories: Sequence[History]) -> Scores: ...

    @property
    def n_items_(self) -> int: ...

    def to_config(self) -> dict[str, Any]: ...

    def save(self, path: Path) -> None: ...


class BaseGenerator(ABC):
    """Shared plumbing: config round trip, fitted checks, state save/load as ``.npz``."""

    name: ClassVar[str]
    Config: ClassVar[type[GeneratorConfig]]
    mapped: ClassVar[tuple[str, ...]] = ()
    """State arrays saved as ``<key>.npy`` and memory-mapped read-only on load (large ones
    a request reads a few rows of); the rest go to ``state.npz``."""

    def __init__(self, **params: Any) -> None:
        try:
            self.config = self.Config(**params)
        except Exception as exc:
            raise ConfigError(f"bad config for generator {self.name!r}: {exc}") from exc
        self._n_items: int | None = None

    @property
    def n_items_(self) -> int:
        if self._n_items is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        return self._n_items

    def fit(self, data: Interactions) -> Self:
        if data.n_items == 0:
            raise ConfigError(f"cannot fit {self.name!r}: the data has no items")
        self._fit(data)
        self._n_items = data.n_items
        return self

    def score(self, histories: Sequence[History]) -> Scores:
        n = self.n_items_
        out = self._score(histories)
        assert out.shape == (len(histories), n), out.shape
        return out

    def sparse_row(self, history: History, focus: NDArray[np.int64] | None = None
                   ) -> SparseRow | None:
        """One history's row as a :class:`SparseRow` (exact also on ``focus``), where the
        generator's row is mostly one value; None where it is not (call :meth:`score`)."""
        return None

    @abstractmethod
    def _fit(self, data: Interactions) -> None: ...

    @abstractmethod
    def _score(self, histories: Sequence[History]) -> Scores: ...

    @abstractmethod
    def _state(self) -> dict[str, NDArray[Any]]:
        """Learned arrays to persist."""

    @abstractmethod
    def _set_state(self, state: dict[str, NDArray[Any]]) -> None: ...

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump()}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(
            json.dumps({**self.to_config(), "n_items": self.n_items_})
        )
        state = self._state()
        for key in self.mapped:
            if key in state:
                np.save(path / f"{key}.npy", np.ascontiguousarray(state.pop(key)))
        np.savez(path / "state.npz", allow_pickle=False, **state)

    @classmethod
    def load(cls, path: Path) -> Self:
        """A saved generator; :attr:`mapped` arrays memory-mapped where saved as ``.npy``
        (older bundles hold them in the npz)."""
        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("name", None)
        n_items = int(cfg.pop("n_items"))
        obj = cls(**cfg)
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
        for key in cls.mapped:
            if (path / f"{key}.npy").is_file():
                state[key] = np.load(path / f"{key}.npy", mmap_mode="r").view(np.ndarray)
        obj._set_state(state)
        obj._n_items = n_items
        return obj


def unique_first(a: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``np.unique(a, return_index=True)`` by a stable sort. NumPy 2.4's hash-based unique
    took up to 8 ms on 50 ints now and then (page faults in its table), on every request."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    keep = np.ones(s.shape[0], dtype=bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep], order[keep]


def sorted_unique(a: NDArray[np.int64]) -> NDArray[np.int64]:
    """``np.unique(a)`` for 1-D integers by sorting (see :func:`unique_first`)."""
    s = np.sort(a)
    keep = np.ones(s.shape[0], dtype=bool)
    keep[1:] = s[1:] != s[:-1]
    out: NDArray[np.int64] = s[keep]
    return out


class SparseRow:
    """One history's score row of ``n`` items that is ``fill`` everywhere but at ``idx``
    (sorted, unique), where it is ``vals``: what a generator that scores a short list exactly
    and gives every other item one value answers (co-occurrence's neighbours, the semantic
    generator's top list and sample on a large catalog). A blend then touches the few
    scored entries instead of the catalog's ~100k (:meth:`~shelfwise.retrieval.blend.Blend.
    score_row`)."""

    __slots__ = ("fill", "idx", "n", "vals")

    def __init__(self, n: int, fill: float | np.float32, idx: NDArray[np.int64],
                 vals: NDArray[np.float32]) -> None:
        self.n = n
        self.fill = np.float32(fill)
        self.idx = idx
        self.vals = vals

    @classmethod
    def of(cls, n: int, fill: float, idx: NDArray[np.integer[Any]],
           vals: NDArray[np.floating[Any]]) -> SparseRow:
        """From entries in write order: a repeated index keeps its last value, as successive
        assignments into a dense row would."""
        ids: NDArray[np.int64] = np.asarray(idx, np.int64)
        vals = np.asarray(vals, np.float32)
        last = ids.shape[0] - 1
        uniq, first = unique_first(ids[::-1])
        return cls(n, fill, uniq, vals[last - first])

    def dense(self) -> Scores:
        out = np.full(self.n, self.fill, np.float32)
        out[self.idx] = self.vals
        return out

    def at(self, items: NDArray[np.int64]) -> Scores:
        """The row's values at ``items`` (each in ``0..n-1``)."""
        pos = np.searchsorted(self.idx, items)
        hit = pos < self.idx.shape[0]
        hit[hit] = self.idx[pos[hit]] == items[hit]
        out = np.full(items.shape[0], self.fill, np.float32)
        out[hit] = self.vals[pos[hit]]
        return out

    def finite_range(self) -> tuple[float, float, bool]:
        """Smallest and largest finite value of the whole row, and whether all are finite."""
        finite = np.isfinite(self.vals)
        vals = self.vals[finite]
        every = bool(finite.all())
        if not self.covered:
            vals = np.append(vals, self.fill) if np.isfinite(self.fill) else vals
            every = every and bool(np.isfinite(self.fill))
        if not vals.size:
            return float("inf"), float("-inf"), every
        return float(vals.min()), float(vals.max()), every

    @property
    def covered(self) -> bool:
        """Whether every item is in ``idx`` (``fill`` then appears nowhere)."""
        return bool(self.idx.shape[0] >= self.n)


#: Rows longer than this take :func:`best_unordered`'s threshold path.
LONG_ROW = 16_384


def best_unordered(row: Scores, k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` largest entries of the 1-D ``row``, unordered (ties broken
    arbitrarily, as by ``argpartition``). On a long row a threshold read off an evenly
    spaced sample of 2,048 entries keeps ~4k candidates in one comparison pass, and only
    those are partitioned: ~0.1 ms instead of ~1.1 at 100k items. Falls back to a full
    ``argpartition`` when the threshold keeps fewer than ``k``."""
    n = row.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    if n <= LONG_ROW or 64 * k > n:
        return np.argpartition(-row, k - 1)[:k].astype(np.int64)
    step = n // 2048
    sample = np.sort(row[::step])
    cut = sample[max(0, len(sample) - 1 - int(np.ceil(4 * k * len(sample) / n)))]
    keep = np.flatnonzero(row >= cut)
    if len(keep) < k:
        return np.argpartition(-row, k - 1)[:k].astype(np.int64)
    if len(keep) > k:
        keep = keep[np.argpartition(-row[keep], k - 1)[:k]]
    return keep.astype(np.int64)


def top_k(
    scores: Scores,
    k: int,
    *,
    exclude: Sequence[History] | None = None,
) -> tuple[NDArray[np.int64], Scores]:
    """Best ``k`` items per row, best first; ``exclude`` lists item indices to drop per row.

    Items scored ``-inf`` (or excluded) are never returned: rows may hold fewer than ``k``
    valid entries, padded with index -1.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    n = scores.shape[1]
    k_eff = min(k, n)
    if k_eff == 0:
        return np.full((scores.shape[0], k), -1, np.int64), np.full(
            (scores.shape[0], k), -np.inf, np.float32
        )
    if scores.shape[0] <= 4 and n > LONG_ROW:  # serving: one row of a large catalog
        part = np.vstack([best_unordered(r, k_eff) for r in scores])
    else:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    val = np.take_along_axis(part_scores, order, axis=1)
    idx[~np.isfinite(val)] = -1
    if k_eff < k:
        pad = k - k_eff
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, val


def recommend(
    generator: CandidateGenerator,
    histories: Sequence[History],
    k: int,
    *,
    exclude_seen: bool = True,
    batch_size: int = 1024,
) -> tuple[NDArray[np.int64], Scores]:
    """Top-``k`` item indices and scores for each history, scored in batches."""
    idx_parts, val_parts = [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        scores = generator.score(batch)
        i, v = top_k(scores, k, exclude=batch if exclude_seen else None)
        idx_parts.append(i)
        val_parts.append(v)
    if not idx_parts:
        return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
    return np.vstack(idx_parts), np.vstack(val_parts)
