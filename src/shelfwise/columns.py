"""Column names shared by every table, frame and importer (one place, so they never drift)."""

from __future__ import annotations


class Columns:
    """Canonical column names of interaction and catalog frames."""

    USER = "user_id"
    ITEM = "item_id"
    EVENT = "event_id"
    TYPE = "type"
    TIME = "timestamp"
    WEIGHT = "weight"
    QUERY = "query"
    REQUEST = "request_id"
    POSITION = "position"
    PROPENSITY = "propensity"
    VALUE = "value"
    CONTEXT = "context"
    # item catalog
    TITLE = "title"
    DESCRIPTION = "description"
    CATEGORY = "category"
    BRAND = "brand"
    PRICE = "price"
    TAGS = "tags"
    LANGUAGE = "language"
    CREATED_AT = "created_at"
    AVAILABLE = "available"
    ATTRIBUTES = "attributes"
    # promotions
    PROMOTION = "promotion_id"
    TEXT = "text"
    RULES = "rules"
    START = "start"
    END = "end"
