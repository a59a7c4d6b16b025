"""Matrix-factorisation generators (ALS, BPR) wrapping the ``implicit`` library on CPU.

Only item factors are kept: a user is folded in from the history at score time by the
implicit-ALS least-squares solve against the fixed item factors (``recalculate_user``), so a new
event changes the very next answer and unknown users need no retraining.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ShelfwiseError
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores
from shelfwise.retrieval.ease import fill_empty_rows, history_matrix, popularity_prior


class FactorConfig(GeneratorConfig):
    factors: int = Field(default=64, ge=1, description="latent dimensions")
    iterations: int = Field(default=15, ge=1)
    regularization: float = Field(default=0.01, ge=0)
    seed: int = Field(default=0, description="random state of the factor initialisation")
    history_decay: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="fold-in confidence of a history item d steps back is scaled by decay**d",
    )
    num_threads: int = Field(
        default=1,
        ge=0,
        description="training threads; 0 = all cores (BPR is then not reproducible)",
    )


class ALSConfig(FactorConfig):
    alpha: float = Field(default=1.0, gt=0, description="confidence of an observed interaction")


class BPRConfig(FactorConfig):
    iterations: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    verify_negative_samples: bool = True
    fold_in_regularization: float = Field(
        default=1.0, gt=0, description="ridge λ of the least-squares user fold-in"
    )
    fold_in_alpha: float = Field(
        default=1.0, gt=0, description="confidence of a history item in the fold-in"
    )


class _FactorModel(BaseGenerator):
    """Shared fit/score plumbing; subclasses build the ``implicit`` model."""

    config: FactorConfig
    _solver: tuple[tuple[float, float], Any] | None = None  # (params, implicit ALS), lazily

    @abstractmethod
    def _make_model(self) -> Any:
        """The configured, unfitted ``implicit`` model."""

    @abstractmethod
    def _fold_in_params(self) -> tuple[float, float]:
        """(ridge λ, confidence α) of the user solve."""

    def _fit(self, data: Interactions) -> None:
        x = data.to_csr(binary=True)
        with _single_blas_thread():
            model = self._make_model()
            try:
                model.fit(x, show_progress=False)
            except Exception as exc:  # implicit raises plain ValueError/RuntimeError
                raise ShelfwiseError(f"{self.name}: implicit failed to fit: {exc}") from exc
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.popularity_ = popularity_prior(data)
        self._solver = None

    def user_factors(self, histories: Sequence[History]) -> NDArray[np.float32]:
        """Folded-in user vectors, one row per history (zeros for an empty one)."""
        _ = self.n_items_  # raises NotFittedError before fit
        return self._solve(self._history(histories))

    def _history(self, histories: Sequence[History]) -> sp.csr_matrix:
        n = self.item_factors_.shape[0]
        return history_matrix(histories, n, decay=self.config.history_decay)

    def _solve(self, h: sp.csr_matrix) -> NDArray[np.float32]:
        if h.shape[0] == 0:
            return np.zeros((0, self.item_factors_.shape[1]), np.float32)
        params = self._fold_in_params()
        if self._solver is None or self._solver[0] != params:
            self._solver = (params, _als_solver(self.item_factors_, *params))
        u = self._solver[1].recalculate_user(np.arange(h.shape[0]), h)
        return np.asarray(u, dtype=np.float32)

    def _score(self, histories: Sequence[History]) -> Scores:
        h = self._history(histories)
        scores = self._solve(h) @ self.item_factors_.T
        return fill_empty_rows(np.ascontiguousarray(scores, np.float32), h, self.popularity_)

    def _state(self) -> dict[str, NDArray[Any]]:
        return {"item_factors": self.item_factors_, "popularity": self.popularity_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.item_factors_ = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        self.popularity_ = state["popularity"].astype(np.float32)
        self._solver = None


class ALS(_FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) on the binary user-item matrix."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def _make_model(self) -> Any:
        from implicit.cpu.als import (  # type: ignore[import-untyped, unused-ignore]
            AlternatingLeastSquares,
        )

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            num_threads=c.num_threads,
            random_state=c.seed,
        )

    def _fold_in_params(self) -> tuple[float, float]:
        return self.config.regularization, self.config.alpha


class BPR(_FactorModel):
    """Bayesian Personalised Ranking (Rendle et al. 2009) matrix factorisation.

    ``implicit`` keeps the item bias as the last factor column. BPR has no closed-form user
    solve, so users are folded in by the implicit-ALS least squares against BPR's item factors
    (bias column included), with its own ``fold_in_regularization`` / ``fold_in_alpha``.
    """

    name = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def _make_model(self) -> Any:
        from implicit.cpu.bpr import (  # type: ignore[import-untyped, unused-ignore]
            BayesianPersonalizedRanking,
        )

        c = self.config
        return BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            num_threads=c.num_threads,
            verify_negative_samples=c.verify_negative_samples,
            random_state=c.seed,
        )

    def _fold_in_params(self) -> tuple[float, float]:
        return self.config.fold_in_regularization, self.config.fold_in_alpha


def _als_solver(item_factors: NDArray[np.float32], regularization: float, alpha: float) -> Any:
    """An implicit ALS model holding fixed item factors, used only for ``recalculate_user``."""
    from implicit.cpu.als import (  # type: ignore[import-untyped, unused-ignore]
        AlternatingLeastSquares,
    )

    with _single_blas_thread():
        solver = AlternatingLeastSquares(
            factors=item_factors.shape[1],
            regularization=regularization,
            alpha=alpha,
            num_threads=1,
        )
    solver.item_factors = item_factors
    return solver


def _single_blas_thread() -> Any:
    """implicit is slow (and warns) when BLAS runs its own thread pool."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

    return threadpool_limits(limits=1, user_api="blas")
