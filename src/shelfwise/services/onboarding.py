"""Onboarding picks: a new shopper's chosen items and categories, stored so the very next
feed follows them.

``POST /v1/users/{id}/onboarding {"items": [...], "categories": [...]}``:

- each picked item becomes a ``view`` event (context ``{"onboarding": true}``), with an id
  derived from the stored user id and the item, so a repeated submission stores nothing new.
  A pick is a first, weak interaction: it joins the user's history, which every model reads
  at once (co-occurrence, the semantic profile, the pipeline), and it trains later bundles
  like any view;
- picked categories (a level such as ``Kitchen`` or a path prefix such as ``Home >
  Kitchen`` of some catalog item) are merged into the user attribute ``interests``
  (``[serve.cold_start] interests_key``): the cold profile reads them (category vectors and
  membership). A later ``POST /v1/users`` replaces all attributes, so a shop that re-posts a
  user sends ``interests`` along (or posts the onboarding again).

Events and the user row are written in one transaction; unknown items or categories are a
:class:`~shelfwise.exceptions.NotFoundError` naming them, and nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shelfwise.data.schemas import User
from shelfwise.exceptions import NotFoundError
from shelfwise.serving.schemas import EventIn, OnboardingResponse

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine

MAX_INTERESTS = 20
"""Picked categories kept per user (the most recent)."""


def onboard(engine: Engine, user_id: str, items: Sequence[str],
            categories: Sequence[str]) -> OnboardingResponse:
    """Store ``user_id``'s onboarding picks (see the module doc)."""
    rec = engine.recommender
    items = list(dict.fromkeys(items))
    categories = list(dict.fromkeys(c.strip() for c in categories if c.strip()))
    missing = [i for i in items if i not in rec.catalog]
    if missing:
        found = rec.store.get_items(missing)  # posted to another worker since this one began
        missing = [i for i in missing if i not in found]
    if missing:
        raise NotFoundError(f"items: unknown item id(s) {', '.join(map(repr, missing[:10]))}; "
                            "post them to /v1/items first")
    known = set(rec.cold.known_categories(categories))
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise NotFoundError(
            f"categories: no catalog item is in {', '.join(map(repr, unknown[:10]))}; pick a "
            "category level (e.g. 'Kitchen') or path prefix (e.g. 'Home > Kitchen') of an item")
    key = engine.user_key(user_id)
    now = datetime.now(UTC)
    events = [EventIn(id="onboarding-" + hashlib.sha1(f"{key}\x1f{item}".encode()).hexdigest(),
                      type="view", user_id=user_id, item_id=item,
                      timestamp=now + timedelta(microseconds=k), context={"onboarding": True})
              for k, item in enumerate(items)]
    with engine.store.transaction():
        user = engine.store.get_user(key)
        attrs = dict(user.attributes) if user is not None else {}
        name = rec.cold_config.interests_key
        old = attrs.get(name)
        interests = [str(c) for c in old if isinstance(c, str)] if isinstance(old, list) \
            else ([old] if isinstance(old, str) else [])
        if categories:
            merged = [c for c in interests if c not in categories] + categories
            interests = attrs[name] = merged[-MAX_INTERESTS:]
            engine.add_users([User(id=user_id, attributes=attrs,
                                   created_at=user.created_at if user is not None else now)])
        accepted = engine.track(events) if events else None
    return OnboardingResponse(
        user_id=user_id, items=items, interests=interests,
        accepted=accepted.accepted if accepted is not None else 0,
        duplicates=accepted.duplicates if accepted is not None else 0)
