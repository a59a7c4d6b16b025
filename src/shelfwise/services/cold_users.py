"""What a cold user has, read per request: attributes, search queries, picked categories.

:class:`ColdUsers` turns a user id (and their short history) into a
:class:`~shelfwise.services.cold_start.ColdProfile`: one primary-key read of the user row
(attributes and onboarding ``interests``) and one indexed read of their last queries; query
vectors come from a small LRU keyed by the query text (no user in the key), so only a query
never seen by this process is encoded on the request path. Category membership is an inverted
index kept in step with the catalog, and each category's mean vector is memoised until the
category gains or loses items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.retrieval.passages import centred
from shelfwise.retrieval.semantic import SCRIPTS, script_of
from shelfwise.services.cold_groups import GroupPopularity
from shelfwise.services.cold_start import (
    ColdProfile,
    ColdStartConfig,
    Component,
    PopularityMix,
    recency_weights,
)

if TYPE_CHECKING:
    from shelfwise.services.recommender import Recommender


def category_names(path: Sequence[str]) -> list[str]:
    """The names a picked category may use for an item of category ``path``: each level
    (``Kitchen``) and each path prefix (``Home > Kitchen``)."""
    levels = [p for p in path if p]
    prefixes = [" > ".join(levels[: k + 1]) for k in range(1, len(levels))]
    return list(dict.fromkeys(levels + prefixes))


@dataclass
class ColdContext:
    """What one cold user has, as read for one request."""

    attributes: dict[str, Any] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    interests: list[str] = field(default_factory=list)
    group: PopularityMix | None = None
    """Popularity conditioned on the user's attributes (None: no known group)."""


