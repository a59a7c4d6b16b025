"""Reward models q̂(x, a, position) for the direct method and doubly robust estimators.

Two simple, stated choices:

* :class:`RidgeRewardModel` — one ridge regression per arm on centred [context, position
  one-hot] plus an intercept, fitted to rewards centred on the global mean. The intercept's
  penalty is an empirical-Bayes prior strength, so an arm with little data is shrunk towards
  the overall reward rate; the slopes get a plain ridge penalty. Closed form, any real reward.
* :class:`LogisticRewardModel` — one L2 logistic regression over all rows on
  [context, arm one-hot, position one-hot, optional arm⊗context interactions, optional arm
  features], for binary rewards. Without interactions every context ranks the arms alike.

:func:`cross_fit` gives out-of-fold predictions (K-fold cross-fitting), so DR's correction term
is not computed on the rows the model was fitted to.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.policies.linear import RidgeArms

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@runtime_checkable
class RewardModel(Protocol):
    """Predicts the expected reward of every arm for each context, at that row's position."""

    def fit(self, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
            positions: ArrayLike | None = None) -> Self: ...

    def predict(self, contexts: ArrayLike, positions: ArrayLike | None = None) -> FloatArray:
        """(n, n_actions) estimated E[reward | context, arm, position]."""
        ...


def _position_onehot(positions: IntArray | None, n_positions: int, n: int) -> FloatArray:
    if n_positions <= 1:
        return np.zeros((n, 0))
    pos = np.zeros(n, dtype=np.int64) if positions is None else positions
    if pos.min() < 0 or pos.max() >= n_positions:
        raise ValueError(f"positions must be in 0..{n_positions - 1}")
    return np.asarray(np.eye(n_positions)[pos], dtype=np.float64)


def _inputs(contexts: ArrayLike, positions: ArrayLike | None) -> tuple[FloatArray,
                                                                        IntArray | None]:
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pos = None if positions is None else np.asarray(positions, dtype=np.int64).ravel()
    if pos is not None and len(pos) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} contexts but {len(pos)} positions")
    return x, pos


class RidgeRewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_actions: int = Field(ge=1)
    l2: PositiveFloat = Field(default=1.0, description="ridge penalty of the slopes "
                              "(context and position coefficients)")
    intercept_l2: PositiveFloat | Literal["auto"] = Field(
        default="auto", description="penalty of each arm's offset from the global mean; larger "
        "= more shrinkage towards it. 'auto': σ²/τ² from a method-of-moments empirical-Bayes "
        "fit of the per-arm mean rewards (σ² within-arm, τ² between-arm variance)")


def empirical_bayes_l2(actions: IntArray, rewards: FloatArray, n_actions: int) -> float:
    """Prior strength σ²/τ² of a normal-normal model of per-arm mean rewards.

    τ² = var(arm means) − mean(σ²/n_a) (method of moments, floored at 0); no spread between
    arms means full pooling (a very large penalty).
    """
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    played = counts > 0
    if played.sum() < 2:
        return 1e6
    sums = np.bincount(actions, weights=rewards, minlength=n_actions)
    means = sums[played] / counts[played]
    sigma2 = float(rewards.var()) or 1e-12
    tau2 = float(means.var(ddof=1) - np.mean(sigma2 / counts[played]))
    return float(np.clip(sigma2 / tau2, 1e-3, 1e6)) if tau2 > 0 else 1e6


class RidgeRewardModel:
    """Per-arm ridge regression shrunk towards the global mean reward (see module doc)."""

    def __init__(self, **params: Any) -> None:
        self.config = RidgeRewardConfig(**params)
        self._arms: RidgeArms | None = None
        self.intercept_l2_: float = 0.0
        self.mean_: float = 0.0
        self.center_: FloatArray = np.zeros(0)
        self.n_positions_: int = 1

    def fit(self, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
            positions: ArrayLike | None = None) -> Self:
        x, pos = _inputs(contexts, positions)
        a = np.asarray(actions, dtype=np.int64).ravel()
        r = np.asarray(rewards, dtype=np.float64).ravel()
        self.n_positions_ = 1 if pos is None else int(pos.max()) + 1
        self.mean_ = float(r.mean()) if len(r) else 0.0
        raw = np.hstack([x, _position_onehot(pos, self.n_positions_, x.shape[0])])
        self.center_ = raw.mean(axis=0)
        z = self._design(x, pos)
        lam = self.config.intercept_l2
        self.intercept_l2_ = (empirical_bayes_l2(a, r, self.config.n_actions) if lam == "auto"
                              else lam)
        penalty = np.full(z.shape[1], self.config.l2)
        penalty[-1] = self.intercept_l2_
        self._arms = RidgeArms(self.config.n_actions, z.shape[1], penalty)
        self._arms.fit(z, a, r - self.mean_)
        return self

    def _design(self, x: FloatArray, pos: IntArray | None) -> FloatArray:
        raw = np.hstack([x, _position_onehot(pos, self.n_positions_, x.shape[0])])
        return np.hstack([raw - self.center_, np.ones((x.shape[0], 1))])

    def predict(self, contexts: ArrayLike, positions: ArrayLike | None = None) -> FloatArray:
        if self._arms is None:
            raise NotFittedError("RidgeRewardModel is not fitted; call fit() first")
        x, pos = _inputs(contexts, positions)
        return self.mean_ + self._arms.means(self._design(x, pos))


class LogisticRewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_actions: int = Field(ge=1)
    C: float = Field(default=1.0, gt=0, description="inverse L2 strength (scikit-learn's C)")
    interactions: bool = Field(default=True, description="add arm⊗context features, so the "
                               "best arm can depend on the context")
    max_iter: int = Field(default=1000, ge=1)


class LogisticRewardModel:
    """Pooled L2 logistic regression for binary rewards (scikit-learn, lbfgs)."""

    def __init__(self, action_features: ArrayLike | None = None, **params: Any) -> None:
        self.config = LogisticRewardConfig(**params)
        self.action_features = (None if action_features is None
                                else np.asarray(action_features, dtype=np.float64))
        if (self.action_features is not None
                and self.action_features.shape[0] != self.config.n_actions):
            raise ConfigError("action_features needs one row per arm")
        self._model: Any = None
        self._constant: float | None = None
        self.n_positions_: int = 1

    def _design(self, x: FloatArray, arm: IntArray, pos: IntArray | None) -> FloatArray:
        k = self.config.n_actions
        arm_1h = np.eye(k)[arm]
        parts = [x, arm_1h, _position_onehot(pos, self.n_positions_, x.shape[0])]
        if self.config.interactions:
            parts.append((arm_1h[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1))
        if self.action_features is not None:
            parts.append(self.action_features[arm])
        return np.hstack(parts)

    def fit(self, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
            positions: ArrayLike | None = None) -> Self:
        from sklearn.linear_model import LogisticRegression

        x, pos = _inputs(contexts, positions)
        a = np.asarray(actions, dtype=np.int64).ravel()
        r = np.asarray(rewards, dtype=np.float64).ravel()
        if not np.isin(r, (0.0, 1.0)).all():
            raise ConfigError("LogisticRewardModel needs 0/1 rewards; use RidgeRewardModel")
        self.n_positions_ = 1 if pos is None else int(pos.max()) + 1
        if r.min() == r.max():  # one class only: nothing to separate, predict the rate
            self._constant, self._model = float(r[0]), None
            return self
        self._constant = None
        self._model = LogisticRegression(C=self.config.C, max_iter=self.config.max_iter)
        self._model.fit(self._design(x, a, pos), r)
        return self

    def predict(self, contexts: ArrayLike, positions: ArrayLike | None = None) -> FloatArray:
        if self._model is None and self._constant is None:
            raise NotFittedError("LogisticRewardModel is not fitted; call fit() first")
        x, pos = _inputs(contexts, positions)
        n, k = x.shape[0], self.config.n_actions
        if self._constant is not None:
            return np.full((n, k), self._constant)
        out = np.empty((n, k))
        for arm in range(k):
            design = self._design(x, np.full(n, arm, dtype=np.int64), pos)
            out[:, arm] = self._model.predict_proba(design)[:, 1]
        return out


def cross_fit(model: RewardModel, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
              positions: ArrayLike | None = None, n_folds: int = 3, seed: int = 0) -> FloatArray:
    """Out-of-fold (n, n_actions) predictions: each fold is predicted by a copy of ``model``
    fitted on the other folds (``n_folds=1`` fits and predicts on all rows)."""
    x, pos = _inputs(contexts, positions)
    a = np.asarray(actions, dtype=np.int64).ravel()
    r = np.asarray(rewards, dtype=np.float64).ravel()
    n = x.shape[0]
    if n_folds < 1:
        raise ConfigError("n_folds must be at least 1")
    if n_folds == 1:
        fitted = copy.deepcopy(model).fit(x, a, r, pos)
        return fitted.predict(x, pos)
    folds = np.random.default_rng(seed).permutation(n) % n_folds
    out: FloatArray | None = None
    for f in range(n_folds):
        test, train = folds == f, folds != f
        fitted = copy.deepcopy(model).fit(
            x[train], a[train], r[train], None if pos is None else pos[train])
        pred = fitted.predict(x[test], None if pos is None else pos[test])
        if out is None:
            out = np.empty((n, pred.shape[1]))
        out[test] = pred
    assert out is not None
    return out
