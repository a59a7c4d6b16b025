"""The feed's second stage: candidate features, the LambdaMART ranker, the heuristic blend."""

from shelfwise.ranking.config import GeneratorSpec, PipelineConfig
from shelfwise.ranking.features import Candidates, FeatureSpec, ItemStats, merge_candidates
from shelfwise.ranking.heuristic import blend_scores, tune_weights
from shelfwise.ranking.ranker import LambdaMART, LambdaMARTConfig

__all__ = [
    "Candidates",
    "FeatureSpec",
    "GeneratorSpec",
    "ItemStats",
    "LambdaMART",
    "LambdaMARTConfig",
    "PipelineConfig",
    "blend_scores",
    "merge_candidates",
    "tune_weights",
]
