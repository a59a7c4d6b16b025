"""Attribute-conditioned popularity: what shoppers sharing a user's attribute values use.

For every group attribute (``[serve.cold_start] attributes``, or the keys found in a sample of
users whose values are scalars with few distinct values) and every value with at least
``min_group_users`` users, the store counts the distinct users of that value per item
(:meth:`~shelfwise.storage.base.Store.attribute_popularity`: aggregates only, no user id).
A value's distribution ``q_g`` (its counts, normalised) is shrunk toward the global
distribution ``q`` (the bundle's cold-start generator, normalised) by the group's size ``n``:
``p_g = (n q_g + m q) / (n + m)`` with ``m = shrinkage``; a user with several attributes gets
the mean of their values' ``p_g`` (:class:`~shelfwise.services.cold_start.PopularityMix`,
evaluated on candidates only). Tables are built off the request path by a background thread
(at start, then every ``refresh_seconds``) and swapped in whole; a request reads one user row.
Forgotten users' events leave the counts at the next refresh (the tables never name anyone:
see docs/design-notes.md on forgetting users). ``window_days`` counts back from now: for an
imported historical log, set it to none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shelfwise.data.ids import IdMap
from shelfwise.services.cold_start import ColdStartConfig, Group, PopularityMix
from shelfwise.storage.base import Store, attribute_value

logger = logging.getLogger(__name__)


def _scalar_keys(sample: list[dict[str, Any]], max_values: int) -> list[str]:
    """Keys whose values in ``sample`` are scalars with 2..``max_values`` distinct values."""
    values: dict[str, set[str]] = {}
    bad: set[str] = set()
    for attrs in sample:
        for k, v in attrs.items():
            if k in bad:
                continue
            spelled = attribute_value(v)
            if spelled is None:
                if v is not None:
                    bad.add(k)
                continue
            values.setdefault(k, set()).add(spelled)
            if len(values[k]) > max_values:
                bad.add(k)
    return sorted(k for k, vs in values.items() if k not in bad and len(vs) >= 2)


class GroupPopularity:
    """The group tables of one server process, refreshed in the background."""

    def __init__(self, store: Store, items: IdMap, config: ColdStartConfig) -> None:
        self.store, self.items, self.config = store, items, config
        self._groups: dict[tuple[str, str], Group] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed_at: float | None = None
        """``time.time()`` of the last completed refresh (None before the first)."""
        self.keys: list[str] = []
        self._tried = threading.Event()

    @property
    def ready(self) -> bool:
        """The first count was attempted (done, or failed and logged: global popularity
        serves meanwhile, so readiness never waits on it for good)."""
        return self._tried.is_set()

    def start(self) -> None:
        """Refresh now and every ``refresh_seconds`` on a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shelfwise-groups",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a closed or unreachable store: try again next time
                logger.warning("refreshing attribute-conditioned popularity failed",
                               exc_info=True)
            self._tried.set()
            if self._stop.wait(self.config.refresh_seconds):
                return

    def refresh(self) -> int:
        """Recount every group from the store; how many groups qualify."""
        cfg = self.config
        keys = cfg.attributes
        if keys is None:
            keys = _scalar_keys(self.store.sample_user_attributes(), cfg.max_values)
        keys = [k for k in keys if k != cfg.interests_key]
        since = None
        if cfg.window_days is not None and self.store.get_meta("time_kind") != "ordinal":
            since = datetime.now(UTC) - timedelta(days=cfg.window_days)
        groups: dict[tuple[str, str], Group] = {}
        for key in keys:
            counts = self.store.attribute_popularity(key, since=since)
            per: dict[str, list[tuple[int, int]]] = {}
            for value, item_id, n in counts.items:
                idx = self.items.get(item_id)
                if idx is not None:
                    per.setdefault(value, []).append((idx, n))
            for value, users in counts.users.items():
                rows = per.get(value)
                if users < cfg.min_group_users or not rows:
                    continue
                rows.sort()
                where = np.asarray([r[0] for r in rows], np.int64)
                cnt = np.asarray([r[1] for r in rows], np.float64)
                groups[key, value] = Group(key, value, users, where, cnt / cnt.sum(),
                                           np.argsort(-cnt, kind="stable").astype(np.int64))
        with self._lock:
            self._groups, self.keys = groups, list(keys)
            self.refreshed_at = time.time()
        self._tried.set()
        return len(groups)

    def mix(self, attributes: Mapping[str, Any], base: PopularityMix) -> PopularityMix | None:
        """``base`` (global popularity) conditioned on the user's ``attributes``; None when no
        value of theirs is a known group (then global popularity is theirs)."""
        with self._lock:
            found = [g for k, v in attributes.items()
                     if (s := attribute_value(v)) is not None
                     and (g := self._groups.get((k, s))) is not None]
        if not found:
            return None
        m = self.config.shrinkage
        return base.with_groups([(g, g.users / (g.users + m)) for g in found])
