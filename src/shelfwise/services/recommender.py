"""The online recommender: a loaded bundle plus live per-user state kept in step with events."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from shelfwise.bundle.bundle import Bundle, feed_blend
from shelfwise.data.ids import IdMap
from shelfwise.data.loading import item_text
from shelfwise.data.schemas import INTERACTION_TYPES, Event, Item
from shelfwise.exceptions import ConfigError, NotFoundError
from shelfwise.pipeline import Pipeline
from shelfwise.retrieval.base import SparseRow, sorted_unique, top_k
from shelfwise.retrieval.blend import PartLabels, focused
from shelfwise.retrieval.pgvector import PgVectorIndex, table_name
from shelfwise.retrieval.popular import Popularity
from shelfwise.retrieval.semantic import Semantic
from shelfwise.services.catalog import Catalog
from shelfwise.services.cold_start import (
    ColdStartConfig,
    Placed,
    place_new,
    score_cold,
    single_threaded_ann,
    text_neighbours,
)
from shelfwise.services.cold_users import ColdContext, ColdUsers
from shelfwise.storage.base import Store


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    source: str
    """The generator that contributed most to this item's score (or the fallback used)."""
    propensity: float | None = None
    """Set on exploration slots: the probability the bandit picked this slot's source."""
    stage: str = "blend"
    """What produced it: blend, pipeline, cold_start, category, new_item or explore."""
    parts: dict[str, float] = field(default_factory=dict)
    """Pipeline items: the ranker's contributions grouped by part (generator or feature)."""


@dataclass
class RecommendationList:
    items: list[Recommendation]
    cold_start: bool = False
    history_length: int = 0
    sources: list[str] = field(default_factory=list)


NEW_ARRIVALS = "new_arrival"
"""The cold-start source when no events exist yet."""

SCORE_MEMO = 32
"""Generator score rows the recommender keeps (one row per generator and history)."""
CATALOG_CHANGE_MARGIN = 1000
"""How far back :meth:`Recommender.sync_catalog` looks below the last write number it saw."""
QUERY_VECTORS = 4096
"""Query vectors the recommender keeps (1.5 KB each with the 384-dimension encoder)."""
BLEND_ROW = "blend"
"""Memo key (in place of a focus) of the row a blend used (:meth:`Recommender.blend_row`)."""


@dataclass
class CacheStats:
    """Lookups a cache answered (``hits``) and ones it had to compute (``misses``), for
    ``/metrics``; counted under the cache's lock."""

    hits: int = 0
    misses: int = 0


