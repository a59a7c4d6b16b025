"""The feed's second stage: candidate features and the LambdaMART ranker."""

from shelfwise.ranking.config import GeneratorSpec, PipelineConfig
from shelfwise.ranking.features import Candidates, FeatureSpec, ItemStats, merge_candidates
from shelfwise.ranking.ranker import LambdaMART, LambdaMARTConfig, Ranker, SearchRankerConfig

__all__ = [
    "Candidates",
    "FeatureSpec",
    "GeneratorSpec",
    "ItemStats",
    "LambdaMART",
    "LambdaMARTConfig",
    "PipelineConfig",
    "Ranker",
    "SearchRankerConfig",
    "merge_candidates",
]
