"""The contextual-bandit ``Policy`` protocol and the plumbing every policy shares.

A policy picks one arm among the eligible ones for a context and reports the probability with
which it picked it (its propensity), so that the log it writes can later be used for off-policy
evaluation. ``action_probabilities`` gives the whole distribution for many contexts at once,
which is what the estimators in :mod:`shelfwise.policies.ope` need.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError, NotFittedError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
#: Eligible arms: one list for every row, or a boolean (n, n_actions) mask; None = all arms.
Eligible = Sequence[int] | BoolArray | None

FORMAT = "shelfwise.policy"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Decision:
    """One choice: the arm, the probability the policy gave it, and each eligible arm's score.

    ``scores`` are what the policy ranked by (estimated reward, upper confidence bound or
    posterior mean); ``propensity`` is in (0, 1] and is what the event log should store.
    """

    action: int
    propensity: float
    scores: dict[int, float] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """A contextual bandit over ``n_actions`` arms, seeded and persistable."""

    name: ClassVar[str]

    @property
    def n_actions(self) -> int: ...

    def choose(
        self, context: ArrayLike, actions: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Decision: ...

    def update(self, context: ArrayLike, action: int, reward: float) -> None: ...

    def action_probabilities(
        self, contexts: ArrayLike, actions: Eligible = None,
        rng: np.random.Generator | None = None,
    ) -> FloatArray: ...

    def fit(self, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike) -> Self: ...

    def to_config(self) -> dict[str, Any]: ...

    def save(self, path: Path) -> None: ...


class PolicyConfig(BaseModel):
    """Hyperparameters shared by every policy; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    n_actions: int = Field(ge=1, description="number of arms, indexed 0..n_actions-1")
    n_features: int | None = Field(
        default=None, ge=0, description="context dimension; None = taken from the first context")
    seed: int = Field(default=0, description="seed of the policy's own random generator")


def eligible_mask(actions: Eligible, n_rows: int, n_actions: int) -> BoolArray:
    """Boolean (n_rows, n_actions) mask of eligible arms; every row needs at least one."""
    if actions is None:
        return np.ones((n_rows, n_actions), dtype=bool)
    if isinstance(actions, np.ndarray) and actions.dtype == np.bool_:
        if actions.shape != (n_rows, n_actions):
            raise ValueError(f"eligible mask has shape {actions.shape}, "
                             f"expected {(n_rows, n_actions)}")
        mask = actions.copy()
    else:
        arms = np.asarray(list(actions), dtype=np.int64)
        if arms.size and (arms.min() < 0 or arms.max() >= n_actions):
            raise ValueError(f"eligible arms must be in 0..{n_actions - 1}, got {arms.tolist()}")
        row = np.zeros(n_actions, dtype=bool)
        row[arms] = True
        mask = np.broadcast_to(row, (n_rows, n_actions)).copy()
    if not mask.any(axis=1).all():
        raise ValueError("every context needs at least one eligible arm")
    return mask


