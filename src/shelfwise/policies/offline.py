"""Learning a candidate policy on the older part of a log and reading its choice
probabilities on the rest: shared by ``shelfwise evaluate-policy`` and ``experiment replay``."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError
from shelfwise.policies.base import BasePolicy
from shelfwise.policies.ope import BanditLog


def train_on_head(policy: BasePolicy, log: BanditLog, fraction: float) -> BanditLog:
    """Fit ``policy`` on the first ``fraction`` of the rows; return the rest for evaluation."""
    if not 0 <= fraction < 1:
        raise ConfigError("--train-fraction must be in [0, 1)")
    n_train = round(fraction * log.n_rounds)
    if n_train:
        head = log.take(np.arange(n_train))
        x = head.contexts if head.contexts is not None else np.zeros((n_train, 0))
        policy.fit(x, head.actions, head.rewards)
    return log.take(np.arange(n_train, log.n_rounds))


def policy_distribution(policy: BasePolicy, log: BanditLog, seed: int) -> NDArray[np.float64]:
    """The policy's (n, n_actions) choice probabilities on the log's contexts."""
    if policy.n_actions != log.n_actions:
        raise ConfigError(f"the policy has {policy.n_actions} arms, the log {log.n_actions}")
    x = log.contexts if log.contexts is not None else np.zeros((log.n_rounds, 0))
    return policy.action_probabilities(x, rng=np.random.default_rng(seed))
