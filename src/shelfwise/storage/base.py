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
    :meth:`transaction`, when the block exits without error; an error rolls all of it back)."""

    url: str

    def transaction(self) -> AbstractContextManager[None]: ...

    def upsert_items(self, items: Sequence[Item]) -> WriteResult: ...

    def upsert_users(self, users: Sequence[User]) -> WriteResult: ...

    def add_events(self, events: Sequence[Event]) -> WriteResult:
        """Insert events; ones whose id is already stored are skipped (idempotent delivery)."""
        ...

    def upsert_promotions(self, promotions: Sequence[Promotion]) -> WriteResult: ...

    def get_item(self, item_id: str) -> Item | None: ...

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]: ...

    def get_user(self, user_id: str) -> User | None: ...

    def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]: ...

    def user_events(
        self,
        user_id: str,
        *,
        types: Sequence[EventType] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """A user's events, oldest first (the most recent ``limit`` when given)."""
        ...

    def iter_events(self, *, batch_size: int = 10_000) -> Iterator[list[Event]]: ...

    def events_of_type(self, event_type: EventType) -> list[Event]: ...

    def events_for_requests(self, request_ids: Sequence[str], *,
                            types: Sequence[EventType] | None = None) -> list[Event]: ...

    def events_frame(self, *, types: Sequence[EventType] | None = None) -> pd.DataFrame:
        """Events as a frame: user_id, item_id, type, timestamp (epoch s), in arrival order."""
        ...

    def items_frame(self) -> pd.DataFrame: ...

    def list_promotions(self) -> list[Promotion]: ...

    def counts(self) -> dict[str, int]: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
