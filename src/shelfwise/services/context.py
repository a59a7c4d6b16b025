"""The context vector every contextual bandit in the server sees for a user."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from shelfwise.services.recommender import Recommender

#: Dimensions of the random projection of the user's profile vector in the context.
PROFILE_DIMS = 16
CONTEXT_DIMS = 3 + PROFILE_DIMS


class UserContext:
    """``[bias, log(1+history), is new, projected profile vector]`` for a user, live.

    The profile (the semantic generator's recency-weighted mean of item vectors) is projected
    to :data:`PROFILE_DIMS` with a fixed-seed Gaussian matrix, so the context has the same
    meaning across restarts and bundles with the same encoder width.
    """

    def __init__(self, recommender: Recommender) -> None:
        self.rec = recommender
        dim = getattr(recommender.semantic, "vectors_", np.zeros((0, 384))).shape[1] or 384
        self._projection = np.random.default_rng(12345).normal(
            size=(PROFILE_DIMS, dim)) / np.sqrt(PROFILE_DIMS)

    def __call__(self, user_id: str) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The context vector and the user's history (item indices, oldest first)."""
        history = self.rec.history(user_id)
        sem = self.rec.semantic
        profile = sem.profile(history) if sem is not None else np.zeros(
            self._projection.shape[1], np.float32)
        x = np.concatenate([[1.0, np.log1p(len(history)), float(len(history) == 0)],
                            self._projection @ profile.astype(np.float64)])
        return x, history
