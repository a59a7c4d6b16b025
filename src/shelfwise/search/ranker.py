"""LightGBM LambdaMART ranker over the search features, with a heuristic fallback.

Until a ranker is trained (too few labelled queries), the fused reciprocal-rank score is the
order; once trained, LambdaMART optimises NDCG directly over the feature rows of each query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.search.features import FEATURES


class RankerConfig(BaseModel):
    """LambdaMART hyperparameters (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    label_gain: list[float] | None = Field(
        default=None, description="gain of integer label l (default 2^l - 1)")
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    seed: int = 0
    n_jobs: int = Field(default=1, ge=1)


class LTRRanker:
    """``fit(X, labels, groups)`` on query groups, then ``predict(X)`` scores rows."""

    def __init__(self, config: RankerConfig | None = None, **params: Any) -> None:
        self.config = config if config is not None else RankerConfig(**params)
        self._booster: Any = None
        self.best_iteration = 0

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    def fit(self, x: ArrayLike, labels: ArrayLike, groups: Sequence[int], *,
            valid: tuple[ArrayLike, ArrayLike, Sequence[int]] | None = None,
            early_stopping: int = 50) -> LTRRanker:
        """``labels`` are integer grades (0 = irrelevant); ``groups`` the row count of each
        query, in row order. With ``valid`` (rows, grades, groups of held-out queries), trees
        stop being added once its NDCG@10 has not risen for ``early_stopping`` rounds, and
        :attr:`best_iteration` tells how many were kept (graded labels are noisy; LambdaMART
        overfits them within a few hundred trees)."""
        import lightgbm as lgb

        x, y = self._checked(x, labels, groups)
        held = None if valid is None else (*self._checked(*valid), list(valid[2]))
        top = int(max(y.max(), held[1].max() if held is not None else 0))
        c = self.config
        gain = c.label_gain or [2.0 ** k - 1 for k in range(top + 1)]
        model = lgb.LGBMRanker(
            objective="lambdarank", n_estimators=c.n_estimators, learning_rate=c.learning_rate,
            num_leaves=c.num_leaves, min_child_samples=c.min_child_samples,
            subsample=c.subsample, subsample_freq=1, colsample_bytree=c.colsample_bytree,
            label_gain=gain, random_state=c.seed, n_jobs=c.n_jobs, verbose=-1,
        )
        extra: dict[str, Any] = {}
        if held is not None:
            vx, vy, vg = held
            if int(vy.max()) >= len(gain):
                raise ConfigError(f"valid labels: grade {int(vy.max())} has no label_gain")
            extra = {"eval_X": (vx,), "eval_y": (vy,), "eval_group": [vg],
                     "eval_at": [10],
                     "callbacks": [lgb.early_stopping(early_stopping, verbose=False)]}
        model.fit(x, y, group=list(groups), feature_name=list(c.features), **extra)
        self._booster = model.booster_
        self.best_iteration = int(model.best_iteration_ or 0) if held is not None else (
            c.n_estimators)
        return self

    def _checked(self, x: ArrayLike, labels: ArrayLike, groups: Sequence[int]
                 ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(labels)
        if x.ndim != 2 or x.shape[1] != len(self.config.features):
            raise ConfigError(f"features: expected {len(self.config.features)} columns "
                              f"({', '.join(self.config.features)}), got shape {x.shape}")
        if y.shape[0] != x.shape[0] or int(np.sum(groups)) != x.shape[0]:
            raise ConfigError(f"labels ({y.shape[0]}) and groups (sum {int(np.sum(groups))}) "
                              f"must both cover the {x.shape[0]} feature rows")
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise ConfigError("labels: LambdaMART needs integer grades; map graded "
                              "relevance to 0..L and give label_gain")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise ConfigError("labels: grades must be >= 0")
        return x, y

    def columns(self, names: Sequence[str] = FEATURES) -> list[int]:
        """Where this ranker's features sit among ``names`` (a ranker trained before features
        were added still reads the columns it knows)."""
        missing = [f for f in self.config.features if f not in names]
        if missing:
            raise ConfigError(f"features: this ranker needs {missing}, which the feature "
                              "builder does not make; retrain the search ranker")
        return [list(names).index(f) for f in self.config.features]

    def predict(self, x: ArrayLike) -> NDArray[np.float64]:
        if self._booster is None:
            raise NotFittedError("LTRRanker is not fitted: call fit() or load() first")
        return np.asarray(self._booster.predict(np.asarray(x, dtype=np.float32)),
                          dtype=np.float64)

    def contributions(self, x: ArrayLike) -> NDArray[np.float64]:
        """Per-feature contribution of each row's score (last column: the bias)."""
        if self._booster is None:
            raise NotFittedError("LTRRanker is not fitted")
        return np.asarray(self._booster.predict(np.asarray(x, dtype=np.float32),
                                                pred_contrib=True), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        if self._booster is None:
            raise NotFittedError("LTRRanker is not fitted")
        gain = self._booster.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(self.config.features, gain, strict=True)}

    def save(self, path: Path) -> None:
        if self._booster is None:
            raise NotFittedError("LTRRanker is not fitted")
        path.mkdir(parents=True, exist_ok=True)
        self._booster.save_model(str(path / "lambdamart.txt"))
        (path / "config.json").write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> LTRRanker:
        import lightgbm as lgb

        config = RankerConfig.model_validate(json.loads((path / "config.json").read_text()))
        obj = cls(config)
        obj._booster = lgb.Booster(model_file=str(path / "lambdamart.txt"))
        obj.columns()
        return obj
