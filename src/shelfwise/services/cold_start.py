"""Cold start at serving time: new users from whatever they have, new items from their text.

New users. A user whose interaction history is at most ``[serve.cold_start] max_history``
items long is served from a **cold profile** when they have anything to go on:

- the text vectors of their first items (onboarding picks arrive as ``view`` events, so they
  are history too), recency-weighted as the semantic generator weights a history;
- their last search queries, encoded by the bundle's query encoder and centred with the
  item vectors' script mean (so they live in the same, language-neutral space);
- the categories they picked at onboarding (user attribute ``interests``): the mean vector of
  each category's items, and membership itself;
- their attributes (gender, age band, region, ...): popularity among the users sharing each
  value (:mod:`shelfwise.services.cold_groups`), shrunk toward global popularity.

Each item's score is ``profile_weight`` x the min-max scaled profile match plus
``popularity_weight`` x the min-max scaled log popularity (attribute-conditioned when the user
has attributes), over candidates only: the ANN neighbours of the profile, the most popular
items and the picked categories' most popular members. The part that adds most names the
reason (a history item, a query, a category, shoppers like you, popularity).

New items. Items no interaction reached before training (posted since, or never touched) get
no collaborative score, so a trained model ranks them below everything it knows.
:func:`place_new` puts the best-matching ones into a ranked list at the rank their text match
has among the trained items (semantic top-``pool`` for the same profile), with a score
interpolated between their new neighbours in the list, i.e. on the list's own scale; at most
``new_items`` per list. :func:`text_neighbours` gives the cart a new item's trained look-alikes
(its scores are imputed from theirs).

Everything here is a pure function of model indices and vectors (no store), so the benchmark
(``benchmarks/bench_cold_start_serving.py``) runs the served code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.retrieval.base import sorted_unique

SearchFn = Callable[[NDArray[np.float32], int], tuple[NDArray[np.int64], NDArray[np.float32]]]
"""ANN search: (query vector, k) -> (item indices, cosines), best first, -1 padded."""


class ColdStartConfig(BaseModel):
    """How new users and new items are served (``[serve.cold_start]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="serve cold profiles and place new items")
    max_history: int = Field(
        default=0, ge=0, le=20, description="users with at most this many interactions get "
        "the cold profile when they have queries, picked categories or attributes (longer "
        "histories get the trained feed)")
    queries: int = Field(default=5, ge=0, le=50, description="last search queries read")
    profile_weight: float = Field(default=1.0, ge=0, description="weight of the profile match")
    popularity_weight: float = Field(
        default=0.3, ge=0, description="weight of (attribute-conditioned) log popularity "
        "next to a profile; alone it is the whole score")
    history_decay: float = Field(default=0.8, gt=0, le=1,
                                 description="weight of a history item or query d steps back")
    pool: int = Field(default=200, ge=10, le=5000,
                      description="ANN candidates per profile (also the rank window of new items)")
    attributes: list[str] | None = Field(
        default=None, description="user attribute keys that condition popularity; default: "
        "every key with scalar values and at most max_values distinct values")
    max_values: int = Field(default=50, ge=2, description="more distinct values than this: "
                            "not a group attribute (an id, a free-text field)")
    shrinkage: float = Field(
        default=10.0, ge=0, description="pseudo-users of global popularity added to a group: "
        "a group of n users weighs n / (n + shrinkage)")
    min_group_users: int = Field(
        default=5, ge=1, description="smaller groups condition nothing (noise, and a "
        "group's popularity would describe its few members)")
    window_days: float | None = Field(
        default=180.0, gt=0, description="only interactions this recent count for groups "
        "(ignored for ordinal-time stores)")
    refresh_seconds: float = Field(default=600.0, ge=1.0,
                                   description="how often group popularity is recomputed")
    interests_key: str = Field(
        default="interests", description="user attribute holding onboarding category picks")
    new_items: int = Field(default=2, ge=0, le=20,
                           description="new (untouched) items placed into one list at most")
    neighbours: int = Field(default=5, ge=1, le=50,
                            description="trained look-alikes a new item's cart scores come from")


