"""The decision log both server-side bandits learn from (promotions and feed exploration).

Each decision is a context vector, the arm chosen and a reward that starts at 0; an outcome
event that cites the decision's ``request_id`` (and its key: the shown item, the promotion)
sets the reward to 1. The log is rebuilt from the store on first use, then kept in step by
the decisions the service makes and the events it is told about, so a refit never rescans the
store. Only the newest ``max_log`` decisions are kept. Each row remembers its user and time, so
a forgotten user's decisions, or those past retention, can be dropped (:meth:`DecisionLog.drop`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray


@dataclass
class DecisionLog:
    """In-memory (x, arm, reward) rows addressed by (request id, key)."""

    max_log: int = 1_000_000
    _x: list[list[float]] = field(default_factory=list)
    _arm: list[int] = field(default_factory=list)
    _reward: list[float] = field(default_factory=list)
    _user: list[str] = field(default_factory=list)
    _at: list[float] = field(default_factory=list)
    _key: dict[tuple[str, str], int] = field(default_factory=dict)
    _request: dict[str, list[int]] = field(default_factory=dict)
    _offset: int = 0  # rows dropped from the front
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._arm)

    def append(self, x: list[float], arm: int, request_id: str, key: str,
               reward: float = 0.0, *, user: str = "", at: float = 0.0) -> None:
        """One decision (``user`` and epoch time ``at`` only serve :meth:`drop`)."""
        with self._lock:
            self._append(x, arm, request_id, key, reward, user, at)

    def _append(self, x: list[float], arm: int, request_id: str, key: str, reward: float,
                user: str, at: float) -> None:
        row = self._offset + len(self._arm)
        self._key[(request_id, key)] = row
        self._request.setdefault(request_id, []).append(row)
        self._x.append(x)
        self._arm.append(arm)
        self._reward.append(reward)
        self._user.append(user)
        self._at.append(at)
        excess = len(self._arm) - self.max_log
        if excess > 0:
            del self._x[:excess], self._arm[:excess], self._reward[:excess]
            del self._user[:excess], self._at[:excess]
            self._offset += excess
        if len(self._key) > 2 * self.max_log:  # forget keys of dropped rows
            self._key = {k: v for k, v in self._key.items() if v >= self._offset}
            self._request = {r: [v for v in rows if v >= self._offset]
                             for r, rows in self._request.items()
                             if any(v >= self._offset for v in rows)}

    def drop(self, doomed: Callable[[str, float], bool]) -> int:
        """Remove the rows where ``doomed(user, at)`` (a forgotten user, past retention); how
        many. The rest keep their order and rewards."""
        with self._lock:
            keys = {row: k for k, row in self._key.items() if row >= self._offset}
            rows = [(self._x[i], self._arm[i], keys.get(self._offset + i, ("", "")),
                     self._reward[i], self._user[i], self._at[i]) for i in range(len(self._arm))]
            kept = [r for r in rows if not doomed(r[4], r[5])]
            if len(kept) == len(rows):
                return 0
            self._x, self._arm, self._reward, self._user, self._at = [], [], [], [], []
            self._key, self._request, self._offset = {}, {}, 0
            for x, arm, (request_id, key), reward, user, at in kept:
                self._append(x, arm, request_id, key, reward, user, at)
            return len(rows) - len(kept)

    def credit(self, request_id: str, key: str | None = None) -> bool:
        """Reward 1 for the decision (``request_id``, ``key``), or for every decision of the
        request when ``key`` is None; False when none is in the log."""
        with self._lock:
            if key is not None:
                row = self._key.get((request_id, key))
                rows = [] if row is None else [row]
            else:
                rows = self._request.get(request_id, [])
            hit = False
            for row in rows:
                if row >= self._offset:
                    self._reward[row - self._offset] = 1.0
                    hit = True
            return hit

    def arrays(self) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
        """Contexts, arms and rewards, oldest first (a copy, safe to fit on)."""
        with self._lock:
            x = np.asarray(self._x, dtype=np.float64)
            return (x if x.ndim == 2 else x.reshape(len(self._x), 0),
                    np.asarray(self._arm, dtype=np.int64),
                    np.asarray(self._reward, dtype=np.float64))


class ForgetsDecisions:
    """Erasure and retention for a bandit service: its :class:`DecisionLog` ``log`` drops the
    rows, then ``refit(force=True)`` fits the policy without them (both bandits share this)."""

    log: DecisionLog

    def refit(self, *, force: bool = False) -> None:
        raise NotImplementedError

    def forget_users(self, match: Callable[[str], bool]) -> int:
        """Drop the decisions shown to users where ``match`` and refit without them."""
        return self._drop(lambda user, _at: match(user))

    def expire(self, before: datetime) -> int:
        """Drop decisions older than ``before`` (retention) and refit without them."""
        cutoff = before.timestamp()
        return self._drop(lambda _user, at: at < cutoff)

    def _drop(self, doomed: Callable[[str, float], bool]) -> int:
        n = self.log.drop(doomed)
        if n:
            self.refit(force=True)
        return n
