"""The heuristic blend the pipeline serves before it has enough data for a learned ranker,
and the order it gives items outside the ranker's candidate set.

Same formula as :class:`shelfwise.retrieval.blend.Blend` (its :func:`normalise_rows` of each
generator's scores, weighted sum), but over score rows the pipeline has already computed,
so each generator is scored once per request. Weights are tuned by coordinate ascent on the
pipeline's own held-out users, with generators that were fitted without those users' targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from shelfwise.bundle.tuning import WEIGHT_GRID
from shelfwise.data.interactions import History
from shelfwise.evaluation.metrics import NDCG
from shelfwise.retrieval.base import top_k
from shelfwise.retrieval.blend import normalise_rows


def blend_scores(scores: Mapping[str, NDArray[np.float32]],
                 weights: Mapping[str, float]) -> NDArray[np.float32]:
    """Weighted sum of the row-normalised scores, divided by the weight total (so in [0, 1])."""
    total = float(sum(w for a, w in weights.items() if a in scores and w > 0))
    first = next(iter(scores.values()))
    out = np.zeros(first.shape, dtype=np.float32)
    for alias, s in scores.items():
        w = float(weights.get(alias, 0.0))
        if w > 0:
            out += w * normalise_rows(s)
    if total > 0:
        out /= total
    return out


def _ndcg(normed: Mapping[str, NDArray[np.float32]], weights: Mapping[str, float],
          histories: Sequence[History], targets: Sequence[NDArray[np.int64]]) -> float:
    if not any(w > 0 for w in weights.values()):
        return -1.0
    first = next(iter(normed.values()))
    total = np.zeros(first.shape, dtype=np.float32)
    for alias, s in normed.items():
        if weights[alias] > 0:
            total += weights[alias] * s
    reco, _ = top_k(total, 10, exclude=histories)
    return NDCG(10).calc(reco, targets)


def tune_weights(scores: Mapping[str, NDArray[np.float32]], histories: Sequence[History],
                 targets: Sequence[NDArray[np.int64]], *, start: Mapping[str, float],
                 rounds: int = 2) -> tuple[dict[str, float], float]:
    """Coordinate ascent over :data:`WEIGHT_GRID` per generator (from ``start``) maximising
    NDCG@10 of the blend, seen items excluded; returns the weights and their NDCG@10."""
    normed = {a: normalise_rows(s) for a, s in scores.items()}
    weights = {a: float(start.get(a, 1.0)) for a in scores}
    best = _ndcg(normed, weights, histories, targets)
    for _ in range(rounds):
        improved = False
        for alias in scores:
            for w in (*WEIGHT_GRID, 2.0):
                if w == weights[alias]:
                    continue
                trial = {**weights, alias: float(w)}
                value = _ndcg(normed, trial, histories, targets)
                if value > best + 1e-9:
                    best, weights, improved = value, trial, True
        if not improved:
            break
    return weights, best
