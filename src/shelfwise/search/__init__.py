"""Personalized search: hybrid lexical + dense retrieval and query-item features (the ranker is
:class:`shelfwise.ranking.LambdaMART` with a :class:`shelfwise.ranking.SearchRankerConfig`)."""

from shelfwise.search.features import FEATURES, FeatureBuilder, UserContext
from shelfwise.search.filters import CatalogFilter
from shelfwise.search.index import Candidates, SearchConfig, SearchIndex
from shelfwise.search.part import SearchPart

__all__ = ["FEATURES", "Candidates", "CatalogFilter", "FeatureBuilder", "SearchConfig",
           "SearchIndex", "SearchPart", "UserContext"]
