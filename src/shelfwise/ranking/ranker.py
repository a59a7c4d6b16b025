"""LightGBM LambdaMART over candidate features: the feed's learned second stage.

Follows :class:`shelfwise.search.ranker.LTRRanker` (same hyperparameter names and label
checks) and adds what the feed needs: feature names given at fit time (they depend on which
generators the pipeline runs), early stopping on a held-out set of groups, and the best
iteration kept in the saved text model.
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

MODEL_FILE = "lambdamart.txt"
META_FILE = "ranker.json"


class LambdaMARTConfig(BaseModel):
    """LambdaMART hyperparameters (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(default=300, ge=1, description="boosting rounds (upper bound)")
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=50, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.9, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)
    eval_at: int = Field(default=10, ge=1, description="NDCG cutoff optimised and monitored")
    early_stopping_rounds: int | None = Field(
        default=30, ge=1, description="stop when held-out NDCG has not improved this long")
    valid_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="share of groups held out for early stopping")
    seed: int = 0
    n_jobs: int = Field(default=1, ge=1)


def _check(x: NDArray[np.float32], y: NDArray[Any], groups: NDArray[np.int64],
           names: Sequence[str]) -> None:
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ConfigError(f"features: expected {len(names)} columns ({', '.join(names)}), "
                          f"got shape {x.shape}")
    if y.shape[0] != x.shape[0] or int(groups.sum()) != x.shape[0]:
        raise ConfigError(f"labels ({y.shape[0]}) and groups (sum {int(groups.sum())}) must "
                          f"both cover the {x.shape[0]} feature rows")
    if (groups <= 0).any():
        raise ConfigError("groups: every group needs at least one row")
    if not np.all(y == np.round(y)) or (y < 0).any():
        raise ConfigError("labels: LambdaMART needs integer grades >= 0")


class LambdaMART:
    """``fit(X, labels, groups, feature_names)`` then ``predict(X)``; rows of one group are
    contiguous and ``groups`` gives each group's row count in order."""

    def __init__(self, config: LambdaMARTConfig | None = None, **params: Any) -> None:
        try:
            self.config = config if config is not None else LambdaMARTConfig(**params)
        except Exception as exc:
            raise ConfigError(f"bad ranker config: {exc}") from exc
        self._booster: Any = None
        self.feature_names_: list[str] = []
        self.best_iteration_: int = 0
        self.valid_ndcg_: float | None = None

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    def fit(self, x: ArrayLike, labels: ArrayLike, groups: Sequence[int] | NDArray[np.int64],
            feature_names: Sequence[str]) -> LambdaMART:
        import lightgbm as lgb

        xa = np.asarray(x, dtype=np.float32)
        y = np.asarray(labels, dtype=np.float64)
        g = np.asarray(groups, dtype=np.int64)
        names = list(feature_names)
        _check(xa, y, g, names)
        c = self.config
        params: dict[str, Any] = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [c.eval_at],
            "lambdarank_truncation_level": max(c.eval_at, 20),
            "learning_rate": c.learning_rate, "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_child_samples, "bagging_fraction": c.subsample,
            "bagging_freq": 1 if c.subsample < 1 else 0, "feature_fraction": c.colsample_bytree,
            "lambda_l2": c.reg_lambda, "seed": c.seed, "num_threads": c.n_jobs, "verbose": -1,
            "label_gain": [2.0 ** k - 1 for k in range(int(y.max(initial=0)) + 2)],
        }
        n_groups = g.shape[0]
        n_valid = round(n_groups * c.valid_fraction) if c.early_stopping_rounds else 0
        n_valid = n_valid if 0 < n_valid < n_groups else 0
        rng = np.random.default_rng(c.seed)
        is_valid = np.zeros(n_groups, dtype=bool)
        if n_valid:
            is_valid[rng.choice(n_groups, size=n_valid, replace=False)] = True
        row_valid = np.repeat(is_valid, g)
        train = lgb.Dataset(xa[~row_valid], y[~row_valid], group=g[~is_valid],
                            feature_name=names, free_raw_data=True)
        callbacks: list[Any] = []
        valid_sets: list[Any] = []
        if n_valid:
            valid_sets = [lgb.Dataset(xa[row_valid], y[row_valid], group=g[is_valid],
                                      reference=train)]
            assert c.early_stopping_rounds is not None
            callbacks.append(lgb.early_stopping(c.early_stopping_rounds, verbose=False))
        booster = lgb.train(params, train, num_boost_round=c.n_estimators,
                            valid_sets=valid_sets, callbacks=callbacks)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        if n_valid:
            score = booster.best_score.get("valid_0", {}).get(f"ndcg@{c.eval_at}")
            self.valid_ndcg_ = None if score is None else float(score)
        self._booster = booster
        self.feature_names_ = names
        return self

    def _need(self) -> Any:
        if self._booster is None:
            raise NotFittedError("LambdaMART is not fitted: call fit() or load() first")
        return self._booster

    def predict(self, x: ArrayLike) -> NDArray[np.float64]:
        booster = self._need()
        return np.asarray(booster.predict(np.asarray(x, dtype=np.float32),
                                          num_iteration=self.best_iteration_), dtype=np.float64)

    def contributions(self, x: ArrayLike) -> NDArray[np.float64]:
        """Per-feature contribution to each row's score (SHAP values via LightGBM
        ``pred_contrib``); the last column is the bias. Rows sum to :meth:`predict`."""
        booster = self._need()
        return np.asarray(booster.predict(np.asarray(x, dtype=np.float32), pred_contrib=True,
                                          num_iteration=self.best_iteration_), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        """Total split gain per feature."""
        booster = self._need()
        gain = booster.feature_importance(importance_type="gain",
                                          iteration=self.best_iteration_)
        return {f: float(v) for f, v in zip(self.feature_names_, gain, strict=True)}

    def save(self, path: Path) -> None:
        booster = self._need()
        path.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(path / MODEL_FILE), num_iteration=self.best_iteration_)
        (path / META_FILE).write_text(json.dumps({
            "config": self.config.model_dump(), "feature_names": self.feature_names_,
            "best_iteration": self.best_iteration_, "valid_ndcg": self.valid_ndcg_}, indent=2))

    @classmethod
    def load(cls, path: Path) -> LambdaMART:
        import lightgbm as lgb

        meta = json.loads((path / META_FILE).read_text())
        obj = cls(LambdaMARTConfig.model_validate(meta["config"]))
        obj._booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        obj.feature_names_ = list(meta["feature_names"])
        obj.best_iteration_ = int(meta["best_iteration"])
        obj.valid_ndcg_ = meta.get("valid_ndcg")
        if obj._booster.feature_name() != obj.feature_names_:
            raise ConfigError(f"{path}: model features {obj._booster.feature_name()} do not "
                              f"match {META_FILE} ({obj.feature_names_})")
        return obj
