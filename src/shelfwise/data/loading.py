"""Build training data from the store."""

from __future__ import annotations

from collections.abc import Mapping

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
    items = IdMap(store.items_frame()["id"].astype(str).tolist())
    frame = store.events_frame(types=sorted(INTERACTION_TYPES))
    has_time = store.get_meta(TIME_KIND_KEY) != "ordinal"
    return Interactions.from_frame(
        frame, items=items, has_time=has_time, type_weights=type_weights
    )
