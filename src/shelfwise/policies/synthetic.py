"""Synthetic logged-bandit data with the shop's shape and an exactly known policy value.

A shop's promotion or exploration slot in miniature:

* a finite population of ``n_users`` user profiles (feature vectors, heavy-tailed visit
  frequencies), so expectations over users are finite sums, not Monte Carlo;
* ``n_actions`` arms (promotions / items) with their own popularity and context slopes;
* ``n_positions`` slots drawn uniformly per impression with a cascade-like examination
  probability κ_k; click probability q(x, a, k) = κ_k · σ(η(x, a)), where
  η = base + b_a + x·W_a + γ·c_a·x₀x₁ (the product term keeps linear reward models misspecified);
* a logging policy with known propensities: a softmax over a *noisy* copy of η (fixed
  per user and arm: a production model's error) with an ε uniform floor;
* evaluation policies at increasing distance from the logging one (:data:`POLICY_NAMES`).

Policies choose an arm per impression, independently of the slot, so a policy's value (expected
click per impression) is V(π) = κ̄ · Σ_u P(u) Σ_a π(a|u) σ(η(u, a)) with κ̄ = mean_k κ_k, computed
exactly from the true expected rewards (:meth:`SyntheticShop.true_value`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.policies.ope import BanditLog

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: evaluation policies, nearest to the logging policy first
POLICY_NAMES: tuple[str, ...] = ("logging", "sharper", "true-softmax", "uniform", "eps-greedy")


class SyntheticShopConfig(BaseModel):
    """Shape and noise of the simulated shop; ``seed`` fixes its parameters (not the logs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(default=2000, ge=1)
    n_features: int = Field(default=5, ge=2)
    n_actions: int = Field(default=10, ge=2)
    n_positions: int = Field(default=3, ge=1)
    examination: tuple[float, ...] | None = Field(
        default=None, description="κ per slot; default 1/√(1+k)")
    base_logit: float = Field(default=-3.0, description="sets the overall CTR (≈ 8%)")
    arm_spread: float = Field(default=0.6, ge=0, description="sd of arms' popularity b_a")
    slope_spread: float = Field(default=0.5, ge=0, description="sd of context slopes W_a")
    interaction: float = Field(default=0.5, ge=0, description="γ of the x₀·x₁ term")
    user_skew: float = Field(default=1.0, ge=0, description="σ of log visit frequency")
    logging_beta: float = Field(default=1.5, ge=0, description="inverse temperature")
    logging_noise: float = Field(default=0.7, ge=0, description="sd of the logging model's "
                                 "error on each user-arm logit")
    logging_epsilon: float = Field(default=0.05, ge=0, le=1)
    greedy_epsilon: float = Field(default=0.1, ge=0, le=1,
                                  description="exploration of the eps-greedy policy")
    seed: int = 0


@dataclass(frozen=True)
class SyntheticSample:
    """One simulated log with everything needed to score estimators against the truth."""

    log: BanditLog
    users: IntArray
    expected_rewards: FloatArray  # (n, n_actions): true E[r | user, arm, the row's slot]
    action_dists: dict[str, FloatArray]  # each policy's (n, n_actions) distribution per row
    true_values: dict[str, float]


class SyntheticShop:
    """A simulated shop (see module doc); draw logs with :meth:`sample`."""

    def __init__(self, config: SyntheticShopConfig | None = None, **params: object) -> None:
        if config is not None and params:
            raise ValueError("give a config or keyword parameters, not both")
        self.config = config if config is not None else SyntheticShopConfig.model_validate(
            params)
        c = self.config
        rng = np.random.default_rng(c.seed)
        m, d, k = c.n_users, c.n_features, c.n_actions
        self.contexts: FloatArray = rng.normal(size=(m, d))
        weights = np.exp(c.user_skew * rng.normal(size=m))
        self.user_probs: FloatArray = weights / weights.sum()
        arm_bias = c.arm_spread * rng.normal(size=k)
        slopes = c.slope_spread * rng.normal(size=(d, k)) / np.sqrt(d)
        inter = c.interaction * rng.normal(size=k)
        x = self.contexts
        self.logits: FloatArray = (c.base_logit + arm_bias + x @ slopes
                                   + np.outer(x[:, 0] * x[:, 1], inter))
        self.attraction: FloatArray = 1.0 / (1.0 + np.exp(-self.logits))  # σ(η), (m, k)
        kappa = (np.asarray(c.examination, dtype=np.float64) if c.examination is not None
                 else 1.0 / np.sqrt(1.0 + np.arange(c.n_positions)))
        if kappa.shape != (c.n_positions,) or not ((kappa > 0) & (kappa <= 1)).all():
            raise ValueError("examination needs one value in (0, 1] per position")
        self.examination: FloatArray = kappa
        noisy = self.logits + c.logging_noise * rng.normal(size=(m, k))
        self.policies: dict[str, FloatArray] = self._policies(noisy)

    def _policies(self, noisy: FloatArray) -> dict[str, FloatArray]:
        c = self.config
        k = c.n_actions
        floor = c.logging_epsilon / k
        greedy = np.eye(k)[self.logits.argmax(axis=1)]
        return {
            "logging": (1 - c.logging_epsilon) * _softmax(c.logging_beta * noisy) + floor,
            # the same noisy model, twice as decisive: the usual next candidate
            "sharper": (1 - c.logging_epsilon) * _softmax(2 * c.logging_beta * noisy) + floor,
            # a better model: the true logits, as decisive as "sharper"
            "true-softmax": _softmax(2 * c.logging_beta * self.logits),
            "uniform": np.full_like(self.logits, 1.0 / k),
            "eps-greedy": (1 - c.greedy_epsilon) * greedy + c.greedy_epsilon / k,
        }

    def to_config(self) -> dict[str, object]:
        return self.config.model_dump()

    @classmethod
    def from_config(cls, config: dict[str, object]) -> SyntheticShop:
        return cls(SyntheticShopConfig.model_validate(config))

    @property
    def n_actions(self) -> int:
        return self.config.n_actions

    def true_value(self, policy: str | FloatArray) -> float:
        """Exact expected reward per impression of a policy ((n_users, n_actions) table)."""
        table = self.policies[policy] if isinstance(policy, str) else np.asarray(policy)
        if table.shape != self.attraction.shape:
            raise ValueError(f"policy table has shape {table.shape}; expected "
                             f"{self.attraction.shape}")
        per_user = (table * self.attraction).sum(axis=1)
        return float(self.examination.mean() * (self.user_probs @ per_user))

    def distance(self, policy: str) -> dict[str, float]:
        """How far ``policy`` is from the logging one: E[KL(π‖π_b)], max weight and the
        effective-sample-size fraction 1 / E_b[w²] (1 = on-policy)."""
        pi, pb = self.policies[policy], self.policies["logging"]
        p = self.user_probs
        kl = (pi * np.log(np.where(pi > 0, pi, 1.0) / pb)).sum(axis=1)
        second = (pi ** 2 / pb).sum(axis=1)
        return {"kl": float(p @ kl), "max_weight": float((pi / pb).max()),
                "ess_fraction": float(1.0 / (p @ second))}

    def sample(self, n: int, rng: np.random.Generator | int,
               logging: str = "logging") -> SyntheticSample:
        """``n`` impressions logged by the policy named ``logging``: a user drawn by visit
        frequency, a uniform slot, an arm from the policy, a click with the true probability."""
        if n < 1:
            raise ValueError("n must be positive")
        g = np.random.default_rng(rng) if isinstance(rng, int) else rng
        users = g.choice(self.config.n_users, size=n, p=self.user_probs).astype(np.int64)
        positions = g.integers(0, self.config.n_positions, size=n).astype(np.int64)
        pb = self.policies[logging][users]
        cdf = pb.cumsum(axis=1)
        actions = np.minimum((cdf < g.random((n, 1))).sum(axis=1),
                             self.n_actions - 1).astype(np.int64)
        q = self.attraction[users] * self.examination[positions][:, None]
        rows = np.arange(n)
        rewards = (g.random(n) < q[rows, actions]).astype(np.float64)
        log = BanditLog.from_arrays(actions, rewards, pb[rows, actions],
                                    contexts=self.contexts[users],
                                    positions=positions if self.config.n_positions > 1
                                    else None,
                                    n_actions=self.n_actions)
        return SyntheticSample(log, users, q, {name: t[users] for name, t in
                                               self.policies.items()},
                               {name: self.true_value(name) for name in self.policies})


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)
