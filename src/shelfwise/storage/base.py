"""The store protocol: the durable home of catalog, users, events and promotions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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


@dataclass(frozen=True)
class AttributeCounts:
    """Aggregate interaction counts of the users sharing a value of one user attribute:
    ``users[value]`` distinct users with any interaction, ``items`` (value, item id, distinct
    users who interacted with it). Counts only, no user ids."""

    key: str
    users: dict[str, int]
    items: list[tuple[str, str, int]]


def attribute_value(value: object) -> str | None:
    """A user attribute value as group keys spell it: strings as they are, numbers in their
    shortest form, booleans as "1"/"0" (SQLite's JSON functions read them so); None for
    anything else (lists, objects, null, NaN), which conditions no popularity."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value or None
    return None


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

    def transaction(self, *, bulk: bool = False) -> AbstractContextManager[None]:
        """A block whose writes commit together; a nested block joins the outer one.
        ``bulk`` says the block writes a lot (an import), so the store may size its caches
        for that."""
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

    def search_queries(self, user_id: str, *, limit: int = 5) -> list[str]:
        """The query texts of the user's last ``limit`` ``search`` events, oldest first."""
        ...

    def sample_user_attributes(self, limit: int = 10_000) -> list[dict[str, Any]]:
        """The attributes of at most ``limit`` users that have any (in id order)."""
        ...

    def attribute_popularity(self, key: str, *, since: datetime | None = None
                             ) -> AttributeCounts:
        """Per value of user attribute ``key`` (as :func:`attribute_value` spells it): the
        distinct users with an interaction (view, click, cart, purchase; at or after
        ``since`` when given), and per item the distinct users of that value who interacted
        with it. Users whose value is missing or not a scalar are left out."""
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

    def events_window(self, types: Sequence[EventType], since: datetime,
                      until: datetime | None = None, *,
                      context_path: Sequence[str] | None = None) -> pd.DataFrame:
        """Events of ``types`` in ``[since, until)`` with user, item, type, request id,
        value, propensity, timestamp, context and query columns, in arrival order; with
        ``context_path``, only those with a value at that path of their context, which
        replaces the context."""
        ...

    def put_experiment(self, experiment_id: str, doc: dict[str, Any]) -> None:
        """Create or replace an experiment (its JSON document)."""
        ...

    def get_experiment(self, experiment_id: str) -> dict[str, Any] | None: ...

    def list_experiments(self) -> list[dict[str, Any]]:
        """Every experiment's document, ordered by id."""
        ...

    def add_exposures(self, rows: Sequence[tuple[str, str, str, datetime]]) -> int:
        """Record (experiment id, unit, variant, time) once per unit and experiment."""
        ...

    def exposures(self, experiment_id: str) -> pd.DataFrame:
        """The experiment's units: unit, variant, first_seen (epoch seconds)."""
        ...

    def exposed_events(self, experiment_id: str, types: Sequence[EventType],
                       since: datetime, until: datetime | None = None, *,
                       context_path: Sequence[str] | None = None) -> pd.DataFrame:
        """Like :meth:`events_window`, for the experiment's units only."""
        ...

    def daily_event_counts(self, *, after_seq: int = 0, item_id: str | None = None
                           ) -> tuple[pd.DataFrame, int]:
        """Events per UTC day (``day``: days since the epoch) and ``type`` (column ``n``)
        among events stored after arrival number ``after_seq`` (of one item when given), and
        the last arrival number counted (``after_seq`` when none): for incremental totals."""
        ...

    def user_first_days(self) -> pd.Series:
        """How many users had their first event on each UTC day (index: days since the
        epoch, ascending)."""
        ...

    def item_created_days(self) -> pd.Series:
        """How many catalog items were created on each UTC day (items without a creation
        time are left out; index: days since the epoch, ascending)."""
        ...

    def items_frame(self) -> pd.DataFrame:
        """The catalog, one row per item, a column per :class:`Item` field (``created_at`` in
        epoch seconds)."""
        ...

    def item_change(self) -> int:
        """The number of the catalog's latest write (0 when empty): it grows whenever any
        process adds or replaces an item."""
        ...

    def items_changed_after(self, change: int) -> list[tuple[str, int]]:
        """``(id, number of its latest write)`` of the items written after ``change``, in
        write order."""
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