# ---- popularity -----------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """Users sharing one attribute value: their count and per-item distribution (sparse)."""

    key: str
    value: str
    users: int
    items: NDArray[np.int64]
    """Item indices, ascending."""
    share: NDArray[np.float64]
    """``items``' share of the group's (distinct user, item) pairs; sums to 1."""
    order: NDArray[np.int64]
    """Positions into ``items`` by share, largest first."""

    def values(self, items: NDArray[np.int64]) -> NDArray[np.float64]:
        """The group's share of each of ``items`` (0 where it has none)."""
        pos = np.searchsorted(self.items, items)
        pos = np.minimum(pos, max(self.items.shape[0] - 1, 0))
        hit = (self.items[pos] == items) if self.items.shape[0] else np.zeros(len(items), bool)
        return np.where(hit, self.share[pos] if self.items.shape[0] else 0.0, 0.0)


@dataclass
class PopularityMix:
    """A popularity distribution over the model items: global ``base`` (``order``: items by
    it, most popular first), shrunk toward each of ``groups`` by the group's weight
    ``n / (n + shrinkage)`` and averaged over them. Values are computed for candidates only
    (no per-request pass over the catalog)."""

    base: NDArray[np.float64]
    order: NDArray[np.int64]
    groups: list[tuple[Group, float]] = field(default_factory=list)

    @classmethod
    def of(cls, base: NDArray[np.float64]) -> PopularityMix:
        return cls(base, np.argsort(-base, kind="stable").astype(np.int64))

    def with_groups(self, groups: list[tuple[Group, float]]) -> PopularityMix:
        return PopularityMix(self.base, self.order, groups)

    def values(self, items: NDArray[np.int64]) -> NDArray[np.float64]:
        items = np.asarray(items, np.int64)
        n = self.base.shape[0]
        out = np.where(items < n, self.base[np.minimum(items, max(n - 1, 0))], 0.0) \
            if n else np.zeros(len(items))
        if self.groups:
            out = out * (1.0 - float(np.mean([w for _, w in self.groups])))
            for g, w in self.groups:
                out = out + w / len(self.groups) * g.values(items)
        return np.asarray(out, np.float64)

    def top(self, k: int, allowed: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Candidates for the ``k`` most popular allowed items: the first ``k`` allowed of
        the global order and of each group's own order."""
        out = [_first_allowed(self.order, k, allowed)]
        out += [_first_allowed(g.items[g.order], k, allowed) for g, _ in self.groups]
        return np.concatenate(out)

    def lift(self, item: int) -> tuple[Group, float] | None:
        """The group that raises ``item`` most above global popularity, with that ratio."""
        best: tuple[Group, float] | None = None
        base = float(self.base[item]) if item < self.base.shape[0] else 0.0
        for g, _ in self.groups:
            share = float(g.values(np.asarray([item], np.int64))[0])
            ratio = share / max(base, 1e-12)
            if share > 0 and (best is None or ratio > best[1]):
                best = (g, ratio)
        return best


def _first_allowed(order: NDArray[np.int64], k: int, allowed: NDArray[np.bool_]
                   ) -> NDArray[np.int64]:
    """The first ``k`` items of ``order`` that are allowed (reading a few blocks of it)."""
    order = order[order < allowed.shape[0]]
    got: list[NDArray[np.int64]] = []
    start, have, step = 0, 0, 4 * k
    while have < k and start < order.shape[0]:
        block = order[start : start + step]
        ok = block[allowed[block]]
        got.append(ok)
        have += ok.shape[0]
        start += step
        step *= 4
    return np.concatenate(got)[:k] if got else np.empty(0, np.int64)


# ---- profiles -------------------------------------------------------------------------
@dataclass
class Component:
    """One thing a cold profile is made of: a history item, a query or a picked category."""

    kind: str
    """``history``, ``query`` or ``interest``."""
    name: str
    """The item id, query text or category."""
    vector: NDArray[np.float32]
    weight: float
    members: NDArray[np.int64] | None = None
    """Interest only: the category's item indices (they match it fully)."""


@dataclass
class ColdProfile:
    """What a cold user has: profile components and a popularity distribution."""

    components: list[Component] = field(default_factory=list)
    popularity: PopularityMix | None = None
    """Global popularity, conditioned on the user's attributes when they have groups."""

    @property
    def grouped(self) -> bool:
        return self.popularity is not None and bool(self.popularity.groups)

    @property
    def has_text(self) -> bool:
        return any(c.weight > 0 and np.any(c.vector) for c in self.components)

    def vector(self) -> NDArray[np.float32] | None:
        """The profile: each kind's weighted mean direction, the kinds summed, normalised."""
        total: NDArray[np.float32] | None = None
        for kind in ("history", "query", "interest"):
            part = [c for c in self.components if c.kind == kind and c.weight > 0]
            if not part:
                continue
            v = np.sum([c.weight * c.vector for c in part], axis=0).astype(np.float32)
            norm = float(np.linalg.norm(v))
            if norm > 0:
                total = v / norm if total is None else total + v / norm
        if total is None:
            return None
        norm = float(np.linalg.norm(total))
        return (total / norm).astype(np.float32) if norm > 0 else None


def recency_weights(n: int, decay: float) -> NDArray[np.float64]:
    """Weights of ``n`` things oldest first: the newest 1, each step back ``decay`` times."""
    out: NDArray[np.float64] = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return out


# ---- scoring a cold user --------------------------------------------------------------
@dataclass
class Scored:
    """A ranked cold list: item indices, scores, each item's main part and all parts."""

    items: NDArray[np.int64]
    scores: NDArray[np.float32]
    main: list[str]
    parts: list[dict[str, float]]


def _minmax(x: NDArray[np.float64]) -> NDArray[np.float64]:
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def log_popularity(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(1 + p / smallest positive p): 0 for unseen items, then log-scaled, so a profile
    match is not drowned by the few head items raw popularity puts near 1 alone."""
    pos = p[p > 0]
    if pos.size == 0:
        return np.zeros_like(p)
    out: NDArray[np.float64] = np.log1p(p / float(pos.min()))
    return out


def score_cold(profile: ColdProfile, vectors: NDArray[np.float32] | None,
               search: SearchFn | None, n: int, allowed: NDArray[np.bool_],
               config: ColdStartConfig) -> Scored:
    """The best ``n`` allowed items for a cold profile (see the module doc). ``vectors`` are
    the centred item vectors and ``search`` an ANN over them (both None without a semantic
    model); ``allowed`` masks every model item (False: seen, blocked or unknown)."""
    n_items = allowed.shape[0]
    pop = profile.popularity
    vec = profile.vector() if vectors is not None else None
    interest = [c for c in profile.components if c.kind == "interest" and c.members is not None]
    cands: list[NDArray[np.int64]] = []
    k = max(config.pool, n)
    if vec is not None and search is not None:
        idx, _ = search(vec, k + min(int((~allowed).sum()), k))  # room for excluded ones
        cands.append(idx[idx >= 0])
    for c in interest:
        m = c.members[c.members < n_items] if c.members is not None else np.empty(0, np.int64)
        m = m[allowed[m]]
        if m.shape[0] > k:
            m = m[np.argpartition(-pop.values(m), k - 1)[:k]] if pop is not None else m[:k]
        cands.append(m)
    if pop is not None:
        cands.append(pop.top(k, allowed))
    cand = sorted_unique(np.concatenate(cands).astype(np.int64)) if cands else \
        np.empty(0, np.int64)
    cand = cand[(cand < n_items)]
    cand = cand[allowed[cand]]
    if cand.shape[0] == 0:
        return Scored(cand, np.empty(0, np.float32), [], [])
    # per component: match of each candidate (members of a picked category match fully)
    kinds: list[tuple[str, NDArray[np.float64]]] = []
    if vec is not None and vectors is not None:
        # float32 matrix-vector products over the candidates only: OpenBLAS goes
        # multi-threaded on larger products, which took milliseconds on a busy machine
        cv = vectors[np.minimum(cand, vectors.shape[0] - 1)]
        cv[cand >= vectors.shape[0]] = 0.0
        for kind in ("history", "query", "interest"):
            part = [c for c in profile.components if c.kind == kind and c.weight > 0]
            if not part:
                continue
            w = np.asarray([c.weight for c in part], np.float32)
            if kind != "interest":  # the weighted mean match is the match of the weighted mean
                mean = (w[:, None] * np.vstack([c.vector for c in part])).sum(axis=0) / w.sum()
                kinds.append((kind, (cv @ mean.astype(np.float32)).astype(np.float64)))
                continue
            m = np.zeros(cand.shape[0])
            for c, wc in zip(part, w, strict=True):
                one = (cv @ c.vector.astype(np.float32)).astype(np.float64)
                if c.members is not None:
                    one[np.isin(cand, c.members)] = 1.0
                m += float(wc) * one
            kinds.append((kind, m / float(w.sum())))
    elif interest:
        member = np.zeros(cand.shape[0])
        for c in interest:
            member[np.isin(cand, c.members if c.members is not None else [])] = 1.0
        kinds.append(("interest", member))
    total = np.zeros(cand.shape[0])
    parts: dict[str, NDArray[np.float64]] = {}
    if kinds:
        match = np.sum([m for _, m in kinds], axis=0)
        scaled = config.profile_weight * _minmax(match)
        share = np.vstack([np.clip(m, 0, None) for _, m in kinds])
        share = share / np.maximum(share.sum(axis=0), 1e-12)
        for (kind, _), s in zip(kinds, share, strict=True):
            parts[kind] = scaled * s
        total += scaled
    pop_name = "popular_with" if profile.grouped else "popularity"
    pop_weight = config.popularity_weight if kinds else 1.0
    if pop_weight > 0 and pop is not None:
        parts[pop_name] = pop_weight * _minmax(log_popularity(pop.values(cand)))
        total += parts[pop_name]
    order = np.lexsort((cand, -total))[:n]
    names = list(parts)
    stack = np.vstack([parts[p][order] for p in names]) if names else np.zeros((0, len(order)))
    main = [names[int(np.argmax(stack[:, j]))] if names and stack[:, j].max() > 0
            else pop_name for j in range(len(order))]
    return Scored(cand[order], total[order].astype(np.float32), main,
                  [{p: round(float(stack[i, j]), 6) for i, p in enumerate(names)}
                   for j in range(len(order))])


# ---- new items into a ranked list -----------------------------------------------------
@dataclass(frozen=True)
class Placed:
    """A list entry after :func:`place_new`: ``new`` marks a placed item, ``match`` its
    semantic match and ``rank`` the rank that match has among the trained items."""

    item: int
    score: float
    new: bool = False
    match: float = 0.0
    rank: int = -1


def place_new(ranked: Sequence[tuple[int, float]], cand: NDArray[np.int64],
              sims: NDArray[np.float32], untouched: NDArray[np.bool_],
              allowed: NDArray[np.bool_], max_new: int) -> list[Placed]:
    """``ranked`` (item, score; best first, one surface's list) with up to ``max_new``
    untouched items inserted at the rank their text match has among the trained items.

    ``cand``/``sims`` are the semantic top candidates for the same profile (best first, e.g.
    ANN top-``pool``); an untouched allowed one of them whose match beats all but ``r`` of the
    trained allowed ones goes to position ``r`` of the list (taken out first if the model
    had it lower), with a score between its new neighbours', so later stages (diversity,
    exploration) read one scale. Matches below every trained candidate place nothing."""
    out = [Placed(int(i), float(s)) for i, s in ranked]
    if max_new <= 0 or cand.shape[0] == 0:
        return out
    ok = (cand >= 0) & (cand < allowed.shape[0])
    cand, sims = cand[ok], sims[ok]
    ok = allowed[cand]
    cand, sims = cand[ok], sims[ok]
    cold = untouched[np.minimum(cand, untouched.shape[0] - 1)] & (cand < untouched.shape[0])
    cold |= cand >= untouched.shape[0]
    trained = np.sort(sims[~cold])[::-1]
    if trained.shape[0] == 0:  # nothing the model knows to rank against (no events yet)
        return out
    picks = [(int(i), float(s)) for i, s in zip(cand[cold], sims[cold], strict=True)]
    picks.sort(key=lambda p: (-p[1], p[0]))
    listed = {p.item: k for k, p in enumerate(out)}
    placed: list[tuple[int, float, int]] = []
    for item, s in picks[:max_new]:
        rank = int(np.searchsorted(-trained, -s, side="left"))  # trained matches above it
        if rank >= trained.shape[0]:
            continue  # no better than anything the model knows: not placed
        if listed.get(item, rank + 1) <= rank:
            continue  # the model already ranks it at least as high
        placed.append((item, s, rank))
    if not placed:
        return out
    taken = {p[0] for p in placed}
    base = [p for p in out if p.item not in taken]
    for shift, (item, s, rank) in enumerate(sorted(placed, key=lambda p: (p[2], -p[1]))):
        pos = min(rank + shift, len(base))
        above = base[pos - 1].score if pos > 0 else None
        below = base[pos].score if pos < len(base) else None
        if above is not None and below is not None:
            score = (above + below) / 2.0
        elif above is not None:
            score = above - max(abs(above) * 1e-3, 1e-6)
        elif below is not None:
            score = below + max(abs(below) * 1e-3, 1e-6)
        else:
            score = s
        base.insert(pos, Placed(item, score, True, s, rank))
    return base


def text_neighbours(search: SearchFn, vectors: NDArray[np.float32], n_trained: int, k: int
                    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """For each row of ``vectors`` (new items' centred vectors), its ``k`` most similar
    trained items (index < ``n_trained``, found by the ANN ``search``) and weights with
    ``sum(w) = max(0, best cosine)``: a score imputed as ``sum(w * score(neighbours))`` is
    the look-alikes' mean score, discounted by how alike the closest one is. Missing
    neighbours are -1 with weight 0 (a zero vector has none)."""
    out_i = np.full((vectors.shape[0], k), -1, np.int64)
    out_w = np.zeros((vectors.shape[0], k), np.float32)
    if vectors.shape[0] == 0 or n_trained == 0:
        return out_i, out_w
    idx, val = search(np.ascontiguousarray(vectors, np.float32), 4 * k + 20)
    for r in range(vectors.shape[0]):
        if not np.any(vectors[r]):
            continue
        ok = (idx[r] >= 0) & (idx[r] < n_trained) & (val[r] > 0)
        top, sim = idx[r][ok][:k], val[r][ok][:k].astype(np.float64)
        if sim.shape[0] == 0:
            continue
        out_i[r, : top.shape[0]] = top
        out_w[r, : top.shape[0]] = sim / sim.sum() * min(float(sim[0]), 1.0)
    return out_i, out_w


_ann_threads = threading.local()


def single_threaded_ann() -> None:
    """Make faiss search with one OpenMP thread in the calling thread (once per thread).
    faiss spreads even one query over OpenMP threads; on the shared 2-core machine that took
    45 ms per top-400 search of 17k vectors, against 2.5 ms single-threaded."""
    if not getattr(_ann_threads, "done", False):
        import faiss

        faiss.omp_set_num_threads(1)
        _ann_threads.done = True
