"""CatalogFilter: known answers, and equality with a per-item brute-force reference (the
search service's former loop) on random catalogs, built at once or item by item."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.exceptions import ConfigError
from shelfwise.search.filters import CatalogFilter

PATHS = [("Home", "Kitchen", "Cookware"), ("Home", "Kitchen"), ("Home", "Garden"),
         ("Garden", "Tools"), (), ("Tools", "Home")]
BRANDS = ["Acme", "acme", None, "Lodge", "", "ACME"]
PRICES = [10.0, None, 5.5, np.nan, 0.0, 100.0]


@pytest.fixture
def catalog() -> CatalogFilter:
    return CatalogFilter(PATHS, BRANDS, PRICES)


def _hits(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_category_is_a_path_prefix_or_any_single_level(catalog: CatalogFilter) -> None:
    assert _hits(catalog.mask(category="Home > Kitchen")) == [0, 1]
    assert _hits(catalog.mask(category="  home>KITCHEN > cookware ")) == [0]
    assert _hits(catalog.mask(category="Home")) == [0, 1, 2, 5], "any level, not only root"
    assert _hits(catalog.mask(category="garden")) == [2, 3]
    assert _hits(catalog.mask(category="Kitchen > Cookware")) == [], "prefixes start at root"
    assert _hits(catalog.mask(category="Home > Kitchen > Cookware > Pans")) == []
    assert _hits(catalog.mask(category="Nowhere")) == []
    assert _hits(catalog.mask(category=" > ")) == list(range(6)), "no level: no restriction"
    assert _hits(catalog.mask(category="")) == list(range(6))


def test_brand_and_price_bounds(catalog: CatalogFilter) -> None:
    assert _hits(catalog.mask(brand="aCmE")) == [0, 1, 5]
    assert _hits(catalog.mask(brand="")) == list(range(6))
    assert _hits(catalog.mask(brand="Nobody")) == []
    assert _hits(catalog.mask(min_price=5.5)) == [0, 2, 5], "unknown prices never match"
    assert _hits(catalog.mask(max_price=10)) == [0, 2, 4]
    assert _hits(catalog.mask(min_price=1, max_price=50)) == [0, 2]
    assert _hits(catalog.mask(category="Home", brand="acme", max_price=50)) == [0]
    assert catalog.mask().all() and catalog.mask().shape == (6,)
    np.testing.assert_array_equal(catalog.prices[[1, 3]], [np.nan, np.nan])


def test_added_items_are_filtered_like_the_first(catalog: CatalogFilter) -> None:
    assert _hits(catalog.mask(brand="acme")) == [0, 1, 5]  # caches the positions of 'acme'
    catalog.add([("Home", "Kitchen", "Mugs"), ("Toys",)], ["Acme", None], [3.0, None])
    assert catalog.n_items == 8
    assert _hits(catalog.mask(brand="acme")) == [0, 1, 5, 6]
    assert _hits(catalog.mask(category="home>kitchen")) == [0, 1, 6]
    assert _hits(catalog.mask(category="toys")) == [7]
    assert _hits(catalog.mask(max_price=5)) == [4, 6]
    assert catalog.add([]).n_items == 8
    with pytest.raises(ConfigError, match="one per item"):
        catalog.add([("A",)], ["x", "y"])
    with pytest.raises(ConfigError, match="one per item"):
        catalog.add([("A",)], prices=[1.0, 2.0])
    assert catalog.n_items == 8


def _has_path(path: tuple[str, ...], want: tuple[str, ...]) -> bool:
    if len(want) == 1:
        return want[0] in path
    return path[: len(want)] == want


def _reference(paths: list[tuple[str, ...]], brands: list[str | None], prices: np.ndarray,
               category: str | None, brand: str | None, lo: float | None, hi: float | None
               ) -> np.ndarray:
    """The search service's per-item loop that CatalogFilter replaces."""
    ok = np.ones(len(paths), bool)
    lowered = [tuple(c.lower() for c in p) for p in paths]
    if category:
        want = tuple(p.strip().lower() for p in category.split(">") if p.strip())
        ok &= np.array([_has_path(p, want) for p in lowered], dtype=bool)
    if brand:
        ok &= np.array([(b or "").lower() == brand.lower() for b in brands], dtype=bool)
    if lo is not None:
        ok &= prices >= lo
    if hi is not None:
        ok &= prices <= hi
    return ok


def test_equals_the_per_item_reference_on_random_catalogs() -> None:
    rng = np.random.default_rng(0)
    levels = ["Home", "home", "Kitchen", "Garden", "Tools", "Toys", " Home", "Décor", "厨房"]
    names = ["Acme", "ACME", "Lodge", "美的", "", None]
    for trial in range(20):
        n = int(rng.integers(1, 80))
        paths = [tuple(rng.choice(levels, int(rng.integers(0, 5)))) for _ in range(n)]
        brands = [names[int(i)] for i in rng.integers(0, len(names), n)]
        prices = np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 20, n).astype(float))
        cut = int(rng.integers(0, n + 1))
        whole = CatalogFilter(paths, brands, prices)
        grown = CatalogFilter(paths[:cut], brands[:cut], prices[:cut])
        for i in range(cut, n):
            grown.add([paths[i]], [brands[i]], [prices[i]])
        for _ in range(30):
            k = int(rng.integers(0, 4))
            category = (None if k == 0 else " > ".join(str(x) for x in rng.choice(
                [lv.upper() if rng.random() < 0.3 else lv for lv in levels], k)))
            brand = names[int(rng.integers(0, len(names)))] if rng.random() < 0.5 else None
            lo = float(rng.integers(0, 20)) if rng.random() < 0.3 else None
            hi = float(rng.integers(0, 20)) if rng.random() < 0.3 else None
            want = _reference(paths, brands, prices, category, brand, lo, hi)
            for f in (whole, grown):
                np.testing.assert_array_equal(
                    f.mask(category, brand, lo, hi), want,
                    err_msg=f"trial {trial}: {category!r} {brand!r} {lo} {hi}")
