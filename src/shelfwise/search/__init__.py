"""Personalized search: hybrid lexical + dense retrieval, features, LambdaMART ranker."""

from shelfwise.search.features import FEATURES, FeatureBuilder, UserContext
from shelfwise.search.index import Candidates, SearchConfig, SearchIndex
from shelfwise.search.ranker import LTRRanker, RankerConfig

__all__ = ["FEATURES", "Candidates", "FeatureBuilder", "LTRRanker", "RankerConfig",
           "SearchConfig", "SearchIndex", "UserContext"]
