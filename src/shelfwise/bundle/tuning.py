"""Pick the feed blend's weights for this shop on a validation split, at train time."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shelfwise.data.interactions import History, Interactions
from shelfwise.evaluation.metrics import NDCG
from shelfwise.evaluation.splitters import LeaveLastOut
from shelfwise.retrieval.base import BaseGenerator, Scores, recommend
from shelfwise.retrieval.blend import Blend

#: Relative weights tried per generator (the grid is their product, all-zero excluded).
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
MIN_VALIDATION_USERS = 50


@dataclass(frozen=True)
class TuningResult:
    weights: dict[str, float]
    validation_ndcg10: float
    n_users: int


class Frozen:
    """A fitted generator whose ``fit`` does nothing, so many blends can share it."""

    name: ClassVar[str] = "frozen"

    def __init__(self, gen: BaseGenerator) -> None:
        self.gen = gen

    @property
    def n_items_(self) -> int:
        return self.gen.n_items_

    def fit(self, data: Interactions) -> Frozen:
        return self

    def score(self, histories: Sequence[History]) -> Scores:
        return self.gen.score(histories)

    def to_config(self) -> dict[str, Any]:
        return self.gen.to_config()

    def save(self, path: Path) -> None:
        self.gen.save(path)


def tune_blend_weights(
    data: Interactions,
    make: Mapping[str, BaseGenerator],
    *,
    max_users: int = 3000,
    seed: int = 0,
) -> TuningResult | None:
    """Fit ``make``'s (unfitted) generators on all but each user's last two items, then grid
    search blend weights by NDCG@10 on the second-to-last item of up to ``max_users`` users.
    None when there are too few users to tell weights apart."""
    split = LeaveLastOut(validation=True).split(data)
    if split.valid is None or len(split.valid.users) < MIN_VALIDATION_USERS:
        return None
    rng = np.random.default_rng(seed)
    n_valid = len(split.valid.users)
    rows = np.sort(rng.choice(n_valid, size=min(max_users, n_valid), replace=False))
    histories = [split.valid.histories[r] for r in rows]
    targets = [split.valid.targets[r] for r in rows]
    fitted = {name: Frozen(gen.fit(split.train)) for name, gen in make.items()}
    names = list(fitted)
    metric = NDCG(10)
    best: tuple[float, dict[str, float]] = (-1.0, {})
    for combo in itertools.product(WEIGHT_GRID, repeat=len(names)):
        if max(combo) < 1.0:  # weights are relative: fix the largest at 1
            continue
        blend = Blend([(n, fitted[n], w) for n, w in zip(names, combo, strict=True) if w > 0])
        reco, _ = recommend(blend, histories, 10)
        value = metric.calc(reco, targets)
        if value > best[0]:
            best = (value, dict(zip(names, combo, strict=True)))
    return TuningResult(best[1], round(best[0], 6), len(rows))
