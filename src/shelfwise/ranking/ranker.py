"""The ``Ranker`` protocol and its one implementation, LightGBM LambdaMART.

The feed pipeline and search both rank grouped rows (one group = one user's candidates or one
query's items) with the same wrapper; they differ only in configuration. The feed names its
features at fit time (they depend on which generators run) and early-stops on a random share of
its own groups; search early-stops on explicitly held-out queries, sets its own label gains and
reads its columns out of the feature builder's list with :meth:`LambdaMART.columns`.
:class:`SearchRankerConfig` keeps the defaults search always had, so its results do not move.

Saved as ``lambdamart.txt`` (LightGBM text model, best iteration only) + ``ranker.json``.
:meth:`LambdaMART.load` also reads the older search format (``config.json`` with a
``features`` list) so bundles trained before the merge keep serving.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shelfwise.exceptions import ConfigError, NotFittedError, describe_validation_error

MODEL_FILE = "lambdamart.txt"
META_FILE = "ranker.json"
OLD_SEARCH_META = "config.json"  # written by the former ``search.ranker.LTRRanker``

Groups = Sequence[int] | NDArray[np.int64]
#: Held-out rows for early stopping: (features, integer grades, group sizes).
Valid = tuple[ArrayLike, ArrayLike, Groups]


@runtime_checkable
class Ranker(Protocol):
    """Scores rows of grouped candidates; trained on integer relevance grades per group.

    Rows of one group are contiguous and ``groups`` gives each group's row count in order.
    ``contributions`` explains a score per feature (last column: the bias; rows sum to
    ``predict``). ``save``/``load`` round-trip to a directory.
    """

    feature_names_: list[str]

    @property
    def fitted(self) -> bool: ...

    def fit(self, x: ArrayLike, labels: ArrayLike, groups: Groups,
            feature_names: Sequence[str], *, valid: Valid | None = None) -> Self: ...

    def predict(self, x: ArrayLike) -> NDArray[np.float64]: ...

    def contributions(self, x: ArrayLike) -> NDArray[np.float64]: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


class LambdaMARTConfig(BaseModel):
    """LambdaMART hyperparameters; the defaults are the feed's (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(default=300, ge=1, description="boosting rounds (upper bound)")
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=50, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.9, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)
    eval_at: int = Field(default=10, ge=1, description="NDCG cutoff optimised and monitored")
    truncation_level: int = Field(
        default=20, ge=1, description="pairs considered per group (raised to eval_at)")
    label_gain: list[float] | None = Field(
        default=None, description="gain of integer grade l (default 2^l - 1)")
    early_stopping_rounds: int | None = Field(
        default=30, ge=1, description="stop when held-out NDCG has not improved this long")
    valid_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="share of groups held out for early stopping when fit gets no `valid`")
    seed: int = 0
    n_jobs: int = Field(default=1, ge=1)

    def to_config(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"bad ranker config:\n{describe_validation_error(exc)}") from exc


class SearchRankerConfig(LambdaMARTConfig):
    """The search ranker's defaults, what it always used (LightGBM's sklearn defaults,
    NDCG@10, 50-round patience, early stopping only on explicitly held-out queries), so
    search results do not move with the feed's tuning."""

    min_child_samples: int = Field(default=20, ge=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    reg_lambda: float = Field(default=0.0, ge=0)
    truncation_level: int = Field(default=30, ge=1)
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    valid_fraction: float = Field(default=0.0, ge=0, lt=1)


def _arrays(x: ArrayLike, labels: ArrayLike, groups: Groups, names: Sequence[str], what: str
            ) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.int64]]:
    """Validated float32 rows, integer-valued grades and group sizes (``what`` names the set)."""
    xa = np.asarray(x, dtype=np.float32)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    g = np.asarray(groups, dtype=np.int64).reshape(-1)
    if xa.ndim != 2 or xa.shape[1] != len(names):
        raise ConfigError(f"{what} features: expected {len(names)} columns "
                          f"({', '.join(names)}), got shape {xa.shape}")
    if xa.shape[0] == 0:
        raise ConfigError(f"{what} features: no rows")
    if y.shape[0] != xa.shape[0] or int(g.sum()) != xa.shape[0]:
        raise ConfigError(f"{what} labels ({y.shape[0]}) and groups (sum {int(g.sum())}) "
                          f"must both cover the {xa.shape[0]} feature rows")
    if (g <= 0).any():
        raise ConfigError(f"{what} groups: every group needs at least one row")
    if not np.all(y == np.round(y)):  # NaN fails too
        raise ConfigError(f"{what} labels: LambdaMART needs integer grades; map graded "
                          "relevance to 0..L and give label_gain")
    if (y < 0).any():
        raise ConfigError(f"{what} labels: grades must be >= 0")
    return xa, y, g


