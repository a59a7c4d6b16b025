"""Search filters as boolean masks over the catalog: category path, brand, price range.

Inverted maps from each lower-cased category level, each path prefix of two or more levels and
each lower-cased brand to the positions of the items that have it are kept as items arrive, so
a filter costs numpy work on the matching positions, not a Python loop over the catalog.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shelfwise.exceptions import ConfigError
from shelfwise.text.bm25 import put_growing


class _Postings:
    """Key -> item positions (ascending), appended as items arrive; arrays made on demand."""

    def __init__(self) -> None:
        self._lists: dict[Hashable, list[int]] = {}
        self._arrays: dict[Hashable, NDArray[np.int64]] = {}  # dropped when a key grows

    def add(self, key: Hashable, position: int) -> None:
        self._lists.setdefault(key, []).append(position)
        self._arrays.pop(key, None)

    def get(self, key: Hashable) -> NDArray[np.int64]:
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._arrays[key] = np.asarray(self._lists.get(key, ()), dtype=np.int64)
        return arr


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
