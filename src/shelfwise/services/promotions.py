"""Promotions: eligibility, a contextual bandit's choice, and the decision log it learns from."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.data.ids import IdMap
from shelfwise.data.schemas import Event, EventType, Promotion
from shelfwise.exceptions import ConfigError
from shelfwise.policies import BasePolicy, make_policy
from shelfwise.services.context import CONTEXT_DIMS, UserContext
from shelfwise.services.decisions import DecisionLog, ForgetsDecisions
from shelfwise.services.exploration import check_policy
from shelfwise.services.recommender import Recommender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionChoice:
    promotion: Promotion
    propensity: float
    score: float
    position: int
    explored: bool = False
    """The policy's score for it was below another eligible promotion's (an exploration)."""


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


class PromotionsConfig(BaseModel):
    """How promotions are chosen (``[serve.promotions]``; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    policy: str = Field(default="egreedy", description="uniform, egreedy, linucb or thompson")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the policy's hyperparameters")
    max_arms: int = Field(default=256, ge=1, description="promotions the bandit can tell apart")
    refit_seconds: float = Field(default=1.0, ge=0, description="refit at most this often")
    seed: int = 0

    @model_validator(mode="after")
    def _policy_ok(self) -> Self:
        check_policy(self.policy, self.params)
        return self


class PromotionService(ForgetsDecisions):
    """Chooses promotions with a contextual bandit and logs every decision with its propensity.

    Each decision is stored as a ``promotion_shown`` event (context vector, arm, propensity)
    before it is returned; a ``promotion_redeemed`` event citing the ``request_id`` is its
    reward. Decisions and rewards live in a :class:`DecisionLog` (rebuilt from the store on
    first use, then kept in step), refitted at most every ``refit_seconds``; a shown promotion
    counts as reward 0 until it is redeemed, and a restart loses nothing.
    """

    def __init__(self, store: Any, recommender: Recommender,
                 config: PromotionsConfig | None = None) -> None:
        self.store = store
        self.rec = recommender
        self.config = config or PromotionsConfig()
        self.policy_name = self.config.policy
        self.params = dict(self.config.params)
        self.max_arms = self.config.max_arms
        self.refit_seconds = self.config.refit_seconds
        self.arms = IdMap()
        self._over: set[str] = set()
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(self.config.seed)
        self._context = UserContext(recommender)
        self.policy: BasePolicy = self._new_policy()
        self.log = DecisionLog()
        self._loaded = False
        self._dirty = True
        self._last_fit = 0.0

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
    @property
    def n_logged_(self) -> int:
        return len(self.log)

    def _observe(self, events: Sequence[Event]) -> bool:
        """Shown promotions join the log; redemptions citing their request reward them."""
        changed = False
        for e in events:
            pid = e.context.get("promotion_id")
            if e.type == EventType.PROMOTION_SHOWN and e.request_id and pid is not None:
                x, arm = e.context.get("x"), self._arm(str(pid))
                if x is None or len(x) != CONTEXT_DIMS or arm is None:
                    continue
                self.log.append([float(v) for v in x], arm, e.request_id, str(pid),
                                user=e.user_id, at=e.timestamp.timestamp())
                changed = True
            elif e.type == EventType.PROMOTION_REDEEMED and e.request_id:
                changed |= self.log.credit(e.request_id, None if pid is None else str(pid))
        return changed

    def _load(self) -> None:
        """Rebuild the decision log from the store (once; then it is kept in step)."""
        shown = self.store.events_of_type(EventType.PROMOTION_SHOWN)
        self._observe(shown)
        self._observe(self.store.events_for_requests(
            [e.request_id or "" for e in shown], types=[EventType.PROMOTION_REDEEMED]))
        self._loaded = True

    def notify(self, events: Sequence[Event]) -> None:
        """Called after client events are stored: shown and redeemed promotions update the
        log (a redemption that arrives before its decision is loaded is read from the store
        then)."""
        with self._lock:
            if self._loaded and self._observe(events):
                self._dirty = True

    def refit(self, *, force: bool = False) -> None:
        """Fit the policy on every logged decision with its reward."""
        with self._lock:
            if not self._loaded:
                self._load()
            if not force and (not self._dirty or
                              time.monotonic() - self._last_fit < self.refit_seconds):
                return
            policy = self._new_policy()
            if len(self.log):
                policy.fit(*self.log.arrays())
            self.policy = policy
            self._dirty = False
            self._last_fit = time.monotonic()

    def _arm(self, promotion_id: str) -> int | None:
        """The promotion's arm; None once ``max_arms`` promotions have one (it is then never
        chosen, and a warning names it once, so one promotion too many never breaks the
        answer for everybody)."""
        idx = self.arms.get(promotion_id)
        if idx is None:
            if len(self.arms) >= self.max_arms:
                if promotion_id not in self._over:
                    self._over.add(promotion_id)
                    logger.warning("promotion %r ignored: the bandit already tells %d promotions "
                                "apart; raise serve.promotions.max_arms", promotion_id,
                                self.max_arms)
                return None
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
            arms = [(self._arm(p.id), p) for p in candidates]
            by_arm = {a: p for a, p in arms if a is not None}
            policy = self.policy
        for position in range(min(n, len(by_arm))):
            decision = policy.choose(x, sorted(by_arm), rng=self._rng)
            promo = by_arm.pop(decision.action)
            score = decision.scores.get(decision.action, 0.0)
            chosen.append(PromotionChoice(promo, decision.propensity, score, position,
                                          explored=score < max(decision.scores.values(),
                                                               default=score)))
        events = [
            Event(id=f"{request_id}:{c.position}", type=EventType.PROMOTION_SHOWN,
                  user_id=user_id, request_id=request_id, position=c.position,
                  propensity=c.propensity, timestamp=now,
                  context={"promotion_id": c.promotion.id, "x": [float(v) for v in x],
                           "policy": self.policy_name})
            for c in chosen
        ]
        if events:
            self.store.add_events(events)  # durable before the user can act on it
            with self._lock:
                self._observe(events)
                self._dirty = True
        return request_id, chosen
