"""The shop's activity over time for the overview page, kept up to date off the request path.

Events per day and type are counted at the first look at the overview, then only for rows
stored since (the events table's arrival number), in a background thread from then on: at
2.6M events the full count takes ~2.6 s of CPU on SQLite (1.4 s events per day, 1.2 s users'
first days), each update a few milliseconds. Everything is recounted every
``recount_minutes`` (forgotten users and retention delete events; new users per day need a
full pass). Events per minute is the growth of the arrival number over the last minute, so it
counts every writer of the store (all workers, imports).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import pandas as pd

from shelfwise.storage.base import Store

logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["day", "type", "n"]))
    """Events per (day, type), days since the epoch."""
    new_users: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))
    new_items: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))
    per_minute: float | None = None
    counted_at: float = 0.0


class Activity:
    """Counts behind the overview; :meth:`snapshot` never waits for a full count twice."""

    def __init__(self, store: Store, refresh_seconds: float = 10.0,
                 recount_minutes: float = 30.0) -> None:
        self.store, self.refresh_seconds = store, refresh_seconds
        self.recount_seconds = recount_minutes * 60
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._seq = 0
        self._full_at = -float("inf")
        self._updated_at = -float("inf")
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving = False  # between the server's serve() and stop(): a look may start it
        self._start_lock = threading.Lock()

    def update(self, *, full: bool = False) -> None:
        """Bring the counts up to date (recount everything when due or ``full``)."""
        with self._lock:
            now = time.monotonic()
            if full or now - self._full_at >= self.recount_seconds:
                frame, seq = self.store.daily_event_counts()
                users, items = self.store.user_first_days(), self.store.item_created_days()
                self._snap = Snapshot(frame, users, items)
                self._full_at = now
            else:
                frame, seq = self.store.daily_event_counts(after_seq=self._seq)
                if not frame.empty:
                    both = pd.concat([self._snap.events, frame])
                    self._snap.events = both.groupby(["day", "type"], as_index=False).agg(
                        n=("n", "sum"))
            self._seq = seq
            self._samples.append((now, seq))
            old = [s for s in self._samples if now - s[0] >= 55]
            base = old[-1] if old else self._samples[0]
            span = now - base[0]
            self._snap.per_minute = (seq - base[1]) * 60 / span if span >= 5 else None
            self._snap.counted_at = time.time()
            self._updated_at = now

    def snapshot(self) -> Snapshot:
        """The latest counts (counted now if never, or if the refresher is not running and
        they are older than ``refresh_seconds``). The first look starts the refresher: a
        server whose overview nobody opens never counts (counting at start took each worker's
        CPU while the first shoppers were served)."""
        stale = time.monotonic() - self._updated_at >= self.refresh_seconds
        idle = self._thread is None or not self._thread.is_alive()
        if (stale and idle) or self._updated_at == -float("inf"):
            self.update()
        if self._serving and self._thread is None:
            self.start()
        with self._lock:
            return self._snap

    def serve(self) -> None:
        """Let the first look start the refresher (a server's start; :meth:`stop` ends it)."""
        self._serving = True

    def start(self) -> None:
        """Count in a background thread every ``refresh_seconds`` until :meth:`stop`."""
        with self._start_lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="shelfwise-dashboard",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.update()
            except Exception:  # the store is briefly unavailable: try again next time
                logger.exception("dashboard activity count failed")
            self._stop.wait(self.refresh_seconds)

    def stop(self) -> None:
        self._serving = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
