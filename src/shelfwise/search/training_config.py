"""When and how ``train`` learns the search ranker from logged searches
(``[train.search_ranker]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.ranking.ranker import SearchRankerConfig


class SearchTrainingConfig(BaseModel):
    """When and how the search ranker is learned from logs (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    min_searches: int = Field(default=50, ge=2,
                              description="logged searches with an outcome needed to train")
    holdout: float = Field(default=0.2, gt=0, lt=1,
                           description="newest share of labelled searches held out")
    ranker: SearchRankerConfig = Field(default_factory=lambda: SearchRankerConfig(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=10))
