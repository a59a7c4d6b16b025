"""The live catalog: every item's text and attributes, in memory, kept in step with
``POST /v1/items``, so no request reads the catalog from the store."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence

import pandas as pd

from shelfwise.data.schemas import Item


class Catalog:
    """Items by external id (title, description, category path, brand, price, availability,
    tags), loaded once from the store and updated by :meth:`upsert` when items are posted."""

    def __init__(self, items: Sequence[Item] = ()) -> None:
        self._items: dict[str, Item] = {it.id: it for it in items}
        self._lock = threading.Lock()
        self.version = 0
        """Incremented by every :meth:`upsert` (caches built over the catalog compare it)."""
        self.text_version = 0
        """Incremented when an item already in the catalog changes what search reads of it
        (title, description, category, brand, price); new items do not count."""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Catalog:
        """From a store's ``items_frame`` (timestamps there are epoch seconds)."""
        return cls([Item.model_validate(_item_fields(r)) for r in frame.to_dict("records")])

    def upsert(self, items: Sequence[Item]) -> None:
        with self._lock:
            for it in items:
                old = self._items.get(it.id)
                if old is not None and _search_fields(old) != _search_fields(it):
                    self.text_version += 1
                self._items[it.id] = it
            self.version += 1

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items.values()))

    def title(self, item_id: str) -> str | None:
        it = self._items.get(item_id)
        return (it.title or None) if it is not None else None

    def titles(self, item_ids: Sequence[str]) -> list[str | None]:
        return [self.title(i) for i in item_ids]

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """The known ones of ``item_ids`` (as the store's ``get_items`` answers)."""
        return {i: self._items[i] for i in item_ids if i in self._items}


def _item_fields(row: Mapping[Hashable, object]) -> dict[str, object]:
    """A store items_frame row as Item fields."""
    from datetime import UTC, datetime

    out = {str(k): v for k, v in row.items()
           if v is not None and not (isinstance(v, float) and v != v)}
    created = out.pop("created_at", None)
    if isinstance(created, int | float):
        out["created_at"] = datetime.fromtimestamp(float(created), tz=UTC)
    return out


def _search_fields(it: Item) -> tuple[object, ...]:
    return (it.title, it.description, tuple(it.category), it.brand, it.price)
