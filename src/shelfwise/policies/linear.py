"""Per-arm (disjoint) ridge regression statistics, shared by ε-greedy, LinUCB and linear TS.

For each arm ``a`` it keeps ``A_a = λI + Σ x xᵀ`` and ``b_a = Σ r x`` over the contexts the arm
was played in; ``θ_a = A_a⁻¹ b_a`` is the ridge estimate and ``xᵀ A_a⁻¹ x`` the (unscaled)
posterior variance of ``xᵀθ_a``. Online updates keep ``A⁻¹`` current with Sherman–Morrison;
batch fits and loads recompute it exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def with_intercept(x: FloatArray, fit_intercept: bool) -> FloatArray:
    """Append a constant 1 column so each arm learns its own base rate."""
    if not fit_intercept:
        return x
    return np.hstack([x, np.ones((x.shape[0], 1))])


class RidgeArms:
    """Sufficient statistics of one ridge regression per arm over d features."""

    def __init__(self, n_actions: int, dim: int, l2: float | FloatArray) -> None:
        """``l2``: one penalty for every coefficient, or one per coefficient (length dim)."""
        self.n_actions = n_actions
        self.dim = dim
        self.penalty = np.broadcast_to(np.asarray(l2, dtype=np.float64), (dim,)).copy()
        self.A = np.broadcast_to(np.diag(self.penalty), (n_actions, dim, dim)).copy()
        self.b = np.zeros((n_actions, dim))
        self.A_inv = np.broadcast_to(np.diag(1.0 / self.penalty),
                                     (n_actions, dim, dim)).copy()
        self.theta = np.zeros((n_actions, dim))
        self.counts = np.zeros(n_actions, dtype=np.int64)

    def update(self, x: FloatArray, action: int, reward: float) -> None:
        """Add one observation (``x`` is 1-D) to arm ``action``."""
        self.A[action] += np.outer(x, x)
        self.b[action] += reward * x
        ainv_x = self.A_inv[action] @ x
        self.A_inv[action] -= np.outer(ainv_x, ainv_x) / (1.0 + x @ ainv_x)
        self.theta[action] = self.A_inv[action] @ self.b[action]
        self.counts[action] += 1

    def fit(self, x: FloatArray, actions: IntArray, rewards: FloatArray) -> None:
        """Replace the statistics with those of a whole batch (exact inverse)."""
        eye = np.diag(self.penalty)
        for a in range(self.n_actions):
            rows = actions == a
            xa = x[rows]
            self.A[a] = eye + xa.T @ xa
            self.b[a] = xa.T @ rewards[rows]
            self.counts[a] = int(rows.sum())
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``A⁻¹`` and ``θ`` from ``A`` and ``b``."""
        self.A_inv = np.asarray(np.linalg.inv(self.A), dtype=np.float64)
        self.theta = np.einsum("kij,kj->ki", self.A_inv, self.b)

    def means(self, x: FloatArray) -> FloatArray:
        """(n, n_actions) ridge predictions ``xᵀθ_a``."""
        return np.asarray(x @ self.theta.T, dtype=np.float64)

    def variances(self, x: FloatArray) -> FloatArray:
        """(n, n_actions) ``xᵀ A_a⁻¹ x`` (posterior variance up to the noise scale)."""
        out = np.einsum("nd,kde,ne->nk", x, self.A_inv, x, optimize=True)
        return np.asarray(np.maximum(out, 0.0), dtype=np.float64)

    def state(self) -> dict[str, NDArray[np.float64] | NDArray[np.int64]]:
        return {"A_": self.A, "b_": self.b, "counts_": self.counts}

    @classmethod
    def from_state(cls, state: dict[str, NDArray[np.float64] | NDArray[np.int64]],
                   l2: float | FloatArray) -> RidgeArms:
        A = np.asarray(state["A_"], dtype=np.float64)
        obj = cls(A.shape[0], A.shape[1], l2)
        obj.A = A.copy()
        obj.b = np.asarray(state["b_"], dtype=np.float64).copy()
        obj.counts = np.asarray(state["counts_"], dtype=np.int64).copy()
        obj.refresh()
        return obj
