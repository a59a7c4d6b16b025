"""Why each returned item is there: a reason code, the parts behind it, the item or label it
names, and a sentence (:mod:`~shelfwise.services.explain_text`).

Reason codes (:data:`REASONS`):

- ``similar_to``: a history item (the viewed item on the similar-items surface), in
  ``related_item``. On the feed it is the history item whose removal lowers the item's score
  most: every distinct recent history item is left out in turn and the item rescored with the
  generators' own math (co-occurrence and item-kNN pair weights under their recency decay, the
  semantic profile's recency-weighted cosine), on the returned items' columns only. That is the
  figure ``benchmarks/bench_explain.py`` checks against a full rescoring.
- ``matches_interest``: a profile tag (:func:`~shelfwise.services.profiles.interest_tags`)
  the item shares, in ``label``; used when no single history item carries at least half of
  the item's history-driven score.
- ``bought_with``: a cart item (cart surface); ``popular_in`` / ``trending`` /
  ``new_arrival``: the item's category in ``label``; ``explore``: an exploration slot;
  ``matches_query``: the query words found in the title, in ``label``.
- Cold start (:mod:`shelfwise.services.cold_start`): a cold profile's item is ``similar_to``
  the history item nearest it, ``matches_query`` (``label``: the user's search query nearest
  it), ``matches_interest`` (``label``: the picked category holding it) or ``popular_with``
  (``label``: ``key: value``, the user's attribute value whose shoppers lift it most above
  global popularity); a new item placed by its text is a ``new_arrival`` naming the history
  item (or viewed item, or cart item) it is like.

Work per request is over the returned items and at most :data:`WINDOW` history items, never
the catalog (the blend's per-generator score rows are the memoised ones the feed computed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.schemas import Item
from shelfwise.retrieval.base import CandidateGenerator, SparseRow
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.ease import history_matrix
from shelfwise.retrieval.itemknn import ItemKNN
from shelfwise.retrieval.popular import Popularity
from shelfwise.retrieval.semantic import Semantic
from shelfwise.services.cold_users import ColdContext
from shelfwise.services.explain_text import item_language, render
from shelfwise.services.profiles import _keywords, interest_tags
from shelfwise.services.recommender import NEW_ARRIVALS, Recommender

if TYPE_CHECKING:
    from shelfwise.services.stages import Candidate, Slate

REASONS = ("similar_to", "matches_interest", "bought_with", "popular_in", "new_arrival",
           "trending", "explore", "matches_query", "popular_with")
WINDOW = 50
"""Distinct items among the last ``WINDOW`` history events a feed item may be named after."""
TRENDING_DAYS = 7.0
"""A popularity generator with a half-life this short (or shorter) reads as ``trending``."""
DOMINANT = 0.5
"""Share of an item's history-driven score one history item needs to be named (else the
shared profile tag is, when there is one)."""

_FEATURE_KIND = {"pop": "popular_in", "pop_recent": "trending", "item_age_days": "new_arrival",
                 "cat_affinity": "interest", "cat_recency": "interest",
                 "sem_last_item": "last", "lex_last_item": "last", NEW_ARRIVALS: "new_arrival",
                 "category": "popular_in",
                 "similar_text": "history", "lex_cold_rank": "history"}
_CART = {"cooccurrence": "bought_with", "sequential": "bought_with",
         "user_cooccurrence": "similar_to", "user_repeat": "similar_to",
         "popularity": "popular_in", "new_item": "new_arrival"}
_COLD = frozenset({"history", "query", "interest", "popular_with", "new_item"})
"""Raw reasons of cold-profile items and placed new items (stages cold_start, new_item)."""
_WORDS = re.compile(r"\w+")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def removal_rows(gen: CandidateGenerator, histories: Sequence[NDArray[np.int64]],
                 items: NDArray[np.int64]) -> NDArray[np.float64] | None:
    """``gen``'s raw scores of ``items`` for each history (rows), computed on those columns
    only; None for a generator this module cannot score that way (its drops count as 0)."""
    out = np.zeros((len(histories), len(items)), np.float64)
    if isinstance(gen, Cooccurrence):
        m = gen.matrix_
        ok = items < m.shape[0]
        used, weights = decayed_weights(histories, m.shape[0], gen.config.max_history,
                                        gen.config.history_decay)
        out[:, ok] = weights @ m[used][:, items[ok]].toarray()
        return out
    if isinstance(gen, ItemKNN):
        m = gen.similarity_
        n = m.shape[0]
        h = history_matrix(histories, n, decay=gen.config.history_decay,
                           max_history=gen.config.max_history)
        ok = items < n
        used = np.unique(h.indices)  # only the history items' rows of the matrix matter
        out[:, ok] = (h[:, used] @ m[used][:, items[ok]]).toarray()
        return out
    if isinstance(gen, Semantic):
        vectors = gen.vectors_
        ok = items < vectors.shape[0]
        used, weights = decayed_weights(histories, vectors.shape[0], gen.config.max_history,
                                        gen.config.profile_decay)
        profiles = weights @ vectors[used]  # Semantic.profile of every history at once
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        np.divide(profiles, norms, out=profiles, where=norms > 0)
        out[:, ok] = profiles @ vectors[items[ok]].T
        return out
    return None


def decayed_weights(histories: Sequence[NDArray[np.int64]], n: int, max_history: int,
                    decay: float) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The distinct items of ``histories`` (columns) and each history's weight on each (rows),
    as the co-occurrence and semantic generators weigh a history: its last ``max_history``
    items, those the model knows, the d-th from the end ``decay**d``, repeats adding up."""
    kept = []
    for h in histories:
        h = np.asarray(h, np.int64)[-max_history:]
        kept.append(h[(h >= 0) & (h < n)])
    flat = np.concatenate(kept) if kept else np.empty(0, np.int64)
    used = np.unique(flat)
    weights = np.zeros((len(kept), len(used)), np.float32)
    lengths = np.fromiter((len(h) for h in kept), np.int64, count=len(kept))
    rows = np.repeat(np.arange(len(kept)), lengths)
    steps = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(flat)) - 1  # from the end
    np.add.at(weights, (rows, np.searchsorted(used, flat)),
              np.float32(decay) ** steps.astype(np.float32))
    return used, weights


