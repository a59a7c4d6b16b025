"""Offline replay: what a candidate policy would have done on the logged decisions, before it
goes live (issue 16, part 5).

The server logs every decision it randomises with the probability of its choice: feed
exploration slots (``impression`` events with ``context.explore``, the chosen source, the
context vector ``x`` and the propensity) and promotions (``promotion_shown`` with the
promotion id, ``x`` and the propensity). Rewards are the outcomes that cite the decision's
request id: a click, cart add or purchase of the slot's item; a redemption of the promotion.
That log is a :class:`~shelfwise.policies.ope.BanditLog`; the candidate policy is trained on
its older part and scored on the newer part by off-policy estimators with intervals, beside
the logged policy's own mean reward on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from shelfwise.data.schemas import EventType
from shelfwise.exceptions import InvalidRequestError
from shelfwise.policies.base import BasePolicy
from shelfwise.policies.offline import policy_distribution, train_on_head
from shelfwise.policies.ope import BanditLog, evaluate_policy
from shelfwise.storage.base import Store

Surface = Literal["exploration", "promotions"]
_EXPLORE_REWARDS = (EventType.CLICK, EventType.CART, EventType.PURCHASE)


@dataclass
class LoggedDecisions:
    log: BanditLog
    arms: list[str]
    """Arm names in index order (generators for exploration, promotion ids)."""
    start: datetime | None
    end: datetime | None


def logged_decisions(store: Store, surface: Surface, *, since: datetime | None = None,
                     until: datetime | None = None) -> LoggedDecisions:
    """The stored decisions of ``surface`` with their rewards, oldest first."""
    since = since or datetime.fromtimestamp(0).astimezone()
    if surface == "exploration":
        shown = store.events_window([EventType.IMPRESSION], since, until)
        keep = [isinstance(c, dict) and bool(c.get("explore")) and c.get("source") is not None
                and c.get("x") is not None for c in shown["context"]]
        shown = shown[np.asarray(keep, bool)]
        arm_key = [str(c["source"]) for c in shown["context"]]
        reward_types: tuple[EventType, ...] = _EXPLORE_REWARDS
        join = ["request_id", "item_id"]
    else:
        shown = store.events_window([EventType.PROMOTION_SHOWN], since, until)
        keep = [isinstance(c, dict) and c.get("promotion_id") is not None
                and c.get("x") is not None for c in shown["context"]]
        shown = shown[np.asarray(keep, bool)]
        arm_key = [str(c["promotion_id"]) for c in shown["context"]]
        reward_types = (EventType.PROMOTION_REDEEMED,)
        join = ["request_id", "arm"]
    if shown.empty:
        raise InvalidRequestError(
            f"no logged {surface} decisions with propensities in the store"
            + (" in that period" if until or since.year > 1970 else "")
            + ("; turn on feed exploration slots (serve.exploration.slots)" if
               surface == "exploration" else "; serve promotions first"))
    shown = shown.assign(arm=arm_key)
    outcomes = store.events_window(list(reward_types), since, None)
    outcomes = outcomes[outcomes["request_id"].isin(set(shown["request_id"]))]
    if surface == "promotions":
        outcomes = outcomes.assign(arm=[
            str(c.get("promotion_id")) if isinstance(c, dict) else "" for c in outcomes["context"]])
    hit = outcomes[join].drop_duplicates().assign(reward=1.0)
    rows = shown.merge(hit, on=join, how="left")
    arms = sorted(set(arm_key))
    index = {a: k for k, a in enumerate(arms)}
    x = np.asarray([list(map(float, c["x"])) for c in rows["context"]], np.float64)
    if rows["propensity"].isna().any():
        raise InvalidRequestError("some logged decisions have no propensity; they cannot be "
                                  "replayed")
    log = BanditLog.from_arrays([index[a] for a in rows["arm"]], rows["reward"].fillna(0.0),
                                rows["propensity"], contexts=x, n_actions=len(arms))
    ts = rows["timestamp"]
    return LoggedDecisions(log, arms, datetime.fromtimestamp(float(ts.min())).astimezone(),
                           datetime.fromtimestamp(float(ts.max())).astimezone())


@dataclass
class Replay:
    surface: Surface
    policy: str
    trained_rows: int
    evaluated_rows: int
    logged_value: float
    estimates: pd.DataFrame
    arms: list[str]

    def to_record(self) -> dict[str, Any]:
        return {"surface": self.surface, "policy": self.policy,
                "trained_rows": self.trained_rows, "evaluated_rows": self.evaluated_rows,
                "logged_value": self.logged_value, "arms": self.arms,
                "estimates": self.estimates.to_dict(orient="records")}


def replay(decisions: LoggedDecisions, policy: BasePolicy, surface: Surface, *,
           train_fraction: float = 0.5, estimators: tuple[str, ...] = ("snips", "dr", "ips"),
           alpha: float = 0.05, seed: int = 0) -> Replay:
    """Train ``policy`` on the oldest ``train_fraction`` of the decisions, then estimate its
    value on the rest with each estimator and its interval."""
    full = decisions.log
    log = train_on_head(policy, full, train_fraction)
    if log.n_rounds < 2:
        raise InvalidRequestError(f"only {log.n_rounds} decisions left to evaluate after "
                                  "training; lower --train-fraction or log more")
    dist = policy_distribution(policy, log, seed)
    table = evaluate_policy(log, dist, list(estimators), alpha=alpha, seed=seed)
    return Replay(surface, policy.name, full.n_rounds - log.n_rounds, log.n_rounds,
                  float(log.rewards.mean()), table, decisions.arms)