class Recommender:
    """Answers feed and similar-item requests from a bundle and each user's live history.

    A user's history is read from the store on first use and cached (LRU); every stored event
    for that user drops the cache entry, so the next request sees it, without retraining.
    Users with (almost) no history are served a cold profile, and items no interaction reached
    before training are placed by their text (:mod:`shelfwise.services.cold_start`).
    """

    def __init__(
        self,
        bundle: Bundle,
        store: Store,
        *,
        history_limit: int = 200,
        cache_size: int = 100_000,
        cold_start: ColdStartConfig | None = None,
        vector_index: str = "faiss",
    ) -> None:
        self.bundle = bundle
        self.store = store
        self.history_limit = history_limit
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, NDArray[np.int64]] = OrderedDict()
        self._scored: OrderedDict[tuple[str, int, bytes, bytes | str | None],
                                  NDArray[np.float32] | SparseRow] = OrderedDict()
        # the last queries' raw vectors (popular queries repeat; embedding one is most of a
        # search), keyed by a hash: no query text is kept; dropped with forgotten users
        self._query_vectors: OrderedDict[tuple[str, bytes], NDArray[np.float32]] = OrderedDict()
        self.history_stats, self.score_stats = CacheStats(), CacheStats()
        self._generation = 0  # bumped when users are forgotten: a read begun before is not cached
        self.items: IdMap = bundle.items
        self.blend = feed_blend(bundle)
        self._blocked = np.zeros(len(bundle.items), dtype=bool)
        self._arrivals: tuple[int, NDArray[np.float32]] | None = None
        self._category: dict[str, tuple[str, ...]] = {}
        self.cold_config = cold_start or ColdStartConfig()
        self.n_trained = len(bundle.items)
        """Items the bundle was trained with; higher indices were posted since."""
        self._untouched = self._untouched_at_training()
        k = self.cold_config.neighbours
        self._nb_idx, self._nb_w = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        self.cold = ColdUsers(self, self.cold_config)
        self._load_catalog()
        if vector_index == "pgvector":
            self._use_pgvector()
        if self.cold_config.enabled:
            self.cold.groups.start()

    def _use_pgvector(self) -> None:
        """Search the semantic generator's items in the store's pgvector table (filled by
        the first process that serves this bundle) instead of the bundle's faiss index."""
        sem = self.semantic
        if sem is None:
            return
        engine = getattr(self.store, "engine", None)
        if engine is None:
            raise ConfigError("[serve] vector_index = \"pgvector\" needs a SQL store")
        n = sem.vectors_.shape[0]
        sem.use_index(PgVectorIndex.attach(
            engine, table_name(self.bundle.version, sem.name), sem.vectors_,
            self.items.externals(range(n)), owner=f"bundle {self.bundle.version}, "
            f"generator {sem.name}"))

    @property
    def n_model_items(self) -> int:
        """Items the models can score: the bundle's plus those embedded since it loaded."""
        return self.blend.n_items_

    @property
    def blocked(self) -> NDArray[np.bool_]:
        """Read-only mask over item indices: True where the item may not be recommended."""
        view = self._blocked.view()
        view.flags.writeable = False
        return view

    @property
    def semantic(self) -> Semantic | None:
        gen = self.bundle.generators.get(Semantic.name)
        return gen if isinstance(gen, Semantic) else None

    # ---- catalog -------------------------------------------------------------------------
    def _load_catalog(self) -> None:
        # before the read, so writes in between are looked at again (applying one twice is
        # harmless); the recent window is what the first sync must not fetch again
        self._catalog_change = self.store.item_change()
        self._applied = dict(self.store.items_changed_after(
            max(0, self._catalog_change - CATALOG_CHANGE_MARGIN)))
        self.catalog = Catalog.from_frame(self.store.items_frame())
        for item_id, available, category in self.catalog.states():
            self._note_item(item_id, available, category)
        unseen = list(self.catalog.items([i for i in self.catalog.ids()
                                          if i not in self.items]).values())
        if unseen:  # stored after the bundle was trained
            self._index_new(unseen)

    def _index_new(self, items: Sequence[Item]) -> None:
        """Give items the bundle has never seen an index (search, filters and category lists
        see them at once) and a vector when there is a semantic model (then the feed and
        similar items score them too, and the cart through their trained look-alikes)."""
        new = [it for it in items if it.id not in self.items]
        if not new:
            return
        texts = [item_text(it.title, it.category, it.brand, it.description) for it in new]
        if self.bundle.pipeline is not None:  # its own text generators (shared ones: below)
            self.bundle.pipeline.add_items(texts)
        sem = self.semantic
        if sem is not None:
            start = sem.vectors_.shape[0]
            sem.add_items(texts, [it.id for it in new])
            single_threaded_ann()
            nb_i, nb_w = text_neighbours(sem.search_vectors, sem.vectors_[start:],
                                         self.n_trained, self.cold_config.neighbours)
            self._nb_idx = np.vstack([self._nb_idx, nb_i])
            self._nb_w = np.vstack([self._nb_w, nb_w])
        self.items.add([it.id for it in new])  # searchable (and in category lists) either way
        grown = len(self.items) - self._blocked.shape[0]
        if grown > 0:
            self._blocked = np.concatenate([self._blocked, np.zeros(grown, dtype=bool)])
            self._untouched = np.concatenate([self._untouched, np.ones(grown, dtype=bool)])
        for it in new:
            self._note_item(it.id, it.available, tuple(it.category))

    def _note_item(self, item_id: str, available: bool, category: tuple[str, ...]) -> None:
        self._category[item_id] = category
        idx = self.items.get(item_id)
        if idx is not None and idx < self._blocked.shape[0]:
            self._blocked[idx] = not available
        if idx is not None:
            self.cold.note_category(idx, category)

    def _untouched_at_training(self) -> NDArray[np.bool_]:
        """Per trained item: True when no training interaction reached it (the bundle's
        popularity counts it 0); all False without a popularity generator."""
        pop = next((g for g in self.bundle.generators.values() if isinstance(g, Popularity)),
                   None)
        n = len(self.bundle.items)
        if pop is None:
            return np.zeros(n, dtype=bool)
        counts = np.asarray(pop.scores_, np.float64)
        return np.pad(counts <= 0, (0, max(0, n - counts.shape[0])), constant_values=True)[:n]

    @property
    def untouched(self) -> NDArray[np.bool_]:
        """Per item index: True for items no interaction reached before training (posted
        since, or never interacted with)."""
        view = self._untouched.view()
        view.flags.writeable = False
        return view

    def new_item_neighbours(self, items: NDArray[np.int64]
                            ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Trained look-alikes of posted items (indices >= :attr:`n_trained`) and their
        weights (:func:`~shelfwise.services.cold_start.text_neighbours`); -1/0 rows for
        items that have none (no semantic model, no text)."""
        k = self.cold_config.neighbours
        rows = np.asarray(items, np.int64) - self.n_trained
        ok = (rows >= 0) & (rows < self._nb_idx.shape[0])
        out_i = np.full((len(rows), k), -1, np.int64)
        out_w = np.zeros((len(rows), k), np.float32)
        out_i[ok], out_w[ok] = self._nb_idx[rows[ok]], self._nb_w[rows[ok]]
        return out_i, out_w

    def catalog_updated(self, items: Sequence[Item]) -> None:
        """Apply new or changed catalog entries at once: availability, categories, and a vector
        for every new item (so it shows up in similar items and feeds without retraining)."""
        with self._lock:
            self.catalog.upsert(items)
            self._index_new(items)
            for it in items:
                self._note_item(it.id, it.available, tuple(it.category))

    def sync_catalog(self) -> list[Item]:
        """Apply the catalog writes other processes made since the last look (a ``POST
        /v1/items`` answered by another worker, ``shelfwise import items`` while serving):
        new items are indexed as if posted here, and changed ones (availability, category,
        text) replace their entries; returns the items applied. Looks back
        :data:`CATALOG_CHANGE_MARGIN` write numbers, since concurrent writers may commit
        numbers out of order; a write already applied, or that left the item as this
        process holds it (its own), is skipped."""
        top = self.store.item_change()
        if top <= self._catalog_change:
            return []
        rows = self.store.items_changed_after(max(0, self._catalog_change - CATALOG_CHANGE_MARGIN))
        fresh = [i for i, change in rows if self._applied.get(i) != change]
        stored = self.store.get_items(fresh).values() if fresh else ()
        items = [it for it in stored if self.catalog.get(it.id) != it]  # not its own writes
        if items:
            self.catalog_updated(items)
        self._applied = {i: change for i, change in {**self._applied, **dict(rows)}.items()
                         if change > top - CATALOG_CHANGE_MARGIN}
        self._catalog_change = top
        return items

    # ---- user state ----------------------------------------------------------------------
    def history(self, user_id: str) -> NDArray[np.int64]:
        """The user's interacted items as model indices, oldest first (unknown items skipped)."""
        with self._lock:
            cached = self._cache.get(user_id)
            if cached is not None:
                self._cache.move_to_end(user_id)
                self.history_stats.hits += 1
                return cached
            self.history_stats.misses += 1
            generation = self._generation
        hist = self._indices(self.store.interaction_items(user_id, limit=self.history_limit))
        with self._lock:
            if generation == self._generation:
                self._cache[user_id] = hist
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return hist

    def observe(self, events: Sequence[Event]) -> None:
        """Called after events are durably stored: their users' state is refreshed."""
        with self._lock:
            for ev in events:
                self._cache.pop(ev.user_id, None)

    def history_before(self, user_id: str, before: datetime) -> NDArray[np.int64]:
        """:meth:`history` as it stood just before ``before`` (uncached; for rebuilding what a
        logged request saw)."""
        events = [e for e in self.store.user_events(user_id, types=sorted(INTERACTION_TYPES))
                  if e.timestamp < before]
        return self._model_indices(events[-self.history_limit:])

    def _model_indices(self, events: Sequence[Event]) -> NDArray[np.int64]:
        return self._indices([e.item_id or "" for e in events])

    def _indices(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        idx = self.items.indices(item_ids)
        return idx[(idx >= 0) & (idx < self.n_model_items)].astype(np.int64, copy=False)

    def forget_users(self, match: Callable[[str], bool]) -> int:
        """Drop the cached histories of users where ``match(user_id)``, and the memo of
        scored histories; how many histories."""
        with self._lock:
            self._generation += 1
            gone = [u for u in self._cache if match(u)]
            for u in gone:
                del self._cache[u]
            self._scored.clear()
            self._query_vectors.clear()
        return len(gone)

    def close(self) -> None:
        """Stop the background refresh of attribute-conditioned popularity."""
        self.cold.groups.stop()

    def expire(self, before: datetime) -> int:
        """Retention dropped events before ``before``: no cached history may still hold them."""
        return self.forget_users(lambda _user: True)

    # ---- recommendations -----------------------------------------------------------------
    def generator_scores(self, name: str, history: NDArray[np.int64],
                         focus: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
        """Bundle generator ``name``'s raw scores for one history (read-only), exact also on
        ``focus`` items where the generator scores only its own top list exactly."""
        row = self.generator_row(name, history, focus)
        if isinstance(row, SparseRow):
            row = row.dense()
            row.flags.writeable = False
        return row

    def generator_row(self, name: str, history: NDArray[np.int64],
                      focus: NDArray[np.int64] | None = None, *, blend: bool = False
                      ) -> NDArray[np.float32] | SparseRow:
        """:meth:`generator_scores`, as a :class:`SparseRow` where the generator gives one.
        The last few answers are kept, so a feed with exploration slots, which asks the
        blend's generators and then the slots' sources, scores each generator once.
        ``blend``: the blend's own row, also kept as :meth:`blend_row`'s answer."""
        gen = self.bundle.generators[name]
        hist = np.ascontiguousarray(history, np.int64).tobytes()
        key = (name, gen.n_items_, hist, None if focus is None else np.sort(focus).tobytes())
        with self._lock:
            hit = self._scored.get(key)
            if hit is not None:
                self._scored.move_to_end(key)
                self.score_stats.hits += 1
            else:
                self.score_stats.misses += 1
        if hit is None:
            single_threaded_ann()
            wants = focus is not None and focused(gen)
            hit = gen.sparse_row(history, focus if wants else None)
            if hit is None:
                scored = (gen.score_focused([history], [focus])  # type: ignore[attr-defined]
                          if wants else gen.score([history]))
                dense = np.asarray(scored[0], dtype=np.float32)
                dense.flags.writeable = False
                hit = dense
        with self._lock:
            self._scored[key] = hit
            if blend and focus is not None:
                self._scored[(name, gen.n_items_, hist, BLEND_ROW)] = hit
            while len(self._scored) > SCORE_MEMO:
                self._scored.popitem(last=False)
        return hit

    def query_vector(self, query: str) -> NDArray[np.float32]:
        """The semantic encoder's raw (uncentred) vector of a search query, read-only; the
        last :data:`QUERY_VECTORS` are kept. Only with a semantic generator."""
        sem = self.semantic
        assert sem is not None, "query vectors need the semantic generator"
        key = (sem.encoder_id_, hashlib.blake2b(query.encode(), digest_size=16).digest())
        with self._lock:
            hit = self._query_vectors.get(key)
            if hit is not None:
                self._query_vectors.move_to_end(key)
                return hit
        vec = np.asarray(sem.encoder.encode_queries([query])[0], dtype=np.float32)
        vec.flags.writeable = False
        with self._lock:
            self._query_vectors[key] = vec
            while len(self._query_vectors) > QUERY_VECTORS:
                self._query_vectors.popitem(last=False)
        return vec

    def blend_row(self, name: str, history: NDArray[np.int64], shown: NDArray[np.int64]
                  ) -> NDArray[np.float32] | SparseRow:
        """Part ``name``'s raw row as the last blend of ``history`` used it (so explained
        parts add up to the blend's score), else one exact on the ``shown`` items."""
        gen = self.bundle.generators[name]
        if not focused(gen):
            return self.generator_row(name, history)
        key = (name, gen.n_items_, np.ascontiguousarray(history, np.int64).tobytes(), BLEND_ROW)
        with self._lock:
            hit = self._scored.get(key)
        return hit if hit is not None else self.generator_row(name, history, shown)

    def _blend(self, history: NDArray[np.int64]) -> tuple[NDArray[np.float32], list[str],
                                                          PartLabels]:
        """The bundle's feed blend for one history; also who contributed most to an item."""
        scores, labels = self.blend.score_row(
            lambda name, _gen, focus: self.generator_row(name, history, focus, blend=True))
        return scores, self.blend.names, labels

    def _finish(
        self,
        scores: NDArray[np.float32],
        n: int,
        exclude: NDArray[np.int64],
        label: PartLabels | None,
        names: list[str],
    ) -> list[Recommendation]:
        blocked = np.flatnonzero(self._blocked[: scores.shape[0]])  # top_k copies the row
        idx, val = top_k(scores[None, :], n,
                         exclude=[np.concatenate([exclude, blocked]) if len(blocked) else exclude])
        shown = idx[0][idx[0] >= 0]
        parts = label(shown) if label is not None else np.zeros(len(shown), np.int64)
        return [Recommendation(self.items.external(int(i)), float(v), names[int(k)])
                for i, v, k in zip(shown, val[0], parts, strict=False)]

    def feed(self, user_id: str, n: int = 10, *, exclude_seen: bool = True,
             pipeline: bool = True, history: NDArray[np.int64] | None = None
             ) -> RecommendationList:
        """Personal feed. A user with at most ``cold_start.max_history`` interactions and
        queries, picked categories or group attributes gets their cold profile; one with no
        history and nothing else the cold-start generator's list. New items are placed into
        personal lists by their text (:meth:`with_new_items`). ``pipeline=False`` serves
        the blend even when the bundle has a two-stage pipeline (an experiment's variant);
        ``history`` replaces the stored one (what the feed was before an event)."""
        history = self.history(user_id) if history is None else history
        exclude = sorted_unique(history) if exclude_seen else np.empty(0, np.int64)
        cfg = self.cold_config
        if cfg.enabled and len(history) <= cfg.max_history:
            ctx = self.cold.context(user_id)
            if self.cold.has_signal(ctx):
                return self._cold_feed(ctx, history, n, exclude)
        if len(history) == 0:
            cold = self.bundle.manifest.config.cold_start
            scores = self.bundle.generators[cold].score([history])[0]
            scores = np.pad(scores, (0, self.n_model_items - scores.shape[0]))
            if _spread(scores) == 0:  # no events yet: nothing is more popular
                scores, cold = self.arrivals(), NEW_ARRIVALS
            items = _staged(self._finish(scores, n, exclude, None, [cold]), "cold_start")
            return RecommendationList(items, cold_start=True, history_length=0, sources=[cold])
        pipe = self.bundle.pipeline if pipeline else None
        sem = self.semantic
        profile = sem.profile(history) if sem is not None else None
        if pipe is not None:
            result = self._pipeline_feed(pipe, history, n, exclude)
        else:
            scores, names, label = self._blend(history)
            items = self._finish(scores, n, exclude, label, names)
            result = RecommendationList(items, history_length=len(history), sources=names)
        result.items = self.with_new_items(result.items, profile, exclude, n)
        return result

    def _cold_feed(self, ctx: ColdContext, history: NDArray[np.int64], n: int,
                   exclude: NDArray[np.int64]) -> RecommendationList:
        """The cold profile's list (:func:`~shelfwise.services.cold_start.score_cold`)."""
        profile = self.cold.profile(ctx, history)
        sem = self.semantic
        got = score_cold(profile, sem.vectors_ if sem is not None else None,
                         self._ann if sem is not None else None, n,
                         self._allowed(exclude), self.cold_config)
        items = [Recommendation(self.items.external(int(i)), float(v), main,
                                stage="cold_start", parts=parts)
                 for i, v, main, parts in zip(got.items, got.scores, got.main, got.parts,
                                              strict=True)]
        items = self.with_new_items(items, profile.vector(), exclude, n)
        return RecommendationList(items, cold_start=True, history_length=len(history),
                                  sources=sorted({r.source for r in items}))

    def _allowed(self, exclude: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Items a list may hold: not blocked, not in ``exclude``."""
        allowed = ~self._blocked[: self.n_model_items].copy()
        allowed = np.pad(allowed, (0, max(0, self.n_model_items - allowed.shape[0])),
                         constant_values=True)
        ex = exclude[(exclude >= 0) & (exclude < allowed.shape[0])]
        allowed[ex] = False
        return allowed

    def _ann(self, vector: NDArray[np.float32], k: int
             ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The semantic ANN's top ``k`` for one profile vector (the index makes a search wait
        while posted items are added)."""
        sem = self.semantic
        assert sem is not None
        single_threaded_ann()
        idx, val = sem.search_vectors(vector[None, :], k)
        return idx[0], val[0]

    def with_new_items(self, items: list[Recommendation], profile: NDArray[np.float32] | None,
                       exclude: NDArray[np.int64], n: int) -> list[Recommendation]:
        """``items`` with up to ``cold_start.new_items`` untouched items placed at the rank
        their text match to ``profile`` has among the trained items
        (:func:`~shelfwise.services.cold_start.place_new`), cut to ``n``. Costs one ANN
        search, and nothing while every allowed item has interactions."""
        cfg = self.cold_config
        if (not cfg.enabled or cfg.new_items == 0 or profile is None or not np.any(profile)
                or self.semantic is None):
            return items
        allowed = self._allowed(exclude)
        untouched = self._untouched[: allowed.shape[0]]
        if not (untouched & allowed[: untouched.shape[0]]).any():
            return items
        cand, sims = self._ann(profile, cfg.pool + len(exclude))
        idx = self.items.indices([r.item_id for r in items])
        placed = place_new(list(zip(idx.tolist(), [r.score for r in items], strict=True)),
                           cand, sims, untouched, allowed, cfg.new_items)
        by_idx = dict(zip(idx.tolist(), items, strict=True))
        return [by_idx[p.item] if not p.new and p.item in by_idx else self._new_item(p)
                for p in placed][:n]

    def _new_item(self, p: Placed) -> Recommendation:
        return Recommendation(self.items.external(p.item), p.score, "new_item", stage="new_item",
                              parts={"semantic": round(p.match, 6),
                                     "text_rank": float(p.rank)})

    def _pipeline_feed(self, pipe: Pipeline, history: NDArray[np.int64], n: int,
                       exclude: NDArray[np.int64]) -> RecommendationList:
        """The two-stage feed; items posted after training (unknown to it) rank last here,
        :meth:`with_new_items` then places the ones that match."""
        scores, explain = pipe.score_explained(history[history < pipe.n_items_])
        # an item being posted has its words before its id (_index_new): not yet listable
        scores = scores[: len(self.items)]
        if scores.shape[0] < self.n_model_items:
            scores = np.pad(scores, (0, self.n_model_items - scores.shape[0]),
                            constant_values=float(scores.min()) - 1.0)
        items = self._finish(scores, n, exclude, None, ["pipeline"])
        grouped = explain([self.items.index(r.item_id) for r in items])
        items = [Recommendation(r.item_id, r.score,
                                max(parts, key=parts.__getitem__) if parts else "pipeline",
                                stage="pipeline", parts=parts)
                 for r, parts in zip(items, grouped, strict=True)]
        return RecommendationList(items, history_length=len(history),
                                  sources=[s.key for s in pipe.config.generators])

    def arrivals(self) -> NDArray[np.float32]:
        """A score per model item that ranks the newest first: ``created_at`` where the
        catalog has it, then catalog order (later added = newer). The cold-start list of a
        shop with no events yet."""
        n = self.n_model_items
        if self._arrivals is not None and self._arrivals[0] == self.catalog.version \
                and self._arrivals[1].shape[0] == n:
            return self._arrivals[1]
        created = np.full(n, -np.inf)
        for k, item_id in enumerate(self.items.ids[:n]):
            it = self.catalog.get(item_id)
            if it is not None and it.created_at is not None:
                created[k] = it.created_at.timestamp()
        order = np.lexsort((np.arange(n), created))  # oldest first
        scores = np.empty(n, np.float32)
        scores[order] = np.arange(n, dtype=np.float32) + 1.0
        self._arrivals = (self.catalog.version, scores)
        return scores

    def similar(self, item_id: str, n: int = 10) -> RecommendationList:
        """Items like ``item_id``: its co-occurrence and semantic neighbours, or (for items
        no model can place yet) popular items of the same category (``cold_start``)."""
        idx = self.items.get(item_id)
        if idx is not None and idx < self.n_model_items:
            history = np.asarray([idx], dtype=np.int64)
            scores, names, label = self._blend(history)
            if _spread(scores) > 0:  # else no model has anything to say about it yet
                items = self._finish(scores, n, history, label, names)
                sem = self.semantic
                if sem is not None and idx < sem.vectors_.shape[0]:
                    # the blend's own profile (same bytes): its ANN list is reused, not redone
                    items = self.with_new_items(items, sem.profile(history), history, n)
                return RecommendationList(items, history_length=1, sources=names)
        if item_id not in self._category:
            raise NotFoundError(f"unknown item {item_id!r}: post it to /v1/items first")
        return self._same_category(item_id, n)

    def _same_category(self, item_id: str, n: int) -> RecommendationList:
        cold = self.bundle.manifest.config.cold_start
        pop = self.bundle.generators[cold].score([np.empty(0, np.int64)])[0]
        pop = np.pad(pop, (0, self.n_model_items - pop.shape[0]))
        category = self._category.get(item_id, ())
        if category:
            same = np.array(
                [self._category.get(e, ()) == category for e in self.items.ids[: len(pop)]]
            )
            if same.any():
                pop[~same] = -np.inf
                items = _staged(self._finish(pop, n, np.empty(0, np.int64), None,
                                             ["category"]), "category")
                return RecommendationList(items, cold_start=True, sources=["category"])
        items = _staged(self._finish(pop, n, np.empty(0, np.int64), None, [cold]), "cold_start")
        return RecommendationList(items, cold_start=True, sources=[cold])


def _staged(items: list[Recommendation], stage: str) -> list[Recommendation]:
    return [dataclasses.replace(r, stage=stage) for r in items]


def _spread(scores: NDArray[np.float32]) -> float:
    if scores.size:
        low, high = scores.min(), scores.max()
        if np.isfinite(low) and np.isfinite(high):  # a blend's row: two passes, no copy
            return float(high - low)
    finite = scores[np.isfinite(scores)]
    return float(finite.max() - finite.min()) if finite.size else 0.0
