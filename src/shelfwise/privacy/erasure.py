"""Forgetting a user and retention for one server process: the store first, then its memory.

The store deletes a user's rows in one transaction and leaves a tombstone (see
``storage/erasure.py``); this module drops what the process holds in memory about them: the
holders registered by the engine (cached histories and score memos, queued impressions, the
bandits' decision logs), each a :class:`UserState`. Several workers (or the
``shelfwise forget-user`` CLI) share one database, so each process also polls the store's
tombstones at most every ``[privacy] sync_seconds`` (one indexed query) and drops the users
forgotten elsewhere; writes stamped before an erasure never reach the store again (the
tombstone), whichever process queued them. Retention runs at start and then every
``[storage] retention_every_minutes`` in a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shelfwise.storage.base import Store, user_hash

logger = logging.getLogger(__name__)


class UserState(Protocol):
    """Something a server holds in memory per user, derived from stored events."""

    def forget_users(self, match: Callable[[str], bool]) -> int:
        """Drop what is held for stored user ids where ``match``; how many entries."""
        ...

    def expire(self, before: datetime) -> int:
        """Drop what came from events older than ``before`` (retention); how many entries."""
        ...


@dataclass(frozen=True)
class Forgotten:
    """What forgetting one user removed: store rows per table, the events among them per
    type, and in-memory entries per holder of this process."""

    rows: dict[str, int]
    events: dict[str, int]
    memory: dict[str, int]


def retention_cutoff(days: float, now: datetime | None = None) -> datetime:
    """Events stamped before this are past retention."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


class Erasures:
    """Forgets users and applies retention over ``store`` and the ``holders`` of one process."""

    def __init__(self, store: Store, holders: Mapping[str, UserState], *,
                 sync_seconds: float = 1.0, retention_days: float | None = None,
                 retention_every_seconds: float = 3600.0) -> None:
        self.store = store
        self.holders = dict(holders)
        self.sync_seconds = sync_seconds
        self.retention_days = retention_days
        self.retention_every_seconds = retention_every_seconds
        self._lock = threading.Lock()
        self._next_sync = 0.0
        known = store.tombstones()
        self.seen = known[-1].seq if known else 0
        """The newest tombstone this process has applied."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- forgetting ----------------------------------------------------------------------
    def forget(self, user_id: str) -> Forgotten:
        """Forget the stored user ``user_id`` everywhere: memory, then the store (one
        transaction), then memory again (what a request in flight cached meanwhile)."""
        def match(u: str) -> bool:
            return u == user_id
        memory = self._drop(match)
        erased = self.store.forget_user(user_id)
        for name, n in self._drop(match).items():
            memory[name] += n
        return Forgotten(erased.rows, erased.events, memory)

    def _drop(self, match: Callable[[str], bool]) -> dict[str, int]:
        return {name: holder.forget_users(match) for name, holder in self.holders.items()}

    def sync(self) -> int:
        """Drop from memory the users forgotten by other processes since the last look (at
        most every ``sync_seconds``); how many tombstones were new."""
        if time.monotonic() < self._next_sync:
            return 0
        with self._lock:
            now = time.monotonic()
            if now < self._next_sync:
                return 0
            self._next_sync = now + self.sync_seconds
            new = self.store.tombstones(self.seen)
            if not new:
                return 0
            hashes = {t.user_hash for t in new}
            seen: dict[str, bool] = {}

            def match(u: str) -> bool:
                hit = seen.get(u)
                if hit is None:
                    hit = seen[u] = user_hash(u) in hashes
                return hit
            self._drop(match)
            self.seen = new[-1].seq
        return len(new)

    def forgotten_after(self, when: datetime) -> int:
        """Users forgotten after ``when`` (e.g. since the bundle was trained)."""
        return sum(t.forgotten_at > when for t in self.store.tombstones())

    # ---- retention -----------------------------------------------------------------------
    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete events older than ``retention_days`` from the store and memory; how many
        stored events (0 when retention is off)."""
        if self.retention_days is None:
            return 0
        cutoff = retention_cutoff(self.retention_days, now)
        n = self.store.drop_events_before(cutoff)
        for holder in self.holders.values():
            holder.expire(cutoff)
        if n:
            logger.info("retention: %d events older than %s deleted", n, cutoff.isoformat())
        return n

    def start(self) -> None:
        """Apply retention now (before the first request) and then on schedule."""
        if self.retention_days is None or self._thread is not None:
            return
        self.apply_retention()
        self._thread = threading.Thread(target=self._run, name="shelfwise-retention",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.retention_every_seconds):
            try:
                self.apply_retention()
            except Exception:  # the store is down: try again next round
                logger.exception("applying retention failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
