"""Promotions: eligibility, a contextual bandit's choice, and the decision log it learns from."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.ids import IdMap
from shelfwise.data.schemas import Event, EventType, Promotion
from shelfwise.exceptions import ConfigError
from shelfwise.policies import BasePolicy, make_policy
from shelfwise.services.context import CONTEXT_DIMS, UserContext
from shelfwise.services.recommender import Recommender


@dataclass(frozen=True)
class PromotionChoice:
    promotion: Promotion
    propensity: float
    score: float
    position: int


def eligible(promotion: Promotion, *, now: datetime, history_length: int,
             attributes: dict[str, Any]) -> bool:
    """Active now, and every rule holds. Rules: ``min_history`` / ``max_history`` (interactions),
    ``new_users_only`` (bool), ``user_attributes`` ({attribute: [allowed values]})."""
    if promotion.start and now < promotion.start:
        return False
    if promotion.end and now >= promotion.end:
        return False
    rules = promotion.rules
    if history_length < int(rules.get("min_history", 0)):
        return False
    if "max_history" in rules and history_length > int(rules["max_history"]):
        return False
    if rules.get("new_users_only") and history_length > 0:
        return False
    for key, allowed in dict(rules.get("user_attributes", {})).items():
        if attributes.get(key) not in set(allowed):
            return False
    return True


class PromotionService:
    """Chooses promotions with a contextual bandit and logs every decision with its propensity.

    Each decision is stored as a ``promotion_shown`` event (context vector, arm, propensity)
    before it is returned; a ``promotion_redeemed`` event citing the ``request_id`` is its
    reward. The policy is refitted from that log (at most every ``refit_seconds``), so a shown
    promotion counts as reward 0 until it is redeemed, and a restart loses nothing.
    """

    def __init__(self, store: Any, recommender: Recommender, *, policy: str = "egreedy",
                 params: dict[str, Any] | None = None, max_arms: int = 256,
                 refit_seconds: float = 1.0, seed: int = 0) -> None:
        self.store = store
        self.rec = recommender
        self.policy_name = policy
        self.params = {"epsilon": 0.1, **(params or {})} if policy == "egreedy" else dict(
            params or {})
        self.max_arms = max_arms
        self.refit_seconds = refit_seconds
        self.arms = IdMap()
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._context = UserContext(recommender)
        self.policy: BasePolicy = self._new_policy()
        self._dirty = True
        self._last_fit = 0.0
        self.n_logged_ = 0

    def _new_policy(self) -> BasePolicy:
        try:
            return make_policy(self.policy_name, n_actions=self.max_arms,
                               n_features=CONTEXT_DIMS, seed=0, **self.params)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"bad promotion policy settings: {exc}") from exc

    # ---- context -------------------------------------------------------------------------
    def context(self, user_id: str) -> tuple[NDArray[np.float64], int]:
        """The user's bandit context (see :class:`UserContext`) and history length."""
        x, history = self._context(user_id)
        return x, len(history)

    # ---- learning from the log -----------------------------------------------------------
    def notify(self, events: Sequence[Event]) -> None:
        """Called after events are stored: promotion outcomes make the policy stale."""
        if any(e.type in (EventType.PROMOTION_SHOWN, EventType.PROMOTION_REDEEMED)
               for e in events):
            self._dirty = True

    def refit(self, *, force: bool = False) -> None:
        """Fit the policy on every logged decision joined with its redemptions."""
        with self._lock:
            if not force and (not self._dirty or
                              time.monotonic() - self._last_fit < self.refit_seconds):
                return
            shown = self.store.events_of_type(EventType.PROMOTION_SHOWN)
            redeemed = {(e.request_id, e.context.get("promotion_id"))
                        for e in self.store.events_of_type(EventType.PROMOTION_REDEEMED)}
            xs, arms, rewards = [], [], []
            for e in shown:
                x, pid = e.context.get("x"), e.context.get("promotion_id")
                if x is None or pid is None or len(x) != CONTEXT_DIMS:
                    continue
                xs.append(x)
                arms.append(self._arm(str(pid)))
                hit = (e.request_id, pid) in redeemed or (e.request_id, None) in redeemed
                rewards.append(1.0 if hit else 0.0)
            policy = self._new_policy()
            if xs:
                policy.fit(np.asarray(xs), np.asarray(arms), np.asarray(rewards))
            self.policy = policy
            self.n_logged_ = len(xs)
            self._dirty = False
            self._last_fit = time.monotonic()

    def _arm(self, promotion_id: str) -> int:
        idx = self.arms.get(promotion_id)
        if idx is None:
            if len(self.arms) >= self.max_arms:
                raise ConfigError(f"more than {self.max_arms} promotions: raise max_arms")
            idx = int(self.arms.add([promotion_id])[0])
        return idx

    # ---- deciding ------------------------------------------------------------------------
    def choose(self, user_id: str, n: int = 1) -> tuple[str, list[PromotionChoice]]:
        """Up to ``n`` eligible promotions for the user, logged before they are returned.

        With n > 1 the choice is sequential without replacement; each propensity is the
        probability of that promotion at its position given the ones before it."""
        self.refit()
        now = datetime.now(UTC)
        x, history_length = self.context(user_id)
        user = self.store.get_user(user_id)
        attributes = user.attributes if user is not None else {}
        candidates = [p for p in self.store.list_promotions()
                      if eligible(p, now=now, history_length=history_length,
                                  attributes=attributes)]
        request_id = uuid.uuid4().hex
        chosen: list[PromotionChoice] = []
        with self._lock:
            by_arm = {self._arm(p.id): p for p in candidates}
            policy = self.policy
        for position in range(min(n, len(by_arm))):
            decision = policy.choose(x, sorted(by_arm), rng=self._rng)
            promo = by_arm.pop(decision.action)
            chosen.append(PromotionChoice(promo, decision.propensity,
                                          decision.scores.get(decision.action, 0.0), position))
        events = [
            Event(id=f"{request_id}:{c.position}", type=EventType.PROMOTION_SHOWN,
                  user_id=user_id, request_id=request_id, position=c.position,
                  propensity=c.propensity, timestamp=now,
                  context={"promotion_id": c.promotion.id, "x": [float(v) for v in x],
                           "policy": self.policy_name})
            for c in chosen
        ]
        if events:
            self.store.add_events(events)
            self._dirty = True
        return request_id, chosen
