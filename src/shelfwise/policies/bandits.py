"""The policies: uniform-random logger, ε-greedy, LinUCB and linear Thompson sampling.

Propensities: uniform, ε-greedy and LinUCB have closed forms (ties within ``tie_tol`` share
the greedy mass evenly). Thompson sampling has none, so its choice distribution is estimated
from ``n_draws`` posterior draws per context, floored at one draw (an arm never drawn counts as
drawn once) and renormalised; ``choose`` then samples the arm from that very distribution, so
the logged propensity is exactly the probability the arm was drawn with, and it is never 0.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.policies.base import (
    BasePolicy,
    BoolArray,
    FloatArray,
    IntArray,
    PolicyConfig,
    greedy_probabilities,
)
from shelfwise.policies.linear import RidgeArms, with_intercept


class UniformRandom(BasePolicy):
    """Picks every eligible arm with equal probability: the logger that makes OPE easy."""

    name: ClassVar[str] = "uniform"

    def _scores(self, x: FloatArray) -> FloatArray:
        return np.zeros((x.shape[0], self.n_actions))

    def _probabilities(self, x: FloatArray, mask: BoolArray,
                       rng: np.random.Generator) -> FloatArray:
        return np.asarray(mask / mask.sum(axis=1, keepdims=True), dtype=np.float64)

    def _update(self, x: FloatArray, action: int, reward: float) -> None:
        """Nothing to learn."""

    def _fit_batch(self, x: FloatArray, actions: IntArray, rewards: FloatArray) -> None:
        """Nothing to learn."""


class _LinearConfig(PolicyConfig):
    l2: float = Field(default=1.0, gt=0, description="ridge penalty λ of each arm's model")
    fit_intercept: bool = Field(default=True, description="give each arm its own base rate")
    tie_tol: float = Field(default=1e-9, ge=0, description="scores this close count as a tie")


class _LinearPolicy(BasePolicy):
    """Policies scoring with per-arm ridge models (state ``arms_``)."""

    config: Any

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._arms: RidgeArms | None = None

    @property
    def arms_(self) -> RidgeArms:
        if self._arms is None:
            d = self._require_features() + int(self.config.fit_intercept)
            self._arms = RidgeArms(self.n_actions, d, self.config.l2)
        return self._arms

    def _design(self, x: FloatArray) -> FloatArray:
        return with_intercept(x, self.config.fit_intercept)

    def _update(self, x: FloatArray, action: int, reward: float) -> None:
        self.arms_.update(self._design(x)[0], action, reward)

    def _fit_batch(self, x: FloatArray, actions: IntArray, rewards: FloatArray) -> None:
        self.arms_.fit(self._design(x), actions, rewards)

    def _reset(self) -> None:
        self._arms = None

    def _state(self) -> dict[str, NDArray[Any]]:
        return dict(self.arms_.state()) if self.n_features_ is not None else {}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self._arms = RidgeArms.from_state(state, self.config.l2) if state else None


class EpsilonGreedyConfig(_LinearConfig):
    epsilon: float = Field(default=0.1, ge=0, le=1, description="share of uniform exploration")
    model: Literal["mean", "linear"] = Field(
        default="linear", description="'mean': per-arm average reward, context ignored; "
        "'linear': per-arm ridge on the context")
    initial_value: float = Field(default=0.0, description="'mean' model: value of unplayed arms")


class EpsilonGreedy(_LinearPolicy):
    """Best estimated arm with probability 1-ε (ties split), a uniform eligible arm otherwise."""

    name: ClassVar[str] = "egreedy"
    Config: ClassVar[type[PolicyConfig]] = EpsilonGreedyConfig
    config: EpsilonGreedyConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.counts_ = np.zeros(self.n_actions, dtype=np.int64)
        self.sums_ = np.zeros(self.n_actions)

    def _scores(self, x: FloatArray) -> FloatArray:
        if self.config.model == "linear":
            return self.arms_.means(self._design(x))
        means = np.where(self.counts_ > 0, self.sums_ / np.maximum(self.counts_, 1),
                         self.config.initial_value)
        return np.broadcast_to(means, (x.shape[0], self.n_actions)).astype(np.float64)

    def _probabilities(self, x: FloatArray, mask: BoolArray,
                       rng: np.random.Generator) -> FloatArray:
        return greedy_probabilities(self._scores(x), mask, self.config.epsilon,
                                    self.config.tie_tol)

    def _update(self, x: FloatArray, action: int, reward: float) -> None:
        if self.config.model == "linear":
            super()._update(x, action, reward)
        self.counts_[action] += 1
        self.sums_[action] += reward

    def _fit_batch(self, x: FloatArray, actions: IntArray, rewards: FloatArray) -> None:
        if self.config.model == "linear":
            super()._fit_batch(x, actions, rewards)
        self.counts_ = np.bincount(actions, minlength=self.n_actions).astype(np.int64)
        self.sums_ = np.bincount(actions, weights=rewards,
                                 minlength=self.n_actions).astype(np.float64)

    def _reset(self) -> None:
        super()._reset()
        self.counts_ = np.zeros(self.n_actions, dtype=np.int64)
        self.sums_ = np.zeros(self.n_actions)

    def _state(self) -> dict[str, NDArray[Any]]:
        state = super()._state() if self.config.model == "linear" else {}
        return {**state, "arm_counts_": self.counts_, "arm_sums_": self.sums_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.counts_ = np.asarray(state.pop("arm_counts_"), dtype=np.int64)
        self.sums_ = np.asarray(state.pop("arm_sums_"), dtype=np.float64)
        super()._set_state(state)


class LinUCBConfig(_LinearConfig):
    alpha: float = Field(default=1.0, ge=0, description="width of the confidence bonus")
    epsilon: float = Field(default=0.0, ge=0, le=1,
                           description="optional uniform exploration, so logs keep support")


class LinUCB(_LinearPolicy):
    """Disjoint LinUCB (Li et al. 2010): argmax of ``xᵀθ_a + α·sqrt(xᵀA_a⁻¹x)``.

    Deterministic: propensity 1 for a strict winner, 1/k among k tied arms (plus the optional
    ε share spread uniformly).
    """

    name: ClassVar[str] = "linucb"
    Config: ClassVar[type[PolicyConfig]] = LinUCBConfig
    config: LinUCBConfig

    def _scores(self, x: FloatArray) -> FloatArray:
        z = self._design(x)
        return self.arms_.means(z) + self.config.alpha * np.sqrt(self.arms_.variances(z))

    def _probabilities(self, x: FloatArray, mask: BoolArray,
                       rng: np.random.Generator) -> FloatArray:
        return greedy_probabilities(self._scores(x), mask, self.config.epsilon,
                                    self.config.tie_tol)


class LinearThompsonConfig(_LinearConfig):
    noise: float = Field(default=0.5, gt=0,
                         description="posterior scale v: θ_a ~ N(A_a⁻¹b_a, v²A_a⁻¹)")
    n_draws: int = Field(default=1000, ge=1,
                         description="posterior draws per context to estimate propensities")


class LinearThompson(_LinearPolicy):
    """Linear Thompson sampling with a Bayesian ridge posterior per arm (Agrawal & Goyal 2013).

    Only the arm scores ``xᵀθ_a`` matter, and per arm they are N(xᵀμ_a, v²·xᵀA_a⁻¹x)
    independently, so the draws are of those scalars. Choice probabilities are Monte Carlo
    estimates from ``n_draws`` draws, floored at 1/n_draws before renormalising (see module doc).
    """

    name: ClassVar[str] = "thompson"
    Config: ClassVar[type[PolicyConfig]] = LinearThompsonConfig
    config: LinearThompsonConfig

    def _scores(self, x: FloatArray) -> FloatArray:
        return self.arms_.means(self._design(x))

    def _probabilities(self, x: FloatArray, mask: BoolArray,
                       rng: np.random.Generator) -> FloatArray:
        z = self._design(x)
        mean = self.arms_.means(z)
        std = self.config.noise * np.sqrt(self.arms_.variances(z))
        draws, k = self.config.n_draws, self.n_actions
        out = np.empty((x.shape[0], k))
        chunk = max(1, 2_000_000 // (draws * k))
        for s in range(0, x.shape[0], chunk):
            m, sd, msk = mean[s:s + chunk], std[s:s + chunk], mask[s:s + chunk]
            sample = m[:, None, :] + sd[:, None, :] * rng.standard_normal((len(m), draws, k))
            sample += rng.random(sample.shape) * 1e-12  # random tie-break if variance is 0
            sample[~np.broadcast_to(msk[:, None, :], sample.shape)] = -np.inf
            winners = sample.argmax(axis=2)
            counts = np.stack([(winners == a).sum(axis=1) for a in range(k)], axis=1)
            counts = np.where(msk, np.maximum(counts, 1), 0).astype(np.float64)
            out[s:s + chunk] = counts / counts.sum(axis=1, keepdims=True)
        return out


POLICIES: dict[str, type[BasePolicy]] = {
    cls.name: cls for cls in (UniformRandom, EpsilonGreedy, LinUCB, LinearThompson)
}
