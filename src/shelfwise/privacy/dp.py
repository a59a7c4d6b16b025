"""Differential privacy for published aggregates: Laplace noise on item popularity counts.

:func:`laplace_mechanism` adds noise of scale ``sensitivity / epsilon`` (the Laplace
mechanism: ε-differentially private for a query whose L1 sensitivity is ``sensitivity``).
:func:`private_popularity` is the popularity table ``shelfwise export popularity`` publishes:

- **What one user can change.** Each user counts at most ``per_user_cap`` times per item
  (default 1: a count is the number of distinct users who interacted with the item), so adding
  or removing one user moves each item's count by at most ``per_user_cap``. With
  ``max_items_per_user = m`` each user also counts towards at most ``m`` items (their ``m``
  most recently touched), and the whole table moves by at most ``per_user_cap * m`` in L1.
- **The guarantee.** The noise scale is that L1 bound over ε. Without ``max_items_per_user``
  (the default) the bound is ``per_user_cap``: every single count is ε-DP, and a user who
  touched k items is protected at k·ε across the table (the usual trade-off for a popularity
  list: one user's k items cost the same noise as one item). Give ``max_items_per_user`` for
  ε-DP of the whole table at ``m`` times the noise.
- **No leak through the item list.** Every catalog item is reported, zero counts included (an
  item listed only when it has users would say that someone touched it); events of items not
  in the catalog are left out. Rounding and clipping at 0 are post-processing: they keep the
  guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from shelfwise.data.schemas import INTERACTION_TYPES, EventType
from shelfwise.exceptions import InvalidRequestError

if TYPE_CHECKING:  # the store imports the scrubber from this package
    from shelfwise.storage.base import Store


def _positive(name: str, value: float) -> float:
    if not np.isfinite(value) or value <= 0:
        raise InvalidRequestError(f"{name} = {value}: must be a finite number > 0")
    return float(value)


def laplace_mechanism(values: ArrayLike, epsilon: float, *, sensitivity: float = 1.0,
                      rng: np.random.Generator | int | None = None) -> NDArray[np.float64]:
    """``values`` plus independent Laplace noise of scale ``sensitivity / epsilon``
    (std ``sqrt(2) * scale``, mean absolute deviation ``scale``); ``rng`` is a numpy
    Generator or a seed (None: fresh entropy). ε ≤ 0 is refused: it would promise privacy
    that no finite noise gives."""
    scale = _positive("sensitivity", sensitivity) / _positive("epsilon", epsilon)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    arr = np.asarray(values, dtype=np.float64)
    return arr + gen.laplace(0.0, scale, size=arr.shape)


def capped_counts(events: pd.DataFrame, *, per_user_cap: int = 1,
                  max_items_per_user: int | None = None) -> pd.Series:
    """Per-item counts from ``events`` (user_id, item_id, timestamp) where each user adds at
    most ``per_user_cap`` per item, to at most ``max_items_per_user`` items (their most
    recently touched ones)."""
    if per_user_cap < 1:
        raise InvalidRequestError(f"per_user_cap = {per_user_cap}: must be at least 1")
    if max_items_per_user is not None and max_items_per_user < 1:
        raise InvalidRequestError(
            f"max_items_per_user = {max_items_per_user}: must be at least 1")
    if events.empty:
        return pd.Series(dtype=np.float64)
    pairs = events.groupby(["user_id", "item_id"], sort=False).agg(
        n=("timestamp", "size"), last=("timestamp", "max")).reset_index()
    pairs["n"] = pairs["n"].clip(upper=per_user_cap)
    if max_items_per_user is not None:
        pairs = (pairs.sort_values(["user_id", "last"], ascending=[True, False])
                 .groupby("user_id", sort=False).head(max_items_per_user))
    return pairs.groupby("item_id")["n"].sum().astype(np.float64)


def private_popularity(store: Store, epsilon: float, *,
                       types: Sequence[EventType] | None = None, per_user_cap: int = 1,
                       max_items_per_user: int | None = None,
                       rng: np.random.Generator | int | None = None) -> pd.DataFrame:
    """Every catalog item's ε-DP popularity (see the module doc): columns ``item_id``,
    ``count`` (noisy, rounded, clipped at 0), sorted by count, most popular first.
    ``types`` default to the interaction types (view, click, cart, purchase)."""
    sensitivity = per_user_cap * (max_items_per_user or 1)
    _positive("epsilon", epsilon)
    items = store.items_frame()["id"].astype(str)
    events = store.events_frame(types=list(types or sorted(INTERACTION_TYPES)))
    counts = capped_counts(events, per_user_cap=per_user_cap,
                           max_items_per_user=max_items_per_user)
    exact = counts.reindex(items, fill_value=0.0).to_numpy()
    noisy = laplace_mechanism(exact, epsilon, sensitivity=sensitivity, rng=rng)
    out = pd.DataFrame({"item_id": items.to_numpy(),
                        "count": np.clip(np.rint(noisy), 0, None).astype(np.int64)})
    return out.sort_values(["count", "item_id"], ascending=[False, True], ignore_index=True)