def history_drops(gens: Sequence[tuple[CandidateGenerator, float]], history: NDArray[np.int64],
                  items: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The distinct recent history items, and for each (rows) how much the weighted sum of
    the generators' scores of ``items`` (columns) falls when every occurrence of it leaves the
    history. ``gens`` pairs each generator with the weight of its raw score."""
    cands = np.unique(history[-WINDOW:])
    drops = np.zeros((len(cands), len(items)), np.float64)
    if len(cands) == 0 or len(items) == 0:
        return cands, drops
    histories = [history[history != j] for j in cands] + [history]
    for gen, weight in gens:
        rows = removal_rows(gen, histories, items)
        if rows is not None and weight:
            drops += weight * np.nan_to_num(rows[-1] - rows[:-1], posinf=0.0, neginf=0.0)
    return cands, drops


class Explainer:
    """Fills ``parts``, ``reason``, ``related_item``, ``label`` and ``text`` of a slate's items
    (see the module doc)."""

    def __init__(self, recommender: Recommender) -> None:
        self.rec = recommender

    # ---- parts -----------------------------------------------------------------------------
    def blend_parts(self, items: Sequence[Candidate], history: NDArray[np.int64]
                    ) -> dict[str, float]:
        """Sets each blend item's parts as the blend's ``normalise_rows`` scales them
        (non-finite and padded entries count as 0), from the row's range alone: no full-row
        copy. Returns each generator's factor from raw score to blend score (weight / span)."""
        rec = self.rec
        n = rec.blend.n_items_
        idx = rec.items.indices([c.item_id for c in items])
        scale: dict[str, float] = {}
        shown = idx[(idx >= 0) & (idx < n)]
        for name, _gen, weight in rec.blend.parts:
            # the row the blend normalised (a part exact only on top lists: the blend's lists)
            got = rec.blend_row(name, history, shown)
            if isinstance(got, SparseRow):  # its range from the entries and the fill alone
                lo, hi, every = got.finite_range()
                length = got.n
                inside = idx[(idx >= 0) & (idx < min(n, got.n))]
                values = dict(zip(inside.tolist(), got.at(inside).tolist(), strict=True))
            else:
                row = got[:n]
                finite = np.isfinite(row)
                every = bool(finite.all())  # the usual case: plain reductions, ~6x faster
                lo = float(row.min() if every and row.size else
                           row.min(where=finite, initial=np.inf))
                hi = float(row.max() if every and row.size else
                           row.max(where=finite, initial=-np.inf))
                length = row.shape[0]
                values = {int(k): float(row[k]) for k in idx if 0 <= k < length}
            if length < n or not every:  # those entries are 0 in the blend
                lo, hi = min(lo, 0.0), max(hi, 0.0)
            span = hi - lo
            scale[name] = weight / span if span > 0 else 0.0
            for c, k in zip(items, idx, strict=True):
                if 0 <= k < n:
                    value = values.get(int(k), 0.0)
                    value = value if np.isfinite(value) else 0.0
                    part = (value - lo) / span if span > 0 else 0.0
                    c.parts[name] = round(float(weight * np.float32(part)), 6)
        return scale

    # ---- the stage -------------------------------------------------------------------------
    def __call__(self, slate: Slate) -> None:
        items = slate.items
        blended = [c for c in items if c.source == "blend"]
        scale = (self.blend_parts([c for c in blended if not c.parts], slate.history)
                 if blended and len(slate.history) else {})
        for c in items:
            if not c.parts:
                c.parts = ({"propensity": c.propensity or 0.0, "score": c.score}
                           if c.reason == "explore" else {c.reason: c.score})
        if slate.surface == "feed" and len(slate.history):
            self._name_history(slate, scale)
        tags: list[tuple[str, float]] | None = None
        cold: list[ColdContext] = []  # read once per slate, when an item needs it
        for c in items:
            key = (self._cold(c, slate, cold) if c.source in ("cold_start", "new_item")
                   and c.reason in _COLD else self._reason(c, slate))
            if c.reason == "matches_interest":
                tags = (self._tags(slate) if len(slate.history) else []) if tags is None \
                    else tags
                self._interest(c, tags)
                key = c.reason
            c.text = self._text(c, slate, key)

    # ---- naming the history item ----------------------------------------------------------
    def _name_history(self, slate: Slate, scale: Mapping[str, float]) -> None:
        """``related_item`` and ``named_share`` of feed items from removal drops: the blend's
        generators at their blend scale; for a pipeline item, the pipeline generator whose
        ``pred_contrib`` group added most to its score."""
        rec = self.rec
        blend = [c for c in slate.items if c.source == "blend"]
        if blend and scale:
            self._apply(blend, [(g, scale[name]) for name, g, _w in rec.blend.parts
                                if scale.get(name)], slate.history)
        pipe = rec.bundle.pipeline
        if pipe is None:
            return
        by_gen: dict[str | None, list[Candidate]] = {}  # one removal pass per generator
        for c in (c for c in slate.items if c.source == "pipeline"):
            top = max((a for a in c.parts if a in pipe.generators_ and c.parts[a] > 0),
                      key=lambda a: c.parts[a], default=None)
            by_gen.setdefault(top, []).append(c)
        history = slate.history[slate.history < pipe.n_items_]
        for name, group in by_gen.items():
            if name is not None:  # no generator added to its score: no history item named
                self._apply(group, [(pipe.generators_[name], 1.0)], history)

    def _apply(self, items: Sequence[Candidate],
               gens: Sequence[tuple[CandidateGenerator, float]],
               history: NDArray[np.int64]) -> None:
        idx = np.asarray(self.rec.items.indices([c.item_id for c in items]), np.int64)
        cands, drops = history_drops(gens, history, idx)
        if len(cands) == 0:
            return
        best = drops.argmax(axis=0)
        positive = np.clip(drops, 0.0, None).sum(axis=0)
        for j, c in enumerate(items):
            top = float(drops[best[j], j])
            if top > 0:
                c.related_item = self.rec.items.external(int(cands[best[j]]))
                c.named_share = top / float(positive[j])

    # ---- reason codes ---------------------------------------------------------------------
    def _kind(self, name: str, gens: Mapping[str, CandidateGenerator]) -> str | None:
        gen = gens.get(name)
        if isinstance(gen, Popularity):
            half_life = gen.config.half_life_days
            return "trending" if half_life and half_life <= TRENDING_DAYS else "popular_in"
        if gen is not None:
            return "history"
        return _FEATURE_KIND.get(name)

    def _reason(self, c: Candidate, slate: Slate) -> str:
        """Sets ``c.reason`` (and what it names); returns the template key for the text."""
        raw, surface = c.reason, slate.surface
        if raw == "explore":
            c.reason, c.related_item = "explore", None
            return "explore"
        if surface in ("search", "rerank"):
            c.reason, c.label = "matches_query", self._query_words(slate.query or "", c)
            return "matches_query"
        if surface == "cart":
            return self._cart(c, raw, slate)
        pipe = self.rec.bundle.pipeline
        gens: Mapping[str, CandidateGenerator] = (
            pipe.generators_ if c.source == "pipeline" and pipe is not None
            else self.rec.bundle.generators)
        order = sorted(c.parts, key=lambda p: -c.parts[p])
        kind = next((k for p in order if c.parts[p] > 0 and (k := self._kind(p, gens))),
                    None) or self._kind(raw, gens) or "popular_in"
        if kind == "last" and len(slate.history):
            c.related_item, kind = self.rec.items.external(int(slate.history[-1])), "history"
            c.named_share = 1.0
        if surface == "similar" and kind == "history":
            c.reason, c.related_item = "similar_to", slate.item_id
            return "similar_item"
        if kind == "history":
            share = c.named_share
            if c.related_item is not None and share is not None and share >= DOMINANT:
                c.reason = "similar_to"
                return "similar_to"
            c.reason = "matches_interest"  # the profile tag is looked up next
            return "matches_interest"
        if kind == "interest":
            c.reason = "matches_interest"
            return "matches_interest"
        c.reason = kind
        if surface != "similar":
            c.related_item = None
        c.label = self._category(c.item_id)
        return kind

    def _cold(self, c: Candidate, slate: Slate, cold: list[ColdContext]) -> str:
        """Reason, named item or label of a cold-profile item or a placed new item."""
        raw = c.reason
        if raw == "new_item":
            c.reason, c.label = "new_arrival", self._category(c.item_id)
            c.related_item = (slate.item_id if slate.surface == "similar"
                              else self._nearest(c.item_id, slate.history))
            return "new_similar" if c.related_item is not None else "new_arrival"
        if raw == "history":
            c.related_item = self._nearest(c.item_id, slate.history)
            c.reason = "similar_to"
            return "similar_to"
        if not cold:
            cold.append(self.rec.cold.context(slate.user_id) if slate.user_id
                        else ColdContext())
        ctx, k = cold[0], self.rec.items.get(c.item_id)
        if raw == "query":
            c.reason, c.label = "matches_query", self._nearest_query(c.item_id, ctx.queries)
            return "searched"
        if raw == "interest":
            c.reason = "matches_interest"
            c.label = next((name for name in ctx.interests
                            if k is not None and self.rec.cold.is_member(name, k)),
                           ctx.interests[0] if ctx.interests else None)
            return "matches_interest"
        c.reason = "popular_with"
        best = ctx.group.lift(k) if ctx.group is not None and k is not None else None
        group = best[0] if best is not None else (
            ctx.group.groups[0][0] if ctx.group is not None and ctx.group.groups else None)
        c.label = f"{group.key}: {group.value}" if group is not None else None
        return "popular_with"

    def _vector(self, item_id: str) -> NDArray[np.float32] | None:
        sem, k = self.rec.semantic, self.rec.items.get(item_id)
        if sem is None or k is None or k >= sem.vectors_.shape[0]:
            return None
        out: NDArray[np.float32] = sem.vectors_[k]
        return out

    def _nearest(self, item_id: str, history: NDArray[np.int64]) -> str | None:
        """The recent history item whose text vector is nearest the item's."""
        v, sem = self._vector(item_id), self.rec.semantic
        if v is None or sem is None or len(history) == 0:
            return None
        h = np.unique(history[-WINDOW:])
        h = h[h < sem.vectors_.shape[0]]
        if len(h) == 0:
            return None
        return self.rec.items.external(int(h[int(np.argmax(sem.vectors_[h] @ v))]))

    def _nearest_query(self, item_id: str, queries: Sequence[str]) -> str | None:
        """The user's query whose vector is nearest the item's."""
        v = self._vector(item_id)
        qv = self.rec.cold.query_vectors(queries) if v is not None else None
        if v is None or qv is None or not queries:
            return queries[-1] if queries else None
        return queries[int(np.argmax(qv @ v))]

    def _cart(self, c: Candidate, raw: str, slate: Slate) -> str:
        code = _CART.get(raw, "popular_in")
        c.reason = code
        if code == "new_arrival":
            c.label = self._category(c.item_id)
            return "new_with" if c.related_item is not None else "new_arrival"
        if code == "bought_with" and c.related_item is None:
            known = slate.meta.get("cart") or slate.given
            c.related_item = known[-1] if known else None
        elif raw == "user_repeat":
            c.related_item = c.item_id
            return "bought_before"
        elif raw == "user_cooccurrence":
            c.related_item = None
            cooc = self.rec.bundle.generators.get(Cooccurrence.name)
            if isinstance(cooc, Cooccurrence) and len(slate.history):
                self._apply([c], [(cooc, 1.0)], slate.history)
        elif code == "popular_in":
            c.related_item, c.label = None, self._category(c.item_id)
        return code

    def _interest(self, c: Candidate, tags: Sequence[tuple[str, float]]) -> None:
        """The user's most weighted tag the item shares; a named history item otherwise."""
        it = self.rec.catalog.get(c.item_id)
        terms = set(it.category) | set(it.tags) | set(_keywords(it.title or "")) if it else set()
        tag = next((t for t, _w in tags if t in terms), None)
        if tag is not None:
            c.reason, c.label, c.related_item = "matches_interest", tag, None
        elif c.related_item is not None:
            c.reason = "similar_to"

    def _tags(self, slate: Slate) -> list[tuple[str, float]]:
        """The user's interest tags over the recent history (recency-weighted, as profiles)."""
        recent = slate.history[-WINDOW:][::-1]
        ids, first = np.unique(recent, return_index=True)
        externals = self.rec.items.externals(ids)
        items = [self.rec.catalog.get(e) or Item(id=e) for e in externals]
        return interest_tags(items, 0.9 ** first.astype(np.float64))

    def _category(self, item_id: str) -> str | None:
        it = self.rec.catalog.get(item_id)
        return it.category[-1] if it is not None and it.category else None

    def _query_words(self, query: str, c: Candidate) -> str | None:
        """The query's words that occur in the item's title, in query order."""
        title = (self.rec.catalog.title(c.item_id) or "").lower()
        if _CJK.search(query):
            import rjieba

            words = [w.strip() for w in rjieba.cut(query.lower()) if w.strip()]
        else:
            words = _WORDS.findall(query.lower())
        found = list(dict.fromkeys(w for w in words if w in title))
        return " ".join(found) or None

    def promotion(self, text: str, score: float, propensity: float, explored: bool,
                  history: NDArray[np.int64] | None, policy: str, lang: str | None
                  ) -> Candidate:
        """A chosen promotion's explanation: ``explore`` when the bandit explored; else
        ``matches_interest`` (the user's top profile tag) for a user with a history, and
        ``trending`` (the best bet for shoppers without one) otherwise."""
        from shelfwise.services.stages import Candidate, Slate

        c = Candidate(text, score, "explore", f"promotions:{policy}",
                      parts={"score": score, "propensity": propensity})
        if not explored and history is not None and len(history):
            tags = self._tags(Slate("feed", "", 0, [], history=history))
            c.reason, c.label = "matches_interest", tags[0][0] if tags else None
        elif not explored:
            c.reason = "trending"
        language = lang or ("zh" if _CJK.search(text) else "en")
        c.text = render(c.reason, language, label=c.label)
        return c

    # ---- the sentence ---------------------------------------------------------------------
    def _text(self, c: Candidate, slate: Slate, key: str) -> str:
        lang = slate.lang or item_language(self.rec.catalog.get(c.item_id))
        name = None
        if c.related_item is not None:
            name = self.rec.catalog.title(c.related_item) or c.related_item
        return render(key, lang, item=name, label=c.label)
