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
from numpy.typing import NDArray

from shelfwise.data.schemas import Event, EventType
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
    times: NDArray[np.float64] | None = None
    """Epoch seconds of each decision, in log order."""


def _frame(events: list[Event]) -> pd.DataFrame:
    return pd.DataFrame(
        [(e.user_id, e.item_id, str(e.type), e.request_id, e.value, e.propensity,
          e.timestamp.timestamp(), e.context) for e in events],
        columns=["user_id", "item_id", "type", "request_id", "value", "propensity",
                 "timestamp", "context"])


def logged_decisions(store: Store, surface: Surface, *, since: datetime | None = None,
                     until: datetime | None = None) -> LoggedDecisions:
    """The stored decisions of ``surface`` with their rewards, oldest first.

    The database picks the decisions out (a JSON path of their context) and their outcomes
    come through the request-id index, so a store of a million clicks is not read to score a
    few thousand decisions."""
    since = since or datetime.fromtimestamp(0).astimezone()
    kind, path = ((EventType.IMPRESSION, "source") if surface == "exploration"
                  else (EventType.PROMOTION_SHOWN, "promotion_id"))
    marked = store.events_window([kind], since, until, context_path=[path])
    requests = sorted(set(marked["request_id"].dropna()))
    shown = _frame(store.events_for_requests(requests, types=[kind]))
    if not shown.empty:
        shown = shown[(shown["timestamp"] >= since.timestamp()) & (
            shown["timestamp"] < (until.timestamp() if until else float("inf")))]
    if surface == "exploration":
        keep = [isinstance(c, dict) and bool(c.get("explore")) and c.get("source") is not None
                and c.get("x") is not None for c in shown["context"]]
        shown = shown[np.asarray(keep, bool)]
        arm_key = [str(c["source"]) for c in shown["context"]]
        reward_types: tuple[EventType, ...] = _EXPLORE_REWARDS
        join = ["request_id", "item_id"]
    else:
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
    outcomes = _frame(store.events_for_requests(sorted(set(shown["request_id"])),
                                                types=list(reward_types)))
    outcomes = outcomes[outcomes["timestamp"] >= since.timestamp()]
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
                           datetime.fromtimestamp(float(ts.max())).astimezone(),
                           ts.to_numpy(np.float64))


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
