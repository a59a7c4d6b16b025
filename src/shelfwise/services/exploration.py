"""Exploration slots in the feed: a contextual bandit over candidate sources.

A configurable number of feed positions are filled not by the blend but by a bandit that picks,
per slot, one of the bundle's generators (co-occurrence, semantic, EASE, popularity, …) and shows
that source's best item the rest of the feed does not already hold. Each decision is stored as an
``impression`` event with the user's context, the chosen source and the probability the policy
chose it; a click, cart add or purchase citing the ``request_id`` and that item is its reward.
So the feed keeps learning which source pays off for whom, beyond what its own model ranks
first, and the log supports off-policy evaluation of other source policies.

Learning: the decisions and their rewards are kept in a
:class:`~shelfwise.services.decisions.DecisionLog` (the last ``max_log``), rebuilt from the
store on first use, and the policy is refitted from it at most every ``refit_seconds`` when
something changed. The propensity is the source's probability (exact
for ε-greedy, LinUCB and uniform; Monte Carlo for Thompson sampling, see
:mod:`shelfwise.policies.bandits`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.data.schemas import Event, EventType
from shelfwise.exceptions import ConfigError
from shelfwise.policies import BasePolicy, make_policy
from shelfwise.retrieval.base import top_k
from shelfwise.services.context import CONTEXT_DIMS, UserContext
from shelfwise.services.decisions import DecisionLog, ForgetsDecisions
from shelfwise.services.recommender import Recommendation, RecommendationList, Recommender
from shelfwise.storage.base import Store

#: Outcomes that count as a reward for the slot whose item they cite.
REWARD_TYPES = (EventType.CLICK, EventType.CART, EventType.PURCHASE)


class ExplorationConfig(BaseModel):
    """How the feed explores; ``slots`` is the default a request can override."""

    model_config = ConfigDict(extra="forbid")

    slots: int = Field(default=0, ge=0, le=20, description="feed slots given to the bandit")
    policy: str = Field(default="egreedy", description="uniform, egreedy, linucb or thompson")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the policy's hyperparameters (egreedy: epsilon "
        "defaults to 0.2 here)")
    sources: list[str] | None = Field(
        default=None, description="bundle generators the bandit may pick; None = all of them")
    refit_seconds: float = Field(default=1.0, ge=0)
    max_log: int = Field(default=1_000_000, ge=1, description="decisions kept for learning")
    seed: int = 0

    @model_validator(mode="after")
    def _policy_ok(self) -> Self:
        if self.policy == "egreedy" and "epsilon" not in self.params:
            self.params = {"epsilon": 0.2, **self.params}
        check_policy(self.policy, self.params)
        return self


def check_policy(policy: str, params: dict[str, Any]) -> None:
    """Raise ValueError (for pydantic to name the field) when ``policy`` with ``params`` cannot
    be built."""
    try:
        make_policy(policy, n_actions=2, n_features=CONTEXT_DIMS, **params)
    except Exception as exc:
        raise ValueError(f"policy {policy!r} with params {params}: {exc}") from None


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


class FeedExplorer(ForgetsDecisions):
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
        self.log = DecisionLog(self.config.max_log)
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
        return len(self.log)

    # ---- the log -------------------------------------------------------------------------
    def _load(self) -> None:
        """Rebuild the decision log from stored decisions and the outcomes that cite them."""
        arm_of = {s: a for a, s in enumerate(self.sources)}
        decisions = [e for e in self.store.events_of_type(EventType.IMPRESSION)
                     if e.context.get("explore") and e.context.get("source") in arm_of
                     and e.request_id and e.item_id
                     and len(e.context.get("x") or ()) == CONTEXT_DIMS]
        for e in decisions:
            assert e.request_id is not None and e.item_id is not None
            self.log.append([float(v) for v in e.context["x"]], arm_of[e.context["source"]],
                            e.request_id, e.item_id, user=e.user_id,
                            at=e.timestamp.timestamp())
        self._credit(self.store.events_for_requests(
            [e.request_id or "" for e in decisions], types=REWARD_TYPES))
        self._loaded = True
        self._dirty = bool(decisions)

    def _credit(self, events: Sequence[Event]) -> bool:
        hit = False
        for e in events:
            if e.type in REWARD_TYPES and e.request_id and e.item_id:
                hit |= self.log.credit(e.request_id, e.item_id)
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
            if len(self.log):
                policy.fit(*self.log.arrays())
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

    def slots_for(self, n: int, slots: int | None = None) -> int:
        """How many of ``n`` feed positions go to exploration (``slots`` overrides the
        configured number; none without sources)."""
        if not self.sources:
            return 0
        return max(0, min(n, self.config.slots if slots is None else slots))

    def explore(self, request_id: str, user_id: str, base: RecommendationList, k: int, *,
                exclude_seen: bool = True) -> RecommendationList:
        """``base`` with ``k`` exploration items inserted at evenly spread positions, each
        decision stored (with its context and propensity) before the list is returned."""
        if k <= 0 or not self.sources:
            return base
        self.refit()
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
                    f"explore:{self.sources[decision.action]}", decision.propensity,
                    stage="explore"),
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
                                 "policy": self.config.policy, "surface": "feed"})
                  for pos, (rec, arm) in zip(positions, picks, strict=True)]
        if events:
            self.store.add_events(events)  # durable before the user can act on the list
            for e, (_rec, arm) in zip(events, picks, strict=True):
                assert e.item_id is not None
                self.log.append(xs, arm, request_id, e.item_id, user=user_id,
                                at=now.timestamp())
            self._dirty = True
        return RecommendationList(
            items, cold_start=base.cold_start, history_length=base.history_length,
            sources=sorted(set(base.sources) | {self.sources[a] for _r, a in picks}))
