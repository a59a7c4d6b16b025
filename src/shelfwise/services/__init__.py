"""Use cases behind the HTTP routes, the CLI and the Python API."""

from shelfwise.services.recommender import Recommendation, RecommendationList, Recommender

__all__ = ["Recommendation", "RecommendationList", "Recommender"]
