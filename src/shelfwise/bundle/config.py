"""What ``train`` builds: the ``[train]`` section of the shelfwise config, stored in every
bundle's manifest and hashed into its version."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.ranking.config import PipelineConfig
from shelfwise.retrieval.spec import GeneratorSpec
from shelfwise.search.training_config import SearchTrainingConfig


def _default_generators() -> list[GeneratorSpec]:
    return [
        # popularity is its own part of the blend: no tie-break inside co-occurrence
        GeneratorSpec(name="cooccurrence", weight=1.0, params={"popularity_tiebreak": False}),
        GeneratorSpec(name="semantic", weight=0.3, required=False),
        GeneratorSpec(name="popularity", weight=0.05),
    ]


class TrainConfig(BaseModel):
    """The generators, the feed blend, the optional two-stage feed and the search ranker."""

    model_config = ConfigDict(extra="forbid")
    generators: list[GeneratorSpec] = Field(
        default_factory=_default_generators,
        description="the bundle's generators; their weighted blend is the heuristic feed and "
        "serves similar items, exploration sources and the cart")
    cold_start: str = Field(default="popularity", description="generator for empty histories")
    tune_weights: bool = Field(
        default=True,
        description="choose blend weights on a validation split (each user's second-to-last "
        "item); the configured weights are the fallback when there is too little data")
    feed: Literal["blend", "pipeline"] | None = Field(
        default=None, description="what serves the personal feed: the blend or the two-stage "
        "pipeline; default: the pipeline when [train.pipeline] is given")
    pipeline: PipelineConfig | None = Field(
        default=None,
        description="the two-stage feed (candidates from its generators, LambdaMART on top); "
        "generators it shares with `generators` (same name and params) are fitted once")
    search_ranker: SearchTrainingConfig = Field(
        default_factory=SearchTrainingConfig,
        description="learning the search ranker from logged searches at train time")

    @property
    def serves_pipeline(self) -> bool:
        return self.pipeline is not None and self.feed != "blend"

    def config_hash(self) -> str:
        raw = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    def check(self) -> None:
        keys = [g.key for g in self.generators]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"train.generators: a generator is listed twice ({keys}); give "
                              "each copy its own alias")
        if self.cold_start not in keys:
            raise ConfigError(f"train.cold_start: {self.cold_start!r} is not among the "
                              f"generators {keys}")
        if self.feed == "pipeline" and self.pipeline is None:
            raise ConfigError("train.feed = 'pipeline' needs a [train.pipeline] table")
