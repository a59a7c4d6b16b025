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
  no cart item is known to the models (an empty cart, or only items posted after training).

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
class CartScores:
    """One cart's scores: the weighted total and each signal's weighted part."""

    total: NDArray[np.float32]
    parts: dict[str, NDArray[np.float32]]
    cart: History
    cart_weights: NDArray[np.float32]


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
        assert self.cooccurrence is not None
        m: sp.csr_matrix = self.cooccurrence.matrix_
        w = (decay ** np.arange(len(seq) - 1, -1, -1, dtype=np.float64)).astype(np.float32)
        if len(seq) == 0:
            return np.zeros(self.n_items, np.float32), w
        row = np.asarray(m[seq].T @ w, dtype=np.float32).ravel()
        return self._pad(row), w

    def score(self, cart: History, history: History | None = None,
              candidates: NDArray[np.bool_] | None = None) -> CartScores:
        """Scores of all items for ``cart`` (indices, add order) and an optional user
        ``history`` (oldest first). ``candidates`` marks the items that may be returned; each
        signal is normalised over those (default: every item not in the cart)."""
        c = self.config
        n = self.n_items
        cart = np.asarray(cart, dtype=np.int64)
        hist = (np.asarray(history, dtype=np.int64) if history is not None
                else np.empty(0, np.int64))
        hist = hist[(hist >= 0) & (hist < n)]
        if candidates is None:
            candidates = np.ones(n, dtype=bool)
            candidates[cart] = False
        cart = cart[-c.max_cart_items:]
        raw: dict[str, NDArray[np.float32]] = {}
        cart_w = np.zeros(0, np.float32)
        known = cart[cart < (self.cooccurrence.n_items_ if self.cooccurrence else 0)]
        if self.cooccurrence is not None and c.cooccurrence > 0 and len(known):
            raw["cooccurrence"], cart_w = self._cooc(known, c.cart_decay)
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
        weights = {s: float(getattr(c, s)) for s in SIGNALS}
        parts = {name: weights[name] * _minmax(s, candidates) for name, s in raw.items()}
        parts = {name: p for name, p in parts.items() if p.any()}  # signals that said something
        total = np.zeros(n, np.float32)
        for p in parts.values():
            total += p
        # a faint popularity order among items no signal reached (never outranks a signal)
        total += 1e-6 * _minmax(self._pop, candidates)
        return CartScores(total, parts, known, cart_w)

    def top(self, scores: CartScores, n: int,
            candidates: NDArray[np.bool_]) -> list[tuple[int, float, str, int | None]]:
        """Best ``n`` candidates as (item index, score, main signal, cart item index behind
        the co-occurrence part or None)."""
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
            inside = idx < cooc.n_items_
            contrib = np.zeros((len(scores.cart), len(idx)), np.float32)
            if inside.any():
                rows = cooc.matrix_[scores.cart][:, idx[inside]].toarray()
                contrib[:, inside] = rows * scores.cart_weights[:, None]
            arg = contrib.argmax(axis=0)
            because = [int(scores.cart[a]) if contrib[a, j] > 0 else None
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
        bundle = recommender.bundle
        self.scorer = CartScorer.from_generators(
            bundle.generators, cold_start=bundle.manifest.config.cold_start, config=self.config)

    def recommend(self, items: Sequence[str], user_id: str | None = None,
                  n: int = 10) -> CartResult:
        """The ``n`` best items to add to a cart holding ``items`` (in add order)."""
        rec = self.recommender
        n_model = self.scorer.n_items
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
        cart = idx[in_model]
        history = rec.history(user_id) if user_id else np.empty(0, np.int64)
        history = history[history < n_model]
        candidates = ~np.asarray(rec.blocked[:n_model], dtype=bool)
        if candidates.shape[0] < n_model:
            candidates = np.pad(candidates, (0, n_model - candidates.shape[0]),
                                constant_values=True)
        candidates[cart] = False
        scores = self.scorer.score(cart, history, candidates)
        top = self.scorer.top(scores, n, candidates)
        names = self._names([rec.items.external(b) for *_, b in top if b is not None])
        out = []
        for i, v, source, b in top:
            because = rec.items.external(b) if b is not None and source == "cooccurrence" \
                else None
            reason = (f"often bought with {names.get(because, because)}" if because
                      else _REASONS.get(source, "often bought with items in your cart"))
            out.append(CartRecommendation(rec.items.external(i), v, source, reason, because))
        return CartResult(
            items=out, cart=rec.items.externals(cart), unscored=outside,
            cold_start=not ({"cooccurrence", "sequential"} & scores.parts.keys()),
            personalized=bool({"user_cooccurrence", "user_repeat"} & scores.parts.keys()),
            sources=sorted(scores.parts, key=SIGNALS.index) or ["popularity"],
        )

    def _names(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of the named cart items (their id when they have none)."""
        if not item_ids:
            return {}
        catalog = self.recommender.catalog.items(sorted(set(item_ids)))
        return {e: (catalog[e].title or e) if e in catalog else e for e in item_ids}
