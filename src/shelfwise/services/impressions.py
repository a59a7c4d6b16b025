"""Impressions for every list served: what was shown, to whom, where, under which request.

Feeds, searches, similar items, carts and promotions each log the items they returned as
``impression`` events (request id, user or anonymous session, surface, item, position, bundle
version), so any click, cart add or purchase that cites the ``request_id`` joins what was shown.
Impressions are written behind the response in batches (a bounded delay; the queue is flushed
on shutdown), and so is the ``search`` event of a signed-in user's search (the log the search
ranker learns from; until it is stored, :meth:`ImpressionLog.pending_queries` gives its query
to the cold-start profile, so the next feed follows it at once); decisions that a learner
needs before the user can act (exploration slots, promotions) and accepted client events are
written before the answer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, IntegrityError

from shelfwise.data.schemas import Event, EventType
from shelfwise.storage.base import EVENT_ROW_COLUMNS, EventRow, Store

IMPRESSION = EventType.IMPRESSION.value
SEARCH = EventType.SEARCH.value
assert EVENT_ROW_COLUMNS[2] == "user_id" and EVENT_ROW_COLUMNS[9] == "timestamp"

log = logging.getLogger(__name__)


class ImpressionsConfig(BaseModel):
    """How served lists are logged (``[serve.impressions]``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="log what every list showed")
    flush_seconds: float = Field(
        default=0.1, gt=0, le=60,
        description="longest delay before a shown list is stored (short: a second of lists "
        "written at once held the GIL long enough to stall requests by 20-30 ms)")
    batch_size: int = Field(default=2000, ge=1, description="flush once this many are queued")
    max_queue: int = Field(default=200_000, ge=1,
                           description="queued impressions beyond this are written at once "
                           "by the request that adds them (back-pressure, never dropped)")


class ImpressionLog:
    """Write-behind log of shown lists: ``log`` queues impression events, a background thread
    stores them in batches at most ``flush_seconds`` later; ``flush`` writes the queue now
    (called on shutdown and by tests). Nothing queued is dropped: past ``max_queue`` the
    caller writes the batch itself."""

    def __init__(self, store: Store, config: ImpressionsConfig | None = None) -> None:
        self.store = store
        self.config = config or ImpressionsConfig()
        self._queue: list[EventRow] = []
        self._searches: dict[str, list[EventRow]] = {}  # per user, queued or being written
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written_ = 0
        self.refused_ = 0

    def log(self, surface: str, request_id: str, user_id: str | None, item_ids: Sequence[str],
            *, session_id: str | None = None, bundle: str | None = None,
            extra: dict[str, Any] | None = None) -> None:
        """Queue one impression per shown item (position = list order). Anonymous lists are
        keyed by ``session_id`` (or the request id) so a later event can still join them."""
        if not self.config.enabled or not item_ids:
            return
        who = user_id or f"anon:{session_id or request_id}"
        now = datetime.now(UTC)
        ctx = {"surface": surface, "bundle": bundle, "anonymous": user_id is None,
               **(extra or {})}
        # the list's first impression validates what every row shares; the rows are built
        # here, a few per request, so the writer thread holds the GIL only briefly (a second
        # of lists turned into rows at once stalled requests by 20-30 ms)
        first = Event(id=f"{request_id}:shown:0", type=EventType.IMPRESSION, user_id=who,
                      item_id=item_ids[0], request_id=request_id, position=0, timestamp=now,
                      context=ctx)
        context, ts = json.dumps(first.context, allow_nan=False), now.timestamp()
        events: list[EventRow] = [
            (f"{request_id}:shown:{pos}", IMPRESSION, who, item, None, request_id, pos, None,
             None, ts, context) for pos, item in enumerate(item_ids)]
        with self._lock:
            self._queue.extend(events)
            size = len(self._queue)
        if size >= self.config.max_queue:
            self.flush()
            return
        self._ensure_thread()
        if size >= self.config.batch_size:
            self._wake.set()

    def log_search(self, request_id: str, user_id: str, query: str, item_ids: Sequence[str],
                   endpoint: str) -> None:
        """Queue the ``search`` event of a signed-in user's search (query and the items it
        showed), stored with the next batch of impressions. NUL characters, which the store
        refuses in text (and which would stop every later batch), are left out of the log."""
        event = Event(id=f"search-{request_id}", type=EventType.SEARCH, user_id=user_id,
                      query=query.replace("\x00", ""), request_id=request_id,
                      timestamp=datetime.now(UTC),
                      context={"items": list(item_ids[:50]), "endpoint": endpoint})
        row: EventRow = (event.id, SEARCH, user_id, None, event.query, request_id, None, None,
                         None, event.timestamp.timestamp(),
                         json.dumps(event.context, allow_nan=False))
        with self._lock:
            self._queue.append(row)
            self._searches.setdefault(user_id, []).append(row)
            size = len(self._queue)
        if size >= self.config.max_queue:
            self.flush()
            return
        self._ensure_thread()

    def pending_queries(self, user_id: str) -> list[str]:
        """The user's search queries logged here and not stored yet, oldest first."""
        with self._lock:
            return [str(r[4]) for r in self._searches.get(user_id, ())]

    def flush(self) -> int:
        """Store everything queued now; returns how many events were written."""
        with self._write_lock:
            with self._lock:
                batch, self._queue = self._queue, []
            if not batch:
                return 0
            try:
                written = self._write(batch)
            except Exception:
                with self._lock:  # keep them for the next flush, in order
                    self._queue[:0] = batch
                raise
            with self._lock:  # stored (or set aside): the store now answers for searches
                for row in batch:
                    if row[1] == SEARCH and row[2] in self._searches:
                        rows = self._searches[row[2]]
                        if row in rows:
                            rows.remove(row)
                        if not rows:
                            del self._searches[row[2]]
            self.written_ += written
            return written

    def _write(self, rows: list[EventRow]) -> int:
        """Store ``rows``; how many were written. A row the database refuses for its data
        (integrity or data error) is set aside, logged and counted in ``refused_``: retried,
        it would stop every later batch. Any other failure (the store is down, locked, full)
        is raised and the caller keeps the rows; rows already written are written again
        next time, which their ids make a no-op."""
        try:
            self.store.add_event_rows(rows)
            return len(rows)
        except (IntegrityError, DataError) as exc:
            if len(rows) == 1:
                self.refused_ += 1
                log.error("the store refused logged event %r (%s); set aside", rows[0][0],
                          str(exc).splitlines()[0])
                return 0
        mid = len(rows) // 2  # halve until the refused rows stand alone
        return self._write(rows[:mid]) + self._write(rows[mid:])

    def forget_users(self, match: Callable[[str], bool]) -> int:
        """Drop queued impressions of users where ``match``; how many. (A batch already being
        written is stopped by the store's tombstone.)"""
        return self._drop(lambda row: match(row[2]))

    def expire(self, before: datetime) -> int:
        """Drop queued impressions older than ``before`` (retention)."""
        cut = before.timestamp()
        return self._drop(lambda row: row[9] < cut)

    def _drop(self, doomed: Callable[[EventRow], bool]) -> int:
        with self._lock:
            kept = [e for e in self._queue if not doomed(e)]
            n, self._queue = len(self._queue) - len(kept), kept
            searches = {u: [r for r in rows if not doomed(r)]
                        for u, rows in self._searches.items()}
            self._searches = {u: rows for u, rows in searches.items() if rows}
        return n

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="shelfwise-impressions",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the store is down: keep the queue, try again next round
                log.exception("writing impressions failed; retrying")

    def close(self) -> None:
        """Stop the writer and store what is still queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