class ColdUsers:
    """Cold profiles for one recommender (see the module doc)."""

    def __init__(self, rec: Recommender, config: ColdStartConfig) -> None:
        self.rec, self.config = rec, config
        self._lock = threading.Lock()
        self._members: dict[str, set[int]] = {}
        self._item_path: dict[int, tuple[str, ...]] = {}
        self._version: dict[str, int] = {}
        self._centroids: dict[str, tuple[int, NDArray[np.float32]]] = {}
        self._global: tuple[int, PopularityMix] | None = None
        self.groups = GroupPopularity(rec.store, rec.items, config)
        self.pending_queries: Callable[[str], list[str]] | None = None
        """The user's logged queries not stored yet (the engine's write-behind log)."""

    # ---- catalog ---------------------------------------------------------------------------
    def note_category(self, idx: int, path: Sequence[str]) -> None:
        """Item ``idx`` is (now) in category ``path`` (empty: none)."""
        new = tuple(path)
        with self._lock:
            old = self._item_path.get(idx, ())
            if old == new:
                return
            self._item_path[idx] = new
            for name in category_names(old):
                self._members.get(name, set()).discard(idx)
                self._version[name] = self._version.get(name, 0) + 1
            for name in category_names(new):
                self._members.setdefault(name, set()).add(idx)
                self._version[name] = self._version.get(name, 0) + 1

    def known_categories(self, names: Sequence[str]) -> list[str]:
        """The ones of ``names`` some catalog item belongs to."""
        with self._lock:
            return [n for n in names if self._members.get(n)]

    def is_member(self, name: str, idx: int) -> bool:
        with self._lock:
            return idx in self._members.get(name, ())

    def members(self, name: str) -> NDArray[np.int64]:
        with self._lock:
            got = self._members.get(name, set())
            return np.fromiter(sorted(got), np.int64, len(got))

    def _centroid(self, name: str, members: NDArray[np.int64]) -> NDArray[np.float32] | None:
        sem = self.rec.semantic
        if sem is None or members.shape[0] == 0:
            return None
        with self._lock:
            version = self._version.get(name, 0)
            hit = self._centroids.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        vecs = sem.vectors_
        m = members[members < vecs.shape[0]]
        v = vecs[m].mean(axis=0) if m.shape[0] else np.zeros(vecs.shape[1], np.float32)
        norm = float(np.linalg.norm(v))
        out = (v / norm if norm > 0 else v).astype(np.float32)
        with self._lock:
            self._centroids[name] = (version, out)
        return out

    # ---- popularity ------------------------------------------------------------------------
    def global_popularity(self) -> PopularityMix:
        """The bundle's cold-start scores as a distribution over the current model items
        (and their order), built once per catalog size."""
        n = self.rec.n_model_items
        cached = self._global
        if cached is not None and cached[0] == n:
            return cached[1]
        cold = self.rec.bundle.manifest.config.cold_start
        raw = self.rec.bundle.generators[cold].score([np.empty(0, np.int64)])[0]
        raw = np.clip(np.nan_to_num(np.asarray(raw, np.float64), neginf=0.0), 0, None)
        raw = np.pad(raw, (0, max(0, n - raw.shape[0])))[:n]
        total = float(raw.sum())
        mix = PopularityMix.of(raw / total if total > 0 else raw)
        self._global = (n, mix)
        return mix

    # ---- queries ---------------------------------------------------------------------------
    def query_vectors(self, queries: Sequence[str]) -> NDArray[np.float32] | None:
        """Centred query vectors (rows in ``queries`` order); None without a semantic model.
        The raw vectors come from the recommender's own cache of query vectors."""
        sem = self.rec.semantic
        if sem is None or not queries:
            return None
        raw = np.vstack([self.rec.query_vector(q) for q in queries])
        if not sem.config.center:
            return raw
        return centred(raw, sem.script_means_[[SCRIPTS.index(script_of(q)) for q in queries]])

    # ---- per request -----------------------------------------------------------------------
    def context(self, user_id: str) -> ColdContext:
        """The user's attributes, last queries and picked categories (two indexed reads)."""
        user = self.rec.store.get_user(user_id)
        attrs = dict(user.attributes) if user is not None else {}
        picked = attrs.get(self.config.interests_key)
        interests = [str(p) for p in picked if isinstance(p, str) and p] \
            if isinstance(picked, list) else ([picked] if isinstance(picked, str) else [])
        queries: list[str] = []
        if self.config.queries:
            queries = self.rec.store.search_queries(user_id, limit=self.config.queries)
            if self.pending_queries is not None:
                queries = (queries + self.pending_queries(user_id))[-self.config.queries:]
        group = self.groups.mix(attrs, self.global_popularity()) if attrs else None
        return ColdContext(attrs, queries, self.known_categories(interests), group)

    def profile(self, ctx: ColdContext, history: NDArray[np.int64]) -> ColdProfile:
        """The cold profile of ``ctx`` and the (short) ``history``."""
        cfg = self.config
        sem = self.rec.semantic
        comps: list[Component] = []
        if sem is not None and len(history):
            h = history[history < sem.vectors_.shape[0]]
            for item, w in zip(h, recency_weights(len(h), cfg.history_decay), strict=True):
                comps.append(Component("history", self.rec.items.external(int(item)),
                                       sem.vectors_[int(item)], float(w)))
        qv = self.query_vectors(ctx.queries)
        if qv is not None:
            for q, v, w in zip(ctx.queries, qv, recency_weights(len(ctx.queries),
                                                                  cfg.history_decay),
                               strict=True):
                comps.append(Component("query", q, v, float(w)))
        dim = sem.vectors_.shape[1] if sem is not None else 0
        for name in ctx.interests:
            members = self.members(name)
            vec = self._centroid(name, members)
            comps.append(Component("interest", name,
                                   vec if vec is not None else np.zeros(dim, np.float32),
                                   1.0, members))
        pop = ctx.group if ctx.group is not None else self.global_popularity()
        return ColdProfile(comps, pop)

    def has_signal(self, ctx: ColdContext) -> bool:
        """Whether the cold profile knows more than the trained feed would."""
        return bool(ctx.queries and self.rec.semantic is not None) or bool(ctx.interests) \
            or ctx.group is not None
