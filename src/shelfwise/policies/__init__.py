"""Contextual bandits for promotions, and off-policy estimators to evaluate them on logs."""

from shelfwise.policies.bandits import (
    POLICIES,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    UniformRandom,
)
from shelfwise.policies.base import BasePolicy, Decision, Policy, PolicyConfig
from shelfwise.policies.ope import (
    DM,
    DR,
    ESTIMATORS,
    IPS,
    SNIPS,
    BanditLog,
    BaseEstimator,
    DRos,
    Estimate,
    OffPolicyEstimator,
    SwitchDR,
    empirical_action_distribution,
    evaluate_policy,
    make_estimator,
)
from shelfwise.policies.registry import load_policy, make_policy
from shelfwise.policies.reward_models import (
    LogisticRewardModel,
    RewardModel,
    RidgeRewardModel,
    cross_fit,
)

__all__ = [
    "DM",
    "DR",
    "ESTIMATORS",
    "IPS",
    "POLICIES",
    "SNIPS",
    "BanditLog",
    "BaseEstimator",
    "BasePolicy",
    "DRos",
    "Decision",
    "EpsilonGreedy",
    "Estimate",
    "LinUCB",
    "LinearThompson",
    "LogisticRewardModel",
    "OffPolicyEstimator",
    "Policy",
    "PolicyConfig",
    "RewardModel",
    "RidgeRewardModel",
    "SwitchDR",
    "UniformRandom",
    "cross_fit",
    "empirical_action_distribution",
    "evaluate_policy",
    "load_policy",
    "make_estimator",
    "make_policy",
]
