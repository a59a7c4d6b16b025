"""Build training data from the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.data.schemas import INTERACTION_TYPES
from shelfwise.storage.base import Store

#: Meta key recording whether event timestamps are real dates or only encode order.
TIME_KIND_KEY = "time_kind"


def interactions_from_store(
    store: Store, *, type_weights: Mapping[str, float] | None = None
) -> Interactions:
    """Every interaction event (view/click/cart/purchase) as :class:`Interactions`; the item index
    covers the whole catalog, so items without events can still be scored by content models."""
    catalog = store.items_frame()
    items = IdMap(catalog["id"].astype(str).tolist())
    texts = catalog_texts(catalog)
    frame = store.events_frame(types=sorted(INTERACTION_TYPES))
    has_time = store.get_meta(TIME_KIND_KEY) != "ordinal"
    return Interactions.from_frame(
        frame, items=items, has_time=has_time, type_weights=type_weights,
        item_text=texts if any(texts.values()) else None,
    )


def item_category_codes(store: Store, items: IdMap) -> NDArray[np.int64] | None:
    """Each item's leaf category as an integer code in ``items``' order (-1 = none), for the
    pipeline's category features; None when no item has a category."""
    catalog = store.items_frame()
    leaf = {str(i): (str(c[-1]) if c is not None and len(c) else "")
            for i, c in zip(catalog["id"], catalog["category"], strict=True)}
    names = [leaf.get(items.external(k), "") for k in range(len(items))]
    if not any(names):
        return None
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(n, len(codes)) if n else -1 for n in names], np.int64)


def item_text(title: str | None, category: Sequence[str] | None = None,
              brand: str | None = None, description: str | None = None,
              max_description: int = 200) -> str:
    """The one text that represents an item to language models: title, brand, category path
    and the start of the description."""
    parts = [title or ""]
    if brand:
        parts.append(brand)
    if category:
        parts.append(" > ".join(category))
    if description:
        parts.append(description[:max_description])
    return " | ".join(p.strip() for p in parts if p and p.strip())


def catalog_texts(catalog: pd.DataFrame) -> dict[str, str]:
    """Item id -> :func:`item_text` for a catalog frame (store ``items_frame`` or preset)."""
    id_col = "id" if "id" in catalog.columns else "item_id"
    out = {}
    for row in catalog.to_dict("records"):
        category = row.get("category")
        out[str(row[id_col])] = item_text(
            _str(row.get("title")), category if isinstance(category, list) else None,
            _str(row.get("brand")), _str(row.get("description")),
        )
    return out


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
