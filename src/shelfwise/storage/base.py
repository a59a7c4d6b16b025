"""The store protocol: the durable home of catalog, users, events and promotions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import pandas as pd

from shelfwise.data.schemas import Event, EventType, Item, Promotion, User


@dataclass(frozen=True)
class WriteResult:
    """How many rows a write stored, and how many it skipped as already present."""

    written: int
    skipped: int = 0


#: Column order of the tuples :meth:`Store.add_event_rows` takes.
EVENT_ROW_COLUMNS = ("id", "type", "user_id", "item_id", "query", "request_id", "position",
                     "propensity", "value", "timestamp", "context")
#: One validated event as stored: epoch-second timestamp, context as JSON text.
EventRow = tuple[str, str, str, str | None, str | None, str | None, int | None, float | None,
                 float | None, float, str]


@dataclass(frozen=True)
class ApiKey:
    """A stored API key. Never the secret itself: its sha256 (``key_hash``, how a request's key
    is found) and its last characters (``hint``, so a person can tell keys apart)."""

    id: str
    name: str
    scope: str
    key_hash: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Erasure:
    """What :meth:`Store.forget_user` deleted: rows per table, and the events among them per
    type."""

    rows: dict[str, int]
    events: dict[str, int]


@dataclass(frozen=True)
class Tombstone:
    """The record that a user was forgotten: the sha256 of their stored id (never the id),
    when, and ``seq``, which grows with every erasure (servers poll for ``seq`` > last seen)."""

    seq: int
    user_hash: str
    forgotten_at: datetime


def user_hash(user_id: str) -> str:
    """How a tombstone names a stored user id."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


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
        same batch, or that a tombstone covers (see :meth:`forget_user`) are skipped and
        counted in ``skipped`` (idempotent delivery)."""
        ...

    def add_event_rows(self, rows: Sequence[EventRow]) -> WriteResult:
        """:meth:`add_events` for tuples already validated against :class:`Event` (the bulk
        path of imports): no model object per row."""
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

    def interaction_items(self, user_id: str, *, limit: int | None = None) -> list[str]:
        """Item ids of the user's interactions (view, click, cart, purchase), oldest first:
        the last ``limit`` of them. Same order as :meth:`user_events`."""
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

    def add_api_key(self, key: ApiKey) -> None:
        """Store a new key; an id or hash already stored is a :class:`StoreError`."""
        ...

    def api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not (the server checks a request's key so)."""
        ...

    def list_api_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        """Active keys in creation order; revoked ones too when ``revoked``."""
        ...

    def revoke_api_key(self, key_id: str) -> ApiKey | None:
        """Mark the active key ``key_id`` revoked now; returns it as revoked, or None when no
        active key has that id. Revoked keys stay listed (``revoked=True``), never reactivate."""
        ...

    def forget_user(self, user_id: str) -> Erasure:
        """Delete every row that names ``user_id`` (events of all types, the user row, any
        table's user column) and leave a :class:`Tombstone`, in one transaction. Afterwards
        ``add_events`` skips events of this user stamped at or before the erasure (late
        deliveries, other servers' queued impressions); later ones are stored."""
        ...

    def tombstones(self, after: int = 0) -> list[Tombstone]:
        """Erasures with ``seq`` > ``after``, oldest first."""
        ...

    def drop_events_before(self, cutoff: datetime) -> int:
        """Retention: delete events stamped before ``cutoff`` (and tombstones older than it,
        which then guard nothing); returns the events deleted."""
        ...

    def close(self) -> None:
        """Release connections and files; calling it twice is harmless."""
        ...
