"""Domain objects: items, users, events and promotions, keyed by external string ids."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EventType(StrEnum):
    """What a user did. Outcome events cite the ``request_id`` of the list they came from."""

    IMPRESSION = "impression"
    VIEW = "view"
    CLICK = "click"
    CART = "cart"
    PURCHASE = "purchase"
    SEARCH = "search"
    PROMOTION_SHOWN = "promotion_shown"
    PROMOTION_REDEEMED = "promotion_redeemed"


#: Event types that express interest in an item (they feed collaborative models and user state).
INTERACTION_TYPES: frozenset[EventType] = frozenset(
    {EventType.VIEW, EventType.CLICK, EventType.CART, EventType.PURCHASE}
)

#: Default strength of each interaction type when building implicit-feedback matrices.
DEFAULT_TYPE_WEIGHTS: dict[str, float] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 1.0,
    EventType.CART: 2.0,
    EventType.PURCHASE: 3.0,
}

#: Ids are 1-256 characters without control characters (NUL, tab, newline...).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_ID_FIELD = Field(min_length=1, max_length=256, pattern=ID_PATTERN)

#: Times the store can hold and give back (as UTC).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    """``value`` in UTC (naive times are taken as UTC), or a ValueError naming the range."""
    try:
        out = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        out = None
    if out is None or not EARLIEST <= out <= LATEST:
        raise ValueError(f"{value.isoformat()} is outside the supported range "
                         f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)")
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Item(_Model):
    """A catalog entry. Only ``id`` is required; text fields feed the language-model layer."""

    id: str = _ID_FIELD
    title: str = ""
    description: str = ""
    category: list[str] = Field(default_factory=list, description="category path, root first")
    brand: str | None = None
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    tags: list[str] = Field(default_factory=list)
    language: str | None = None
    created_at: datetime | None = None
    available: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("category", mode="before")
    @classmethod
    def _split_path(cls, value: object) -> object:
        if isinstance(value, str):
            sep = ">" if ">" in value else "/"
            return [part.strip() for part in value.split(sep) if part.strip()]
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split("|") if part.strip()]
        return value

    @field_validator("created_at")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


class User(_Model):
    """A shopper. Attributes are free-form (segment, country, ...)."""

    id: str = _ID_FIELD
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None

    @field_validator("created_at")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


class Event(_Model):
    """Something a user did, at a time. ``id`` makes delivery idempotent."""

    id: str = _ID_FIELD
    type: EventType
    user_id: str = _ID_FIELD
    item_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=ID_PATTERN)
    query: str | None = None
    request_id: str | None = None
    position: int | None = Field(default=None, ge=0)
    propensity: float | None = Field(default=None, gt=0, le=1)
    value: float | None = Field(default=None, allow_inf_nan=False,
                                description="a finite number (order value, rating...)")
    timestamp: datetime
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _tz(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _needs_target(self) -> Event:
        if self.type in INTERACTION_TYPES and self.item_id is None:
            raise ValueError(f"a '{self.type.value}' event needs item_id")
        if self.type is EventType.SEARCH and not self.query:
            raise ValueError("a 'search' event needs query")
        return self


class Promotion(_Model):
    """A coupon, campaign or sale that a policy may show; ``rules`` say who is eligible."""

    id: str = _ID_FIELD
    text: str = Field(min_length=1)
    rules: dict[str, Any] = Field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @model_validator(mode="after")
    def _window(self) -> Promotion:
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        return self
