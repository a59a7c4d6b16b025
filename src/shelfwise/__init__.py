"""shelfwise: a self-hosted recommendation and personalized-search engine for online shops."""

__version__ = "0.1.0"

__all__ = ["__version__"]
