"""The HTTP service."""

from shelfwise.serving.app import create_app

__all__ = ["create_app"]
