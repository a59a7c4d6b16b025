"""Search filters as boolean masks over the catalog: category path, brand, price range.

Inverted maps from each lower-cased category level, each path prefix of two or more levels and
each lower-cased brand to the positions of the items that have it are kept as items arrive, so
a filter costs numpy work on the matching positions, not a Python loop over the catalog. They
are saved as CSR arrays (:meth:`CatalogFilter.state`) and loaded back memory-mapped.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shelfwise.exceptions import ConfigError
from shelfwise.search.columns import State
from shelfwise.text.bm25 import put_growing


class _Postings:
    """Key -> item positions (ascending): CSR arrays for the keys as built or loaded (the
    frozen part), lists of the positions appended since; arrays made on demand."""

    def __init__(self) -> None:
        self._keys: dict[Hashable, int] = {}  # frozen part: key -> row
        self._offsets = np.zeros(1, np.int64)
        self._positions = np.zeros(0, np.int64)
        self._lists: dict[Hashable, list[int]] = {}
        self._arrays: dict[Hashable, NDArray[np.int64]] = {}  # dropped when a key grows

    def add(self, key: Hashable, position: int) -> None:
        self._lists.setdefault(key, []).append(position)
        self._arrays.pop(key, None)

    def get(self, key: Hashable) -> NDArray[np.int64]:
        arr = self._arrays.get(key)
        if arr is None:
            row = self._keys.get(key)
            frozen = (self._positions[self._offsets[row]:self._offsets[row + 1]]
                      if row is not None else np.zeros(0, np.int64))
            more = self._lists.get(key)
            arr = frozen if not more else np.concatenate([frozen, np.asarray(more, np.int64)])
            self._arrays[key] = arr
        return arr

    def state(self) -> State:
        """Keys (strings, or lists for tuple keys) and CSR offsets into positions."""
        keys = list(dict.fromkeys([*self._keys, *self._lists]))
        lists = [self.get(k) for k in keys]
        lens = np.fromiter((len(a) for a in lists), np.int64, len(lists))
        return {"keys": [list(k) if isinstance(k, tuple) else k for k in keys],
                "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                "positions": np.concatenate(lists or [np.zeros(0, np.int64)])}

    @classmethod
    def from_state(cls, state: State) -> _Postings:
        p = cls()
        keys = [tuple(k) if isinstance(k, list) else k for k in state["keys"]]
        p._keys = {k: i for i, k in enumerate(keys)}
        p._offsets, p._positions = state["offsets"], state["positions"]
        if len(p._offsets) != len(keys) + 1 or int(p._offsets[-1]) != len(p._positions):
            raise ValueError("filter offsets do not match their keys and positions")
        return p


class CatalogFilter:
    """Which items a search may return, by category path, brand and price.

    Items are addressed by position (the search index's order) and appended with :meth:`add`.
    Category levels and brands are compared lower-cased (levels as stored, not stripped);
    a missing price never satisfies a price bound.
    """

    def __init__(self, categories: Sequence[Sequence[str]] = (),
                 brands: Sequence[str | None] | None = None,
                 prices: Sequence[float | None] | ArrayLike | None = None) -> None:
        self._levels = _Postings()  # any level of the path
        self._prefixes = _Postings()  # path prefixes of >= 2 levels
        self._brands = _Postings()
        self._prices = np.zeros(0)
        self.n_items = 0
        self.add(categories, brands, prices)

    def add(self, categories: Sequence[Sequence[str]],
            brands: Sequence[str | None] | None = None,
            prices: Sequence[float | None] | ArrayLike | None = None) -> CatalogFilter:
        """Append items at positions ``n_items, n_items + 1, ...``: one category path (a
        sequence of levels, root first; empty for none) per item, and optionally a brand and
        a price per item (None or NaN for unknown)."""
        n = len(categories)
        price = (np.full(n, np.nan) if prices is None  # None -> NaN
                 else np.asarray(prices, dtype=np.float64).reshape(-1))
        if len(price) != n or (brands is not None and len(brands) != n):
            raise ConfigError(f"{n} category paths, {len(price)} prices and "
                              f"{n if brands is None else len(brands)} brands: one per item")
        for pos, path in enumerate(categories, start=self.n_items):
            levels = tuple(c.lower() for c in path)
            for level in set(levels):
                self._levels.add(level, pos)
            for k in range(2, len(levels) + 1):
                self._prefixes.add(levels[:k], pos)
        for pos, brand in enumerate(brands if brands is not None else (),
                                     start=self.n_items):
            if brand:
                self._brands.add(brand.lower(), pos)
        self._prices = put_growing(self._prices, self.n_items, price)
        self.n_items += n
        return self

    @property
    def prices(self) -> NDArray[np.float64]:
        return self._prices[:self.n_items]

    def set_prices(self, prices: NDArray[np.float64]) -> None:
        """Replace every item's price (one per item; NaN for unknown)."""
        prices = np.asarray(prices, dtype=np.float64)
        if prices.shape != (self.n_items,):
            raise ConfigError(f"{len(prices)} prices for {self.n_items} items")
        self._prices = prices

    def state(self) -> State:
        return {"levels": self._levels.state(), "prefixes": self._prefixes.state(),
                "brands": self._brands.state(), "prices": self.prices}

    @classmethod
    def from_state(cls, state: State) -> CatalogFilter:
        """A filter over saved state (arrays kept as given, e.g. memory-mapped)."""
        f = cls()
        f._levels, f._prefixes, f._brands = (_Postings.from_state(state[k])
                                             for k in ("levels", "prefixes", "brands"))
        f._prices = state["prices"]
        f.n_items = len(f._prices)
        return f

    def category_positions(self, category: str) -> NDArray[np.int64] | None:
        """Items under ``category``: a path prefix such as ``'Home > Kitchen'`` (levels split
        on ``>``, stripped, lower-cased) or, for a single level, items with that level
        anywhere in their path. None when the filter names no level (everything passes)."""
        want = tuple(p.strip().lower() for p in category.split(">") if p.strip())
        if not want:
            return None
        return self._levels.get(want[0]) if len(want) == 1 else self._prefixes.get(want)

    def mask(self, category: str | None = None, brand: str | None = None,
             min_price: float | None = None, max_price: float | None = None
             ) -> NDArray[np.bool_]:
        """True for the items passing every given filter (None or empty: no restriction)."""
        ok = np.ones(self.n_items, dtype=bool)
        for hits in (self.category_positions(category) if category else None,
                     self._brands.get(brand.lower()) if brand else None):
            if hits is not None:
                keep = np.zeros(self.n_items, dtype=bool)
                keep[hits] = True
                ok &= keep
        if min_price is not None:
            ok &= self.prices >= min_price
        if max_price is not None:
            ok &= self.prices <= max_price
        return ok
