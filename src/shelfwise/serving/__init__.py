"""The HTTP service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shelfwise.serving.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app`` on first use: the engine imports ``serving.schemas``, and an eager
    import of the app here would import the engine back while it is half loaded."""
    if name == "create_app":
        from shelfwise.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
