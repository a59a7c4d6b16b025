"""The store protocol: the durable home of catalog, users, events and promotions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from shelfwise.data.schemas import Event, EventType, Item, Promotion, User


@dataclass(frozen=True)
class WriteResult:
    """How many rows a write stored, and how many it skipped as already present."""

    written: int
    skipped: int = 0


class Store(Protocol):
    """Durable storage. Every write is committed before it returns (or, inside
    :meth:`transaction`, when the block exits without error; an error rolls all of it back).

    "Arrival order" is the order events were stored in. Naive datetimes are UTC; reads return
    aware UTC datetimes. ``tests/store_contract.py`` is the executable form of this contract.
    """

    url: str

    def transaction(self) -> AbstractContextManager[None]:
        """A block whose writes commit together; a nested block joins the outer one."""
        ...

    def upsert_items(self, items: Sequence[Item]) -> WriteResult:
        """Insert or wholly replace items by id (``written`` counts the rows given)."""
        ...

    def upsert_users(self, users: Sequence[User]) -> WriteResult: ...

    def add_events(self, events: Sequence[Event]) -> WriteResult:
        """Insert events; ones whose id is already stored, or repeats an earlier event of the
        same batch, are skipped and counted in ``skipped`` (idempotent delivery)."""
        ...

    def upsert_promotions(self, promotions: Sequence[Promotion]) -> WriteResult: ...

    def get_item(self, item_id: str) -> Item | None: ...

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """The stored ones among ``item_ids`` by id (missing ids are absent)."""
        ...

    def get_user(self, user_id: str) -> User | None: ...

    def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among ``event_ids`` that are stored."""
        ...

    def user_events(
        self,
        user_id: str,
        *,
        types: Sequence[EventType] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """A user's events, oldest first (the most recent ``limit`` when given); equal
        timestamps keep arrival order."""
        ...

    def iter_events(self, *, batch_size: int = 10_000) -> Iterator[list[Event]]:
        """Every event in arrival order, in lists of at most ``batch_size``."""
        ...

    def events_of_type(self, event_type: EventType) -> list[Event]:
        """Every event of one type, in arrival order."""
        ...

    def events_for_requests(self, request_ids: Sequence[str], *,
                            types: Sequence[EventType] | None = None) -> list[Event]:
        """Events citing any of ``request_ids`` (empty ids ignored), in arrival order."""
        ...

    def events_frame(self, *, types: Sequence[EventType] | None = None) -> pd.DataFrame:
        """Events as a frame: user_id, item_id, type, timestamp (epoch s), in arrival order."""
        ...

    def items_frame(self) -> pd.DataFrame:
        """The catalog, one row per item, a column per :class:`Item` field (``created_at`` in
        epoch seconds)."""
        ...

    def list_promotions(self) -> list[Promotion]: ...

    def counts(self) -> dict[str, int]:
        """Rows per kind: ``items``, ``users``, ``events``, ``promotions``."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None:
        """Store (or overwrite) one string setting, e.g. ``time_kind``."""
        ...

    def close(self) -> None:
        """Release connections and files; calling it twice is harmless."""
        ...
