"""Popularity: the cold-start baseline, time-decayed where timestamps are real."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores


class PopularityConfig(GeneratorConfig):
    half_life_days: float | None = Field(
        default=30.0, gt=0, description="exponential decay of old interactions; None = all-time"
    )
    weighted: bool = Field(
        default=False, description="sum event-type weights instead of counting interactions"
    )


class Popularity(BaseGenerator):
    """Scores each item by its (decayed) interaction count; the same list for every user.

    Decay applies only when the data has real timestamps (``Interactions.has_time``); for
    order-only datasets it is the plain count, as PopRec in the literature.
    """

    name = "popularity"
    Config = PopularityConfig
    config: PopularityConfig

    def _fit(self, data: Interactions) -> None:
        w = data.weight.astype(np.float64) if self.config.weighted else np.ones(len(data))
        if self.config.half_life_days is not None and data.has_time and len(data):
            age_days = (data.timestamp.max() - data.timestamp) / 86_400.0
            w = w * np.exp2(-age_days / self.config.half_life_days)
        counts = np.bincount(data.item_idx, weights=w, minlength=data.n_items)
        self.scores_ = counts.astype(np.float32)

    def _score(self, histories: Sequence[History]) -> Scores:
        return np.broadcast_to(self.scores_, (len(histories), self.scores_.shape[0])).copy()

    def _state(self) -> dict[str, NDArray[Any]]:
        return {"scores": self.scores_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.scores_ = state["scores"].astype(np.float32)
