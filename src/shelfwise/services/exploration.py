"""Exploration slots in the feed: a contextual bandit over candidate sources.

A configurable number of feed positions are filled not by the blend but by a bandit that picks,
per slot, one of the bundle's generators (co-occurrence, semantic, EASE, popularity, …) and shows
that source's best item the rest of the feed does not already hold. Each decision is stored as an
``impression`` event with the user's context, the chosen source and the probability the policy
chose it; a click, cart add or purchase citing the ``request_id`` and that item is its reward.
So the feed keeps learning which source pays off for whom, beyond what its own model ranks
first, and the log supports off-policy evaluation of other source policies.

Learning: the decisions and their rewards are kept in memory (the last ``max_log``), rebuilt
from the store on first use, and the policy is refitted from them at most every
``refit_seconds`` when something changed. The propensity is the source's probability (exact
for ε-greedy, LinUCB and uniform; Monte Carlo for Thompson sampling, see
:mod:`shelfwise.policies.bandits`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.data.schemas import Event, EventType
from shelfwise.exceptions import ConfigError
from shelfwise.policies import BasePolicy, make_policy
from shelfwise.retrieval.base import top_k
from shelfwise.services.context import CONTEXT_DIMS, UserContext
from shelfwise.services.recommender import Recommendation, RecommendationList, Recommender
from shelfwise.storage.base import Store

#: Outcomes that count as a reward for the slot whose item they cite.
REWARD_TYPES = (EventType.CLICK, EventType.CART, EventType.PURCHASE)


class ExplorationConfig(BaseModel):
    """How the feed explores; ``slots`` is the default a request can override."""

    model_config = ConfigDict(extra="forbid")

    slots: int = Field(default=0, ge=0, le=20, description="feed slots given to the bandit")
    policy: str = Field(default="egreedy", description="uniform, egreedy, linucb or thompson")
    params: dict[str, Any] = Field(default_factory=lambda: {"epsilon": 0.2},
                                   description="the policy's hyperparameters")
    sources: list[str] | None = Field(
        default=None, description="bundle generators the bandit may pick; None = all of them")
    refit_seconds: float = Field(default=1.0, ge=0)
    max_log: int = Field(default=1_000_000, ge=1, description="decisions kept for learning")
    seed: int = 0


def slot_positions(n: int, slots: int) -> list[int]:
    """Feed positions (0-based) of ``slots`` exploration items in a list of ``n``, spread evenly
    so that neither the top of the feed nor only its tail is given away."""
    slots = min(slots, n)
    if slots <= 0:
        return []
    if slots == n:
        return list(range(n))
    spots = sorted({min(n - 1, round((j + 1) * n / (slots + 1))) for j in range(slots)})
    free = [p for p in range(n - 1, -1, -1) if p not in spots]
    while len(spots) < slots:  # rounding collided: take free positions from the tail
        spots.append(free.pop(0))
    return sorted(spots)


class FeedExplorer:
    """Fills exploration slots of the feed and learns from their outcomes."""

    def __init__(self, store: Store, recommender: Recommender,
                 config: ExplorationConfig | None = None) -> None:
        self.store = store
        self.rec = recommender
        self.config = config or ExplorationConfig()
        known = sorted(recommender.bundle.generators)
        wanted = self.config.sources if self.config.sources is not None else known
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise ConfigError(f"exploration sources {unknown} are not in the bundle; "
                              f"known: {', '.join(known)}")
        self.sources: list[str] = sorted(set(wanted))
        self._context = UserContext(recommender)
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(self.config.seed)
        self.policy: BasePolicy = self._new_policy()
        self._x: list[list[float]] = []
        self._arm: list[int] = []
        self._reward: list[float] = []
        self._key: dict[tuple[str, str], int] = {}
        self._offset = 0  # decisions dropped from the front of the in-memory log
        self._loaded = False
        self._dirty = False
        self._last_fit = 0.0

    def _new_policy(self) -> BasePolicy:
        try:
            return make_policy(self.config.policy, n_actions=max(1, len(self.sources)),
                               n_features=CONTEXT_DIMS, seed=self.config.seed,
                               **self.config.params)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"bad feed exploration policy settings: {exc}") from exc

    @property
    def n_logged_(self) -> int:
        return len(self._arm)

    # ---- the log -------------------------------------------------------------------------
    def _append(self, x: list[float], arm: int, request_id: str, item_id: str,
                reward: float = 0.0) -> None:
        self._key[(request_id, item_id)] = self._offset + len(self._arm)
        self._x.append(x)
        self._arm.append(arm)
        self._reward.append(reward)
        excess = len(self._arm) - self.config.max_log
        if excess > 0:
            del self._x[:excess], self._arm[:excess], self._reward[:excess]
            self._offset += excess
        if len(self._key) > 2 * self.config.max_log:  # keys of dropped rows: _credit skips them
            self._key = {k: v for k, v in self._key.items() if v >= self._offset}

    def _load(self) -> None:
        """Rebuild the in-memory log from stored decisions and the outcomes that cite them."""
        arm_of = {s: a for a, s in enumerate(self.sources)}
        decisions = [e for e in self.store.events_of_type(EventType.IMPRESSION)
                     if e.context.get("explore") and e.context.get("source") in arm_of
                     and e.request_id and e.item_id
                     and len(e.context.get("x") or ()) == CONTEXT_DIMS]
        for e in decisions:
            assert e.request_id is not None and e.item_id is not None
            self._append([float(v) for v in e.context["x"]], arm_of[e.context["source"]],
                         e.request_id, e.item_id)
        self._credit(self.store.events_for_requests(
            [e.request_id or "" for e in decisions], types=REWARD_TYPES))
        self._loaded = True
        self._dirty = bool(decisions)

    def _credit(self, events: Sequence[Event]) -> bool:
        hit = False
        for e in events:
            if e.type in REWARD_TYPES and e.request_id and e.item_id:
                row = self._key.get((e.request_id, e.item_id))
                if row is not None and row >= self._offset:
                    self._reward[row - self._offset] = 1.0
                    hit = True
        return hit

    def notify(self, events: Sequence[Event]) -> None:
        """Called after events are stored: outcomes citing an exploration slot reward it."""
        with self._lock:
            if self._loaded and self._credit(events):
                self._dirty = True

    def refit(self, *, force: bool = False) -> None:
        """Refit the policy on every decision in memory (rate-limited unless ``force``)."""
        with self._lock:
            if not self._loaded:
                self._load()
            if not force and (not self._dirty or
                              time.monotonic() - self._last_fit < self.config.refit_seconds):
                return
            policy = self._new_policy()
            if self._arm:
                policy.fit(np.asarray(self._x), np.asarray(self._arm),
                           np.asarray(self._reward))
            self.policy = policy
            self._dirty = False
            self._last_fit = time.monotonic()

    # ---- deciding ------------------------------------------------------------------------
    def _source_lists(self, history: np.ndarray, taken: set[int], k: int) -> list[list[int]]:
        """Each source's best ``k`` items that are allowed and not yet in the feed."""
        n_items = self.rec.n_model_items
        exclude = np.fromiter(taken, dtype=np.int64, count=len(taken))
        lists = []
        for name in self.sources:
            raw = self.rec.generator_scores(name, history)
            scores = np.full(n_items, -np.inf, np.float32)
            m = min(n_items, raw.shape[0])
            scores[:m] = raw[:m]
            scores[self.rec.blocked[:n_items]] = -np.inf
            idx, _ = top_k(scores[None, :], k, exclude=[exclude])
            lists.append([int(i) for i in idx[0] if i >= 0])
        return lists

    def feed(self, user_id: str, n: int = 10, *, slots: int | None = None,
             exclude_seen: bool = True) -> tuple[str, RecommendationList]:
        """The user's feed with ``slots`` (default: the configured number) exploration items,
        each decision logged before the list is returned; also the ``request_id`` to cite."""
        request_id = uuid.uuid4().hex
        k = min(n, self.config.slots if slots is None else slots)
        if k <= 0 or not self.sources:
            return request_id, self.rec.feed(user_id, n, exclude_seen=exclude_seen)
        self.refit()
        base = self.rec.feed(user_id, n - k, exclude_seen=exclude_seen) if n > k else \
            RecommendationList([], history_length=len(self.rec.history(user_id)))
        x, history = self._context(user_id)
        taken = {i for i in self.rec.items.indices([r.item_id for r in base.items]) if i >= 0}
        if exclude_seen:
            taken |= {int(i) for i in history}
        lists = self._source_lists(history, taken, k + len(taken))
        picks: list[tuple[Recommendation, int]] = []
        with self._lock:
            policy = self.policy
            for _slot in range(k):
                nexts = [next((i for i in lst if i not in taken), None) for lst in lists]
                eligible = [a for a, i in enumerate(nexts) if i is not None]
                if not eligible:
                    break
                decision = policy.choose(x, eligible, rng=self._rng)
                item = nexts[decision.action]
                assert item is not None
                taken.add(item)
                picks.append((Recommendation(
                    self.rec.items.external(item), decision.scores.get(decision.action, 0.0),
                    f"explore:{self.sources[decision.action]}", decision.propensity),
                    decision.action))
        items = list(base.items)
        positions = slot_positions(len(items) + len(picks), len(picks))
        for pos, (rec, _arm) in zip(positions, picks, strict=True):
            items.insert(pos, rec)
        now = datetime.now(UTC)
        xs = [float(v) for v in x]
        events = [Event(id=f"{request_id}:explore:{pos}", type=EventType.IMPRESSION,
                        user_id=user_id, item_id=rec.item_id, request_id=request_id,
                        position=pos, propensity=rec.propensity, timestamp=now,
                        context={"explore": True, "source": self.sources[arm], "x": xs,
                                 "policy": self.config.policy})
                  for pos, (rec, arm) in zip(positions, picks, strict=True)]
        if events:
            self.store.add_events(events)  # durable before the user can act on the list
            with self._lock:
                for e, (_rec, arm) in zip(events, picks, strict=True):
                    assert e.item_id is not None
                    self._append(xs, arm, request_id, e.item_id)
                self._dirty = True
        return request_id, RecommendationList(
            items, cold_start=base.cold_start, history_length=base.history_length,
            sources=sorted(set(base.sources) | {self.sources[a] for _r, a in picks}))
