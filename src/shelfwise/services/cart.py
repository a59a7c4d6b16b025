"""Cart completion: the next items to add, given the items already in the cart.

The cart is read as an ordered history (add order). Its signals, each min-max normalised over
the candidate items and weighted by :class:`CartConfig`:

* ``cooccurrence`` - the bundle's item-item co-occurrence neighbours of every cart item, the
  last-added item counting most (``cart_decay`` per step back). It also names, for each answer,
  the cart item that contributed most ("often bought with X").
* ``sequential`` - the bundle's sequential next-item model (a generator named ``sasrec`` or
  ``sasrec_text``) when the bundle has one; it reads the cart after the user's history.
* ``user_cooccurrence`` / ``user_repeat`` - for a known user, the co-occurrence neighbours of
  their past items and their past items themselves ("buy again"); weak by default, because a
  cart is a much sharper statement of intent than an old history.
* ``popularity`` - the bundle's cold-start generator: a small prior, and the whole answer when
  no cart item is known to the models (an empty cart, or only items posted after training
  that have no look-alikes).

Items posted after training have no row in any model. With :class:`LookAlikes` (each such
item's most similar trained items by text, weighted by similarity; see
:func:`~shelfwise.services.cold_start.text_neighbours`) they take part at once: as a candidate
an item's raw signal values are its look-alikes' weighted values ("shoppers buy items like it
with this cart"), and in the cart it reads as its look-alikes (their co-occurrence rows).

Cart items and unavailable items are never returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.data.interactions import History
from shelfwise.exceptions import ConfigError, NotFoundError
from shelfwise.retrieval.base import BaseGenerator, top_k
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.services.recommender import Recommender

#: Names of the signals, in the order their weights appear in CartConfig.
SIGNALS = ("cooccurrence", "sequential", "user_cooccurrence", "user_repeat", "popularity")


class CartConfig(BaseModel):
    """Weights of the cart signals and how the cart is read (``[serve.cart]``; unknown keys
    are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cooccurrence: float = Field(default=1.0, ge=0, description="weight of co-occurrence "
                                "with the cart items")
    sequential: float = Field(default=0.5, ge=0, description="weight of the sequential model "
                              "(used only when the bundle has one)")
    user_cooccurrence: float = Field(default=0.1, ge=0, description="weight of co-occurrence "
                                     "with the user's past items")
    user_repeat: float = Field(default=0.0, ge=0, description="weight of the user's own past "
                               "items (buy again); raise it for shops of consumables")
    popularity: float = Field(default=0.02, ge=0, description="weight of the popularity prior")
    cart_decay: float = Field(default=0.9, gt=0, le=1, description="co-occurrence weight of "
                              "a cart item d adds before the last one: cart_decay**d")
    history_decay: float = Field(default=0.98, gt=0, le=1, description="weight of a past item "
                                 "d steps back in the user's history (user_* signals)")
    max_cart_items: int = Field(default=50, ge=1, description="only the last ones are read")
    sequential_generators: tuple[str, ...] = Field(
        default=("sasrec_text", "sasrec"),
        description="bundle generator names taken as the sequential model, first found wins")
    sequence_with_history: bool = Field(
        default=True, description="feed the sequential model the user's history, then the cart")


@dataclass(frozen=True)
class LookAlikes:
    """Items ``start, start + 1, ...`` (beyond the models) as weighted sums of trained items:
    row ``r`` of ``neighbours`` (-1 = none) and ``weights`` describes item ``start + r``."""

    start: int
    neighbours: NDArray[np.int64]
    weights: NDArray[np.float32]

    @property
    def stop(self) -> int:
        return self.start + int(self.neighbours.shape[0])

    def impute(self, row: NDArray[np.float32]) -> NDArray[np.float32]:
        """Values of the items beyond the models from a raw row over trained items."""
        nb = self.neighbours
        ok = (nb >= 0) & (nb < row.shape[0])
        vals = np.where(ok, row[np.where(ok, nb, 0)], 0.0) * self.weights
        out: NDArray[np.float32] = vals.sum(axis=1).astype(np.float32)
        return out

    def rows(self, item: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The trained look-alikes of ``item`` and their weights (empty when none)."""
        r = item - self.start
        if r < 0 or r >= self.neighbours.shape[0]:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        ok = self.neighbours[r] >= 0
        return self.neighbours[r][ok], self.weights[r][ok]


@dataclass(frozen=True)
class CartScores:
    """One cart's scores: the weighted total and each signal's weighted part. ``cart`` are
    the cart items that gave a signal (add order); ``cart_rows``/``cart_weights`` the trained
    items whose co-occurrence rows were summed, with their weights, and ``row_owner`` the cart
    item each row stands for (itself, or a posted item it is a look-alike of)."""

    total: NDArray[np.float32]
    parts: dict[str, NDArray[np.float32]]
    cart: History
    cart_weights: NDArray[np.float32]
    cart_rows: History
    row_owner: History


class CartScorer:
    """Scores every item for a cart (model indices), from fitted generators.

    Independent of the store and the HTTP layer, so benchmarks score carts with exactly the code
    the endpoint runs.
    """

    def __init__(
        self,
        *,
        cooccurrence: Cooccurrence | None,
        popularity: BaseGenerator,
        sequential: BaseGenerator | None = None,
        sequential_name: str | None = None,
        config: CartConfig | None = None,
    ) -> None:
        self.config = config or CartConfig()
        self.cooccurrence = cooccurrence
        self.popularity = popularity
        self.sequential = sequential
        self.sequential_name = sequential_name if sequential is not None else None
        self.n_items = max(g.n_items_ for g in (cooccurrence, popularity, sequential)
                           if g is not None)
        self._pop = self._pad(popularity.score([np.empty(0, np.int64)])[0])

    @classmethod
    def from_generators(cls, generators: Mapping[str, BaseGenerator], *,
                        cold_start: str = "popularity",
                        config: CartConfig | None = None) -> CartScorer:
        """Pick the signals out of a bundle's generators by name."""
        config = config or CartConfig()
        if cold_start not in generators:
            raise ConfigError(f"cart completion needs the cold-start generator {cold_start!r}; "
                              f"the bundle has {sorted(generators)}")
        cooc = generators.get(Cooccurrence.name)
        seq_name = next((n for n in config.sequential_generators if n in generators), None)
        return cls(
            cooccurrence=cooc if isinstance(cooc, Cooccurrence) else None,
            popularity=generators[cold_start],
            sequential=generators[seq_name] if seq_name else None,
            sequential_name=seq_name,
            config=config,
        )

    @property
    def signals(self) -> list[str]:
        """Signals this scorer can use (weight > 0 and the model present)."""
        c = self.config
        have = {"cooccurrence": self.cooccurrence is not None and c.cooccurrence > 0,
                "sequential": self.sequential is not None and c.sequential > 0,
                "user_cooccurrence": self.cooccurrence is not None and c.user_cooccurrence > 0,
                "user_repeat": c.user_repeat > 0,
                "popularity": c.popularity > 0}
        return [s for s in SIGNALS if have[s]]

    def _pad(self, s: NDArray[np.floating]) -> NDArray[np.float32]:
        s = np.where(np.isfinite(s), s, 0.0).astype(np.float32)
        if s.shape[0] < self.n_items:
            s = np.pad(s, (0, self.n_items - s.shape[0]))
        return s

    def _cooc(self, seq: History, decay: float) -> tuple[NDArray[np.float32],
                                                         NDArray[np.float32]]:
        """Decay-weighted sum of the co-occurrence rows of ``seq`` (last item weight 1)."""
        w = (decay ** np.arange(len(seq) - 1, -1, -1, dtype=np.float64)).astype(np.float32)
        return self._rows_sum(seq, w), w

    def _rows_sum(self, rows: History, w: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.cooccurrence is not None
        if len(rows) == 0:
            return np.zeros(self.n_items, np.float32)
        m: sp.csr_matrix = self.cooccurrence.matrix_
        return self._pad(np.asarray(m[rows].T @ w, dtype=np.float32).ravel())

    def _cart_rows(self, cart: History, look: LookAlikes | None
                   ) -> tuple[History, NDArray[np.float32], History]:
        """The trained rows a cart reads as (a posted item: its look-alikes), their weights
        (``cart_decay`` per add back, times the look-alike weight) and owning cart items."""
        n_cooc = self.cooccurrence.n_items_ if self.cooccurrence is not None else 0
        decay = self.config.cart_decay ** np.arange(len(cart) - 1, -1, -1, dtype=np.float64)
        rows: list[int] = []
        weights: list[float] = []
        owner: list[int] = []
        for item, d in zip(cart.tolist(), decay.tolist(), strict=True):
            if item < n_cooc:
                rows.append(item)
                weights.append(d)
                owner.append(item)
            elif look is not None:
                nb, w = look.rows(item)
                keep = nb < n_cooc
                rows += nb[keep].tolist()
                weights += (d * w[keep]).tolist()
                owner += [item] * int(keep.sum())
        return (np.asarray(rows, np.int64), np.asarray(weights, np.float32),
                np.asarray(owner, np.int64))

    def score(self, cart: History, history: History | None = None,
              candidates: NDArray[np.bool_] | None = None,
              look_alikes: LookAlikes | None = None) -> CartScores:
        """Scores of all items for ``cart`` (indices, add order) and an optional user
        ``history`` (oldest first). ``candidates`` marks the items that may be returned; each
        signal is normalised over those (default: every item not in the cart).
        ``look_alikes`` (starting at :attr:`n_items`) extends every signal to the items
        posted after training, and reads posted cart items as their look-alikes."""
        c = self.config
        n = self.n_items
        look = look_alikes if look_alikes is not None and look_alikes.start == n else None
        total_n = look.stop if look is not None else n
        cart = np.asarray(cart, dtype=np.int64)
        hist = (np.asarray(history, dtype=np.int64) if history is not None
                else np.empty(0, np.int64))
        hist = hist[(hist >= 0) & (hist < n)]
        if candidates is None:
            candidates = np.ones(total_n, dtype=bool)
            candidates[cart[cart < total_n]] = False
        cart = cart[-c.max_cart_items:]
        raw: dict[str, NDArray[np.float32]] = {}
        rows, cart_w, owner = self._cart_rows(cart, look)
        known = np.asarray(list(dict.fromkeys(owner.tolist())), np.int64)
        if self.cooccurrence is not None and c.cooccurrence > 0 and len(rows):
            raw["cooccurrence"] = self._rows_sum(rows, cart_w)
        if self.sequential is not None and c.sequential > 0 and len(cart):
            seq = np.concatenate([hist, cart]) if c.sequence_with_history else cart
            seq = seq[seq < self.sequential.n_items_]
            if len(seq):
                raw["sequential"] = self._pad(self.sequential.score([seq])[0])
        if len(hist):
            if self.cooccurrence is not None and c.user_cooccurrence > 0:
                known_h = hist[hist < self.cooccurrence.n_items_][-200:]
                raw["user_cooccurrence"] = self._cooc(known_h, c.history_decay)[0]
            if c.user_repeat > 0:
                w = c.history_decay ** np.arange(len(hist) - 1, -1, -1, dtype=np.float64)
                raw["user_repeat"] = np.bincount(hist, weights=w, minlength=n)[:n].astype(
                    np.float32)
        if c.popularity > 0:
            raw["popularity"] = self._pop
        pop = self._pop
        if look is not None:  # posted items: their look-alikes' values
            raw = {name: np.concatenate([r, look.impute(r)]) for name, r in raw.items()}
            pop = np.concatenate([pop, look.impute(pop)])
        weights = {s: float(getattr(c, s)) for s in SIGNALS}
        parts = {name: weights[name] * _minmax(s, candidates) for name, s in raw.items()}
        parts = {name: p for name, p in parts.items() if p.any()}  # signals that said something
        total = np.zeros(total_n, np.float32)
        for p in parts.values():
            total += p
        # a faint popularity order among items no signal reached (never outranks a signal)
        total += 1e-6 * _minmax(pop, candidates)
        return CartScores(total, parts, known, cart_w, rows, owner)

    def top(self, scores: CartScores, n: int, candidates: NDArray[np.bool_],
            look_alikes: LookAlikes | None = None) -> list[tuple[int, float, str, int | None]]:
        """Best ``n`` candidates as (item index, score, main signal, cart item index behind
        the co-occurrence part or None; a posted candidate's part is its look-alikes')."""
        masked = np.where(candidates, scores.total, -np.inf).astype(np.float32)
        idx, val = top_k(masked[None, :], n)
        keep = idx[0] >= 0
        idx, val = idx[0][keep], val[0][keep]
        names = list(scores.parts)
        if names:
            stack = np.stack([scores.parts[s][idx] for s in names])
            best = stack.argmax(axis=0)
            main = [names[int(b)] if stack[int(b), j] > 0 else "popularity"
                    for j, b in enumerate(best)]
        else:
            main = ["popularity"] * len(idx)
        because: list[int | None] = [None] * len(idx)
        cooc = self.cooccurrence
        if cooc is not None and len(scores.cart_weights) and len(idx):
            # each candidate as trained columns: itself, or a posted item's look-alikes
            cols: list[int] = []
            col_w: list[float] = []
            col_of: list[int] = []
            for j, i in enumerate(idx.tolist()):
                nb, w = ((np.asarray([i]), np.ones(1, np.float32)) if i < cooc.n_items_ else
                         look_alikes.rows(i) if look_alikes is not None else
                         (np.empty(0, np.int64), np.empty(0, np.float32)))
                keep = nb < cooc.n_items_
                cols += nb[keep].tolist()
                col_w += w[keep].tolist()
                col_of += [j] * int(keep.sum())
            per_row = np.zeros((len(scores.cart_rows), len(idx)), np.float32)
            if cols:
                sub = cooc.matrix_[scores.cart_rows][:, cols].toarray() * np.asarray(col_w)
                np.add.at(per_row.T, np.asarray(col_of), sub.T)
            per_row *= scores.cart_weights[:, None]
            owners = scores.cart
            contrib = np.zeros((len(owners), len(idx)), np.float32)
            pos = {int(o): k for k, o in enumerate(owners)}
            np.add.at(contrib, np.asarray([pos[int(o)] for o in scores.row_owner], np.int64),
                      per_row)
            arg = contrib.argmax(axis=0)
            because = [int(owners[a]) if contrib[a, j] > 0 else None
                       for j, a in enumerate(arg)]
        return [(int(i), float(v), m, b)
                for i, v, m, b in zip(idx, val, main, because, strict=True)]


def _minmax(s: NDArray[np.float32], candidates: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``s`` scaled to [0, 1] over the candidates (0 where it is constant there)."""
    if not candidates.any():
        return np.zeros_like(s)
    vals = s[candidates]
    low, high = float(vals.min()), float(vals.max())
    if high <= low:
        return np.zeros_like(s)
    out: NDArray[np.float32] = np.clip((s - low) / (high - low), 0.0, None).astype(np.float32)
    return out


@dataclass(frozen=True)
class CartRecommendation:
    item_id: str
    score: float
    source: str
    """The signal that contributed most (cooccurrence, sequential, user_…, popularity)."""
    reason: str
    because_of: str | None = None
    """The cart item the reason names (the largest co-occurrence contribution)."""


@dataclass
class CartResult:
    items: list[CartRecommendation]
    cart: list[str]
    """Cart items the models know, in add order: the ones that shaped the answer."""
    unscored: list[str] = field(default_factory=list)
    """Cart items in the catalog but posted after the models were trained (no signal yet)."""
    cold_start: bool = False
    personalized: bool = False
    sources: list[str] = field(default_factory=list)


_REASONS = {
    "sequential": "often added next to carts like this one",
    "user_cooccurrence": "goes with what you bought before",
    "user_repeat": "you bought it before",
    "popularity": "popular with shoppers",
}


class CartService:
    """Cart completion over the live recommender: its bundle, catalog state and user histories.

    Unknown cart item ids (in neither the models nor the catalog) are a
    :class:`NotFoundError` naming them: a cart is built from the shop's own catalog, so an
    unknown id is a client bug (a typo, or an item never posted), better reported than guessed.
    """

    def __init__(self, recommender: Recommender, config: CartConfig | None = None) -> None:
        self.recommender = recommender
        self.config = config or CartConfig()
        self.scorer = self._scorer(self.config)
        self._variants: dict[CartConfig, CartScorer] = {self.config: self.scorer}

    def _scorer(self, config: CartConfig) -> CartScorer:
        bundle = self.recommender.bundle
        return CartScorer.from_generators(
            bundle.generators, cold_start=bundle.manifest.config.cold_start, config=config)

    def recommend(self, items: Sequence[str], user_id: str | None = None,
                  n: int = 10, *, weights: Mapping[str, float] | None = None) -> CartResult:
        """The ``n`` best items to add to a cart holding ``items`` (in add order). Items
        posted after training are candidates, and shape the answer as cart items, through
        their look-alikes (:class:`LookAlikes`). ``weights`` replace some signal weights of
        ``[serve.cart]`` for this request (an experiment's variant)."""
        rec = self.recommender
        scorer = self.scorer
        if weights:
            config = self.config.model_copy(update=dict(weights))
            scorer = self._variants.get(config) or self._variants.setdefault(
                config, self._scorer(config))
        n_model = scorer.n_items
        look = self._look_alikes()
        n_all = look.stop if look is not None else n_model
        idx = rec.items.indices(items)
        in_model = (idx >= 0) & (idx < n_model)
        outside = [e for e, ok in zip(items, in_model, strict=True) if not ok]
        found = rec.store.get_items(outside) if outside else {}
        unknown = [e for e in outside if e not in found]
        if unknown:
            shown = ", ".join(repr(e) for e in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise NotFoundError(f"items: unknown item id(s) {shown}{more}; post them to "
                                "/v1/items first or remove them from the cart")
        cart = idx[(idx >= 0) & (idx < n_all)].astype(np.int64)
        history = rec.history(user_id) if user_id else np.empty(0, np.int64)
        history = history[history < n_model]
        candidates = ~np.asarray(rec.blocked[:n_all], dtype=bool)
        if candidates.shape[0] < n_all:
            candidates = np.pad(candidates, (0, n_all - candidates.shape[0]),
                                constant_values=True)
        candidates[cart] = False
        scores = scorer.score(cart, history, candidates, look)
        top = scorer.top(scores, n, candidates, look)
        names = self._names([rec.items.external(b) for *_, b in top if b is not None])
        out = []
        for i, v, source, b in top:
            because = rec.items.external(b) if b is not None and source == "cooccurrence" \
                else None
            if i >= n_model:  # a posted item, scored through its look-alikes
                source = "new_item"
                reason = (f"new arrival that goes with {names.get(because, because)}"
                          if because else "new arrival like items that go with your cart")
            else:
                reason = (f"often bought with {names.get(because, because)}" if because
                          else _REASONS.get(source, "often bought with items in your cart"))
            out.append(CartRecommendation(rec.items.external(i), v, source, reason, because))
        shaped = set(scores.cart.tolist())
        return CartResult(
            items=out, cart=rec.items.externals(scores.cart),
            unscored=[e for e, k in zip(items, idx, strict=True) if int(k) not in shaped
                      and not 0 <= k < n_model],
            cold_start=not ({"cooccurrence", "sequential"} & scores.parts.keys()),
            personalized=bool({"user_cooccurrence", "user_repeat"} & scores.parts.keys()),
            sources=sorted(scores.parts, key=SIGNALS.index) or ["popularity"],
        )

    def _look_alikes(self) -> LookAlikes | None:
        """The posted items' trained look-alikes (None when nothing was posted)."""
        rec = self.recommender
        start = self.scorer.n_items
        if rec.n_trained != start or len(rec.items) <= start:
            return None
        posted = np.arange(start, len(rec.items), dtype=np.int64)
        nb, w = rec.new_item_neighbours(posted)
        return LookAlikes(start, nb, w)

    def _names(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of the named cart items (their id when they have none)."""
        if not item_ids:
            return {}
        catalog = self.recommender.catalog.items(sorted(set(item_ids)))
        return {e: (catalog[e].title or e) if e in catalog else e for e in item_ids}