class LambdaMART:
    """LightGBM ``lambdarank`` behind :class:`Ranker`: ``fit(X, labels, groups, names)``,
    then ``predict(X)`` with the columns in ``feature_names_`` order."""

    def __init__(self, config: LambdaMARTConfig | None = None, **params: Any) -> None:
        self.config = config if config is not None else LambdaMARTConfig.from_config(params)
        self._booster: Any = None
        self.feature_names_: list[str] = []
        self.best_iteration_: int = 0
        self.valid_ndcg_: float | None = None

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    def fit(self, x: ArrayLike, labels: ArrayLike, groups: Groups,
            feature_names: Sequence[str], *, valid: Valid | None = None) -> LambdaMART:
        """Train on integer grades (0 = irrelevant). Trees stop being added once NDCG@eval_at
        on held-out groups has not risen for ``early_stopping_rounds`` (graded labels are
        noisy; LambdaMART overfits them within a few hundred trees): the groups of ``valid``
        when given, else a random ``valid_fraction`` of the training groups."""
        names = [str(f) for f in feature_names]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"feature_names: need distinct names, got {names}")
        xa, y, g = _arrays(x, labels, groups, names, "train")
        held = None if valid is None else _arrays(*valid, names, "valid")
        c = self.config
        if held is None and c.early_stopping_rounds:
            n_valid = round(g.shape[0] * c.valid_fraction)
            if 0 < n_valid < g.shape[0]:  # hold out whole groups, as the feed always did
                is_valid = np.zeros(g.shape[0], dtype=bool)
                rng = np.random.default_rng(c.seed)
                is_valid[rng.choice(g.shape[0], size=n_valid, replace=False)] = True
                rows = np.repeat(is_valid, g)
                held = xa[rows], y[rows], g[is_valid]
                xa, y, g = xa[~rows], y[~rows], g[~is_valid]
        top = int(max(y.max(), held[1].max() if held is not None else 0))
        gain = c.label_gain or [2.0 ** k - 1 for k in range(top + 1)]
        if top >= len(gain):
            raise ConfigError(f"label_gain: grade {top} has no gain ({len(gain)} given)")
        self._booster = self._train(xa, y, g, names, held, gain)
        self.feature_names_ = names
        return self

    def _train(self, x: NDArray[np.float32], y: NDArray[np.float64], g: NDArray[np.int64],
               names: list[str], held: tuple[Any, Any, Any] | None, gain: list[float]) -> Any:
        import lightgbm as lgb

        c = self.config
        params: dict[str, Any] = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [c.eval_at],
            "lambdarank_truncation_level": max(c.eval_at, c.truncation_level),
            "learning_rate": c.learning_rate, "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_child_samples, "bagging_fraction": c.subsample,
            "bagging_freq": 1 if c.subsample < 1 else 0, "feature_fraction": c.colsample_bytree,
            "lambda_l2": c.reg_lambda, "label_gain": gain, "seed": c.seed,
            "num_threads": c.n_jobs, "verbose": -1,
        }
        callbacks: list[Any] = []
        valid_sets: list[Any] = []
        try:
            train = lgb.Dataset(x, y, group=g, feature_name=names, free_raw_data=True)
            if held is not None:
                valid_sets = [lgb.Dataset(held[0], held[1], group=held[2], reference=train)]
                if c.early_stopping_rounds:
                    callbacks.append(lgb.early_stopping(c.early_stopping_rounds, verbose=False))
            booster = lgb.train(params, train, num_boost_round=c.n_estimators,
                                valid_sets=valid_sets, callbacks=callbacks)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"LightGBM could not train the ranker: {exc}") from exc
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        score = booster.best_score.get("valid_0", {}).get(f"ndcg@{c.eval_at}")
        self.valid_ndcg_ = None if score is None else float(score)
        return booster

    def _need(self, x: ArrayLike | None = None) -> tuple[Any, NDArray[np.float32]]:
        if self._booster is None:
            raise NotFittedError("LambdaMART is not fitted: call fit() or load() first")
        xa = np.asarray(x if x is not None else np.zeros((0, len(self.feature_names_))),
                        dtype=np.float32)
        if xa.ndim != 2 or xa.shape[1] != len(self.feature_names_):
            raise ConfigError(f"features: expected {len(self.feature_names_)} columns "
                              f"({', '.join(self.feature_names_)}), got shape {xa.shape}")
        return self._booster, xa

    def predict(self, x: ArrayLike) -> NDArray[np.float64]:
        booster, xa = self._need(x)
        return np.asarray(booster.predict(xa, num_iteration=self.best_iteration_),
                          dtype=np.float64)

    def contributions(self, x: ArrayLike) -> NDArray[np.float64]:
        """Per-feature contribution to each row's score (SHAP values via LightGBM
        ``pred_contrib``); the last column is the bias. Rows sum to :meth:`predict`."""
        booster, xa = self._need(x)
        return np.asarray(booster.predict(xa, pred_contrib=True,
                                          num_iteration=self.best_iteration_), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        """Total split gain per feature."""
        booster, _ = self._need()
        gain = booster.feature_importance(importance_type="gain",
                                          iteration=self.best_iteration_)
        return {f: float(v) for f, v in zip(self.feature_names_, gain, strict=True)}

    def columns(self, names: Sequence[str]) -> list[int]:
        """Where this ranker's features sit among a feature builder's ``names``, so a ranker
        trained before features were added still reads the columns it knows."""
        if not self.fitted:
            raise NotFittedError("LambdaMART is not fitted: call fit() or load() first")
        where = {f: k for k, f in enumerate(names)}
        missing = [f for f in self.feature_names_ if f not in where]
        if missing:
            raise ConfigError(f"features: this ranker needs {missing}, which the feature "
                              "builder does not make; retrain the ranker")
        return [where[f] for f in self.feature_names_]

    def save(self, path: Path) -> None:
        booster, _ = self._need()
        path.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(path / MODEL_FILE), num_iteration=self.best_iteration_)
        (path / META_FILE).write_text(json.dumps({
            "config": self.config.to_config(), "feature_names": self.feature_names_,
            "best_iteration": self.best_iteration_, "valid_ndcg": self.valid_ndcg_}, indent=2))

    @classmethod
    def load(cls, path: Path) -> LambdaMART:
        """Read :meth:`save`'s directory, or one the former search ranker wrote."""
        import lightgbm as lgb

        path = Path(path)
        try:
            if (path / META_FILE).is_file():
                meta = json.loads((path / META_FILE).read_text())
                obj = cls(LambdaMARTConfig.from_config(meta["config"]))
                names, best = list(meta["feature_names"]), int(meta["best_iteration"])
                obj.valid_ndcg_ = meta.get("valid_ndcg")
            elif (path / OLD_SEARCH_META).is_file():  # {hyperparameters..., "features": [...]}
                old = json.loads((path / OLD_SEARCH_META).read_text())
                names, best = list(old.pop("features")), 0
                obj = cls(SearchRankerConfig.from_config(old))
            else:
                raise ConfigError(f"{path}: no {META_FILE} (nor an old {OLD_SEARCH_META}); "
                                  "not a saved ranker")
            booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        except (OSError, KeyError, ValueError, lgb.basic.LightGBMError) as exc:
            raise ConfigError(f"{path}: unreadable ranker ({exc})") from exc
        if booster.feature_name() != names:
            raise ConfigError(f"{path}: model features {booster.feature_name()} do not match "
                              f"its metadata ({names})")
        obj._booster, obj.feature_names_ = booster, names
        obj.best_iteration_ = best or int(booster.current_iteration())
        return obj