def greedy_probabilities(
    scores: FloatArray, mask: BoolArray, epsilon: float = 0.0, tie_tol: float = 1e-9,
) -> FloatArray:
    """Exact choice probabilities of "argmax, ties split evenly, ε spread over eligible arms".

    An arm ties with the best when its score is within ``tie_tol`` (relative to the best's
    magnitude, at least absolute ``tie_tol``), so float noise never makes a tie look like a
    strict win. Each row sums to 1 and every eligible arm gets at least ε/|eligible|.
    """
    masked = np.where(mask, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    tol = tie_tol * np.maximum(1.0, np.abs(best))
    ties = mask & (masked >= best - tol)
    greedy = np.asarray(ties / ties.sum(axis=1, keepdims=True), dtype=np.float64)
    if epsilon <= 0.0:
        return greedy
    uniform = mask / mask.sum(axis=1, keepdims=True)
    return np.asarray((1.0 - epsilon) * greedy + epsilon * uniform, dtype=np.float64)


class BasePolicy(ABC):
    """Shared code: config, context checks, sampling ``choose`` from the exact distribution,
    batch ``fit``, and save/load as ``config.json`` + ``state.npz`` (no pickle).

    Subclasses give the per-row distribution (``_probabilities``) and the learning rule
    (``_update``). Choosing samples the arm from that same distribution, so the propensity
    reported is the probability the arm was actually drawn with.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, **params: Any) -> None:
        try:
            self.config = self.Config(**params)
        except Exception as exc:
            raise ConfigError(f"bad config for policy {self.name!r}: {exc}") from exc
        self.n_features_: int | None = self.config.n_features
        self.n_updates_: int = 0
        self._rng = np.random.default_rng(self.config.seed)

    # -- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def _scores(self, x: FloatArray) -> FloatArray:
        """(n, n_actions) ranking scores for a (n, d) context matrix."""

    @abstractmethod
    def _probabilities(self, x: FloatArray, mask: BoolArray,
                       rng: np.random.Generator) -> FloatArray:
        """(n, n_actions) choice probabilities, zero off ``mask``, rows summing to 1."""

    @abstractmethod
    def _update(self, x: FloatArray, action: int, reward: float) -> None: ...

    def _fit_batch(self, x: FloatArray, actions: IntArray, rewards: FloatArray) -> None:
        for row, a, r in zip(x, actions, rewards, strict=True):
            self._update(row[None, :], int(a), float(r))

    def _reset(self) -> None:
        """Forget learned state (called by ``fit``); subclasses extend it."""
        self.n_updates_ = 0

    def _state(self) -> dict[str, NDArray[Any]]:
        return {}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        del state

    # -- public API ------------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return self.config.n_actions

    def _contexts(self, contexts: ArrayLike) -> FloatArray:
        x = np.asarray(contexts, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"contexts must be (d,) or (n, d), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("contexts contain NaN or infinite values")
        if self.n_features_ is None:
            self.n_features_ = int(x.shape[1])
        elif x.shape[1] != self.n_features_:
            raise ValueError(f"{self.name}: contexts have {x.shape[1]} features, "
                             f"the policy was set up with {self.n_features_}")
        return x

    def action_probabilities(
        self, contexts: ArrayLike, actions: Eligible = None,
        rng: np.random.Generator | None = None,
    ) -> FloatArray:
        """(n, n_actions) probability of choosing each arm for each context (0 if ineligible)."""
        x = self._contexts(contexts)
        mask = eligible_mask(actions, x.shape[0], self.n_actions)
        return self._probabilities(x, mask, self._rng if rng is None else rng)

    def choose(
        self, context: ArrayLike, actions: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Decision:
        """Pick one eligible arm for one context; ``rng`` defaults to the policy's seeded one."""
        x = self._contexts(context)
        if x.shape[0] != 1:
            raise ValueError("choose takes one context; use action_probabilities for a batch")
        gen = self._rng if rng is None else rng
        mask = eligible_mask(actions, 1, self.n_actions)
        probs = self._probabilities(x, mask, gen)[0]
        action = int(gen.choice(self.n_actions, p=probs))
        scores = self._scores(x)[0]
        return Decision(action=action, propensity=float(probs[action]),
                        scores={int(a): float(scores[a]) for a in np.flatnonzero(mask[0])})

    def update(self, context: ArrayLike, action: int, reward: float) -> None:
        """Learn from one observed (context, arm, reward)."""
        x = self._contexts(context)
        if not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action {action} is outside 0..{self.n_actions - 1}")
        if not np.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        self._update(x, int(action), float(reward))
        self.n_updates_ += 1

    def fit(self, contexts: ArrayLike, actions: ArrayLike, rewards: ArrayLike) -> Self:
        """Forget, then learn from a batch of logged (context, arm, reward); returns self.

        Plain per-arm statistics, no importance weighting: right for a uniform-random log,
        and what an online policy would have learned from the same observations.
        """
        x = self._contexts(contexts)
        a = np.asarray(actions, dtype=np.int64).ravel()
        r = np.asarray(rewards, dtype=np.float64).ravel()
        if not (len(a) == len(r) == x.shape[0]):
            raise ValueError(f"fit: {x.shape[0]} contexts, {len(a)} actions, {len(r)} rewards")
        if len(a) and (a.min() < 0 or a.max() >= self.n_actions):
            raise ValueError(f"actions must be in 0..{self.n_actions - 1}")
        if not np.isfinite(r).all():
            raise ValueError("rewards contain NaN or infinite values")
        self._reset()
        self._fit_batch(x, a, r)
        self.n_updates_ = len(a)
        return self

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump()}

    def save(self, path: Path) -> None:
        """Write ``config.json`` (hyperparameters, counters, RNG state) and ``state.npz``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **self.to_config(),
                "n_features_": self.n_features_, "n_updates_": self.n_updates_,
                "rng_state": self._rng.bit_generator.state}
        (path / "config.json").write_text(json.dumps(meta, indent=1))
        np.savez(path / "state.npz", allow_pickle=False, **self._state())

    @classmethod
    def load(cls, path: Path) -> Self:
        meta = json.loads((Path(path) / "config.json").read_text())
        if meta.pop("format", None) != FORMAT:
            raise ConfigError(f"{path} is not a saved shelfwise policy")
        meta.pop("version", None)
        meta.pop("name", None)
        n_features = meta.pop("n_features_")
        n_updates = int(meta.pop("n_updates_"))
        rng_state = meta.pop("rng_state")
        obj = cls(**meta)
        obj.n_features_ = n_features
        obj.n_updates_ = n_updates
        obj._rng.bit_generator.state = rng_state
        with np.load(Path(path) / "state.npz", allow_pickle=False) as npz:
            obj._set_state({k: npz[k] for k in npz.files})
        return obj

    def _require_features(self) -> int:
        if self.n_features_ is None:
            raise NotFittedError(f"{self.name}: context dimension unknown; pass n_features "
                                 "or give it a context first")
        return self.n_features_
